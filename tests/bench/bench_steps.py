#!/usr/bin/env python3
"""Benchmark of the steps fuzz target (not a test; prints figures): python tests/bench/bench_steps.py.

Mutants per second of fuzz/steps.py mutate (each one checked expressible by the translator) and how many
candidates the translator turns down; checks per second (fuzz/steps_check.py check_doc: simulation plus
check_events); inputs per second of a short campaign on the instrumented harness; mutants until the seeded
boundary variant M4 shows against the reference model (the harness's loop without libFuzzer, three seeds).
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fuzz import steps
from fuzz.campaign import DEFAULT_IGNORE, ROOT, run
from fuzz.check import Mode
from fuzz.steps_check import check_doc

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


def campaign_rate(runs: int = 400) -> tuple[float, int]:
    """``mhp fuzz --target steps --runs N`` on the reference model (the regressions' known signatures ignored): inputs
    per second, libFuzzer's start and the closing merge included, and the signatures it found."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        shutil.copytree(ROOT / "corpus" / "regressions", t / "r")
        s = run("steps", runs=runs, corpus=t / "c", artifacts=t / "a", regressions=t / "r", echo=False, minimize_seconds=5)
        return s.exec_per_s, len(s.signatures)


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
    rate, found = campaign_rate()
    print(f"mhp fuzz --target steps --runs 400 (instrumented harness, start and merge included): {rate:.1f} inputs/s, {found} new signature(s)")
    for seed in (1, 2, 3):
        n = mutants_to_find("M4", seed)
        print(f"M4 against the reference, seed {seed}: {'not found in 1000' if n is None else f'{n} mutants'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
