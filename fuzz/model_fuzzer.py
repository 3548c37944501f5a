#!/usr/bin/env python3
"""atheris harness for the model (OSS-Fuzz conventions; libFuzzer flags pass through).

Every input is a .mhpt trace, so every crash artifact replays with ``mhp replay``. Valid traces
run through the model with every oracle (and, in differential mode, beside a second model); a
hit raises FuzzHit carrying its signature. Environment:

- ``MHP_FUZZ_PROFILE`` (6.1), ``MHP_FUZZ_VARIANT`` (a seeded variant), ``MHP_FUZZ_DIFF``
  (``6.12`` or ``ref``), ``MHP_FUZZ_IGNORE`` (a file of known signatures, one per line).

    fuzz/model_fuzzer.py -fork=2 -ignore_crashes=1 -max_total_time=60 corpus/seeds
"""

from __future__ import annotations

import os
import sys

import atheris

# Coverage is wanted where verdicts come from: the model, its oracles and the check. The trace
# decoder (trace_format_fuzzer.py covers it) is imported first and the mutator (it runs outside
# TestOneInput) after, both uninstrumented: instrumented, they cost a fifth of the executions.
import traces.reader  # noqa: F401  (and the codec, header and event table it imports)

with atheris.instrument_imports():
    from fuzz.check import Mode, check_input

from fuzz.mutator import custom_crossover, custom_mutator


class FuzzHit(Exception):
    """A finding, a difference between models, or a model crash."""


def _ignored() -> frozenset[str]:
    path = os.environ.get("MHP_FUZZ_IGNORE")
    if not path or not os.path.exists(path):
        return frozenset()
    with open(path) as f:
        return frozenset(line.strip() for line in f if line.strip() and not line.startswith("#"))


def _feature_function() -> object:
    """One branch per model-state feature (fuzz.check.state_feature), instrumented by atheris so
    that reaching a new model state counts as new coverage for libFuzzer."""
    lines = ["def feature(k):"] + [f"    {'if' if i == 0 else 'elif'} k == {i}:\n        return {i}" for i in range(720)]
    env: dict[str, object] = {}
    exec("\n".join(lines), env)  # generated: 720 distinct branches
    return atheris.instrument_func(env["feature"])


FEATURE = _feature_function()
MODE = Mode(os.environ.get("MHP_FUZZ_PROFILE", "6.1"), os.environ.get("MHP_FUZZ_VARIANT") or None, os.environ.get("MHP_FUZZ_DIFF") or None)
IGNORE = _ignored()


def TestOneInput(data: bytes) -> None:  # libFuzzer's name
    hit = check_input(data, MODE, IGNORE, FEATURE)  # type: ignore[arg-type]
    if hit is not None:
        raise FuzzHit(f"{hit.signature} at event {hit.index}: {hit.message}")


def CustomMutator(data: bytes, max_size: int, seed: int) -> bytes:  # libFuzzer's name
    return custom_mutator(data, max_size, seed, atheris.Mutate)


def CustomCrossOver(data1: bytes, data2: bytes, max_out: int, seed: int) -> bytes:  # libFuzzer's name
    return custom_crossover(data1, data2, max_out, seed)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput, custom_mutator=CustomMutator, custom_crossover=CustomCrossOver)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
