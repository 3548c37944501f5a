#!/usr/bin/env python3
"""Benchmark of the steps fuzz target (not a test; prints figures): python tests/bench/bench_steps.py.

Mutants per second of fuzz/steps.py mutate (each one checked expressible by the translator) and how many
candidates the translator turns down; checks per second (fuzz/steps_check.py check_doc: simulation plus
check_events); libFuzzer's exec/s on the instrumented harness from the corpus scenarios; mutants until the seeded
boundary variant M4 shows against the reference model (the harness's loop without libFuzzer, three seeds).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fuzz import steps
from fuzz.campaign import DEFAULT_IGNORE, HARNESSES, ROOT
from fuzz.check import Mode
from fuzz.steps_check import check_doc
from fuzz.steps_triage import prepare_step_seeds

SCENARIOS = ROOT / "corpus" / "scenarios"


def seeds() -> list[dict[str, Any]]:
    return [d for p in sorted(SCENARIOS.glob("*.toml")) if (d := steps.decode(p.read_bytes())) is not None]


def mutate_rate(n: int = 300) -> tuple[float, float, list[dict[str, Any]]]:
    """Mutants per second, the share of candidates the translator rejected, and the mutants."""
    rng = random.Random(1)
    pool = seeds()
    checked = rejected = 0
    real = steps.obstacle

    def counting(doc: dict[str, Any], kernel: str = "6.1") -> Any:
        nonlocal checked, rejected
        o = real(doc, kernel)
        checked += 1
        rejected += o is not None
        return o

    steps.obstacle = counting  # type: ignore[assignment]  (counted, not changed)
    try:
        t0 = time.perf_counter()
        out = []
        for _ in range(n):
            m = steps.mutate(rng.choice(pool), rng)
            pool.append(m)
            out.append(m)
        rate = n / (time.perf_counter() - t0)
    finally:
        steps.obstacle = real  # type: ignore[assignment]
    return rate, rejected / max(checked, 1), out


def check_rate(docs: list[dict[str, Any]]) -> float:
    steps._simulations.clear()  # the harness's first simulation of a mutant is the mutator's: measure it cold
    t0 = time.perf_counter()
    for d in docs:
        check_doc(d, Mode(), frozenset(DEFAULT_IGNORE))
    return len(docs) / (time.perf_counter() - t0)


def atheris_rate(runs: int = 400) -> float:
    """libFuzzer's stat::average_exec_per_sec on fuzz/steps_fuzzer.py (reference model, the ratio findings ignored)."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        corpus = prepare_step_seeds(t / "s")
        (t / "ignore").write_text("\n".join({"AM-RATIO:state", "AM-RATIO-NODE:state", "AM-STATIC-MIXED:Normal", *DEFAULT_IGNORE}))
        (t / "c").mkdir()
        cmd = [sys.executable, str(HARNESSES["steps"]), f"-runs={runs}", "-seed=1", "-print_final_stats=1", f"-artifact_prefix={t}/", str(t / "c"), str(corpus)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MHP_FUZZ_IGNORE": str(t / "ignore")}, check=False)
        rate = re.search(r"^stat::average_exec_per_sec:\s*(\d+)", proc.stderr, re.M)
        if rate is None:
            raise RuntimeError(f"the steps harness did not finish: {proc.stderr[-2000:]}")
        return float(rate.group(1))


def mutants_to_find(variant: str, seed: int, budget: int = 1000) -> int | None:
    rng = random.Random(seed)
    pool = seeds()
    mode = Mode("6.1", variant, "ref")
    for k in range(budget):
        m = steps.mutate(rng.choice(pool), rng)
        if check_doc(m, mode) is not None:
            return k + 1
        pool.append(m)
    return None


def main() -> int:
    rate, rejected, docs = mutate_rate()
    print(f"mutate (expressibility checked): {rate:.0f} mutants/s, {rejected:.1%} of candidates rejected by the translator")
    print(f"check_doc (simulation + check_events): {check_rate(docs):.0f} checks/s")
    print(f"libFuzzer on the instrumented harness: {atheris_rate():.0f} exec/s")
    for seed in (1, 2, 3):
        n = mutants_to_find("M4", seed)
        print(f"M4 against the reference, seed {seed}: {'not found in 1000' if n is None else f'{n} mutants'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
