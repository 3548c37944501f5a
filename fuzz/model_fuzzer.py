#!/usr/bin/env python3
"""atheris harness for the model (OSS-Fuzz conventions; libFuzzer flags pass through).

Every input is a .mhpt trace, so every crash artifact replays with ``mhp replay``. Valid traces
run through the model with every oracle (and, in differential mode, beside a second model); a
hit raises FuzzHit carrying its signature. Environment:

- ``MHP_FUZZ_PROFILE`` (6.1), ``MHP_FUZZ_VARIANT`` (a seeded variant), ``MHP_FUZZ_DIFF``
  (``6.12`` or ``ref``), ``MHP_FUZZ_IGNORE`` (a file of known signatures, one per line),
  ``MHP_FUZZ_HELD`` (where a known signature's hit on a new path is held instead: fuzz/hold.py).

    fuzz/model_fuzzer.py -fork=2 -ignore_crashes=1 -max_total_time=60 corpus/seeds
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import atheris

# Coverage is wanted where verdicts come from: the model, its oracles and the check. The trace
# decoder (trace_format_fuzzer.py covers it) is imported first and the mutator (it runs outside
# TestOneInput) after, both uninstrumented: instrumented, they cost a fifth of the executions.
import traces.reader  # noqa: F401  (and the codec, header and event table it imports)

with atheris.instrument_imports():
    from fuzz.check import STATE_FEATURES, Mode, check_input

from fuzz.hold import Holder
from fuzz.mutator import custom_crossover, custom_mutator


class FuzzHit(Exception):
    """A finding, a difference between models, or a model crash."""


def _feature_leaves() -> tuple[Callable[[], int], ...]:
    """One function per model-state feature (fuzz.check.state_feature), each instrumented by
    atheris: calling a new one is new coverage, so libFuzzer keeps inputs that reach new model
    states. An index, not a chain of comparisons (atheris traces each comparison, ~1 us)."""
    env: dict[str, Any] = {}
    exec("\n".join(f"def leaf{i}():\n    return {i}" for i in range(STATE_FEATURES)), env)  # generated
    return tuple(atheris.instrument_func(env[f"leaf{i}"]) for i in range(STATE_FEATURES))


LEAVES = _feature_leaves()


def feature(k: int) -> int:
    """Reward the model state numbered ``k``."""
    return LEAVES[k]()


MODE = Mode(os.environ.get("MHP_FUZZ_PROFILE", "6.1"), os.environ.get("MHP_FUZZ_VARIANT") or None, os.environ.get("MHP_FUZZ_DIFF") or None)
HOLD = Holder.from_env()


def TestOneInput(data: bytes) -> None:  # libFuzzer's name
    hit = check_input(data, MODE, HOLD.current(), feature)
    if hit is not None and not HOLD.hold(data, hit):
        raise FuzzHit(f"{hit.signature} at event {hit.index}: {hit.message}")


def CustomMutator(data: bytes, max_size: int, seed: int) -> bytes:  # libFuzzer's name
    return custom_mutator(data, max_size, seed, atheris.Mutate)


def CustomCrossOver(data1: bytes, data2: bytes, max_out: int, seed: int) -> bytes:  # libFuzzer's name
    return custom_crossover(data1, data2, max_out, seed)


def main() -> None:
    from fuzz.surfaces import die_with_campaign

    die_with_campaign()  # a kill -9 of mhp fuzz takes this process and its fork-mode workers along
    atheris.Setup(sys.argv, TestOneInput, custom_mutator=CustomMutator, custom_crossover=CustomCrossOver)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
