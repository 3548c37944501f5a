#!/usr/bin/env python3
"""Benchmark of the fuzzer (not a test; prints figures): mhp bench fuzz.

For each seeded variant, fuzz it differentially against the reference model (plus oracles) from the
seed corpus until it is exposed, and report the time to find it. Also: executions per second of
the harness check on 32-event inputs, and the time to minimise a 1,000-event failing trace.
Targets (issue 6): every variant found, median <= 30 s, max <= 300 s; >= 10k exec/s; minimise a
1,000-event trace to 1-minimal within 10 s.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fuzz.campaign import DEFAULT_IGNORE, HARNESSES, ROOT, SEED_EVENTS, known_signatures, prepare_seeds, run
from fuzz.check import Mode, check_events, check_input, decode
from fuzz.minimize import Minimizer
from fuzz.mutator import encode, mutate_events
from replay.model.variants import NEEDS_PROFILE, VARIANTS


def exec_rate(seconds: float = 5.0) -> float:
    """check_input() on 32-event inputs (the harness body, uninstrumented): 1,000 distinct mutants
    of the seeds, more than decode remembers, so every input is decoded."""
    seeds = sorted((ROOT / "corpus" / "seeds").glob("*.mhpt"))
    rng = random.Random(1)
    firsts = [(decode(s.read_bytes()) or [])[:32] for s in seeds]
    inputs = list(dict.fromkeys(encode(mutate_events(firsts[i % len(firsts)], rng)[:32]) for i in range(1100)))[:1000]
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        check_input(inputs[n % len(inputs)], Mode(), frozenset({"AM-RATIO:state", "AM-RATIO-NODE:state"}))
        n += 1
    return n / (time.perf_counter() - t0)


def atheris_rate(runs: int = 3000) -> float:
    """libFuzzer's exec/s on the model harness as campaigns run it (atheris-instrumented, with the
    custom mutator), from the seeds trimmed to 32 events; known findings are ignored."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        seeds = prepare_seeds([ROOT / "corpus" / "seeds"], t / "s", 32)
        for whole in [p for p in seeds.iterdir() if ".first" not in p.name]:
            whole.unlink()
        (t / "ignore").write_text("\n".join(known_signatures(ROOT / "corpus" / "regressions") | set(DEFAULT_IGNORE)))
        (t / "c").mkdir()
        cmd = [sys.executable, str(HARNESSES["model"]), f"-runs={runs}", "-seed=1", "-print_final_stats=1", f"-artifact_prefix={t}/", str(t / "c"), str(seeds)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MHP_FUZZ_IGNORE": str(t / "ignore")}, check=False)
        rate = re.search(r"^stat::average_exec_per_sec:\s*(\d+)", proc.stderr, re.M)
        if rate is None:
            raise RuntimeError(f"the model harness did not finish: {proc.stderr[-2000:]}")
        return float(rate.group(1))


def campaign_rate(seconds: int) -> tuple[float, int]:
    """(exec/s, execs) of a reference-model campaign as ``mhp fuzz --time SECONDS`` runs it (fresh corpus, the
    repository's regressions known)."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        shutil.copytree(ROOT / "corpus" / "regressions", t / "r")
        summary = run("model", seconds=seconds, corpus=t / "c", artifacts=t / "a", regressions=t / "r", mode=Mode(), echo=False, minimize_seconds=5)
        return summary.exec_per_s, summary.execs


def minimise_time() -> tuple[float, int, bool]:
    """Minimise a 1,000-event trace whose M7 difference shows at the end."""
    if str(ROOT) not in sys.path:  # run as a script: the tests package lives in the checkout
        sys.path.insert(0, str(ROOT))
    from tests.test_fuzz import long_failing_trace

    events = long_failing_trace()
    mode = Mode("6.1", "M7", "ref")
    hit = check_events(events, mode)
    assert hit is not None
    t0 = time.perf_counter()
    res = Minimizer(mode, hit.signature, max_seconds=300).run(events)
    return time.perf_counter() - t0, len(res.events), res.one_minimal


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-time", type=int, default=300, help="seconds per variant")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--seed-events", type=int, default=SEED_EVENTS, help="seeds trimmed to the boot snapshot + N events (0: whole)")
    ap.add_argument("--campaign-time", type=int, default=60, help="seconds of the reference-model campaign timed for exec/s (0: skip)")
    ap.add_argument("--repeat", type=int, default=1, help="campaigns per variant (median and max over all of them)")
    args = ap.parse_args()
    if args.campaign_time:
        rate, execs = campaign_rate(args.campaign_time)
        print(f"mhp fuzz --time {args.campaign_time} on the reference model: {rate:,.0f} exec/s ({execs:,} execs; target >= 1,500)", flush=True)
    print(f"harness check on 32-event inputs: {exec_rate():,.0f} exec/s (target >= 10,000)")
    print(f"libFuzzer on the atheris-instrumented harness, 32-event seeds: {atheris_rate():,.0f} exec/s")
    secs, n, minimal = minimise_time()
    print(f"minimising a 1,000-event failing trace: {secs:.1f} s to {n} events, {'1-minimal' if minimal else 'NOT 1-minimal'} (target <= 10 s)")
    found: dict[str, float | None] = {}
    all_times: list[float] = []
    for name in [v for v in args.variants for _ in range(args.repeat)]:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            # known real-kernel findings are ignored; variant regressions must not hide the variant
            shutil.copytree(ROOT / "corpus" / "regressions", t / "r", ignore=shutil.ignore_patterns("DIFF_*"))
            summary = run(
                "model", seconds=args.max_time, corpus=t / "c", artifacts=t / "a", regressions=t / "r",
                mode=Mode(NEEDS_PROFILE.get(name, "6.1"), name, "ref"), stop_on_first=True, echo=False, minimize_seconds=5, seed_events=args.seed_events,
            )  # fmt: skip
            hits = [v["first_hit_s"] for s, v in summary.signatures.items() if s.startswith("DIFF:")]
            found[name] = min(hits) if hits else None
            all_times += [found[name]] if found[name] is not None else []
        shown = f"{found[name]:.1f} s" if found[name] is not None else f"not found in {args.max_time} s"
        print(f"variant {name:<4} {shown:>24}  ({summary.execs} execs, {summary.exec_per_s:.0f}/s under atheris)", flush=True)
    if all_times:
        runs = len(args.variants) * args.repeat
        median, worst = statistics.median(all_times), max(all_times)
        print(f"found in {len(all_times)}/{runs} campaigns; median {median:.1f} s, max {worst:.1f} s (targets: all, <= 0.5 s, <= 10 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
