#!/usr/bin/env python3
"""atheris harness for steps inputs (fuzz/steps.py): scenario documents of real-machine actions, simulated by the
model and checked like the model target (same signatures, MHP_FUZZ_PROFILE / _VARIANT / _DIFF / _IGNORE / _HELD). Every
input is a scenario TOML file (``mhp simulate`` runs it, ``mhp lab`` runs it on a real kernel) and expressible, so
every finding can be confirmed (``mhp fuzz --target steps --confirm``).

    fuzz/steps_fuzzer.py -rss_limit_mb=2048 -timeout=25 corpus/scenarios
"""

from __future__ import annotations

import atheris

# The model, its oracles and the check are instrumented by the model harness's import (its state features too).
from fuzz.model_fuzzer import HOLD, MODE, FuzzHit, feature

# The simulation and the drivers it runs are instrumented too (their paths are coverage); the mutator and the
# translator that checks its mutants run outside TestOneInput and are imported after, uninstrumented.
with atheris.instrument_imports():
    import replay.model.drivers
    import replay.simulate  # noqa: F401

from fuzz.harness import run
from fuzz.steps import custom_crossover, custom_mutator
from fuzz.steps_check import check_steps


def TestOneInput(data: bytes) -> None:  # libFuzzer's name
    hit = check_steps(data, MODE, HOLD.current(), feature)
    if hit is not None and not HOLD.hold(data, hit):
        raise FuzzHit(f"{hit.signature} at event {hit.index}: {hit.message}")


def CustomMutator(data: bytes, max_size: int, seed: int) -> bytes:  # libFuzzer's name
    return custom_mutator(data, max_size, seed)


def CustomCrossOver(data1: bytes, data2: bytes, max_out: int, seed: int) -> bytes:  # libFuzzer's name
    return custom_crossover(data1, data2, max_out, seed)


if __name__ == "__main__":
    run(TestOneInput, custom_mutator=CustomMutator, custom_crossover=CustomCrossOver)
