"""The body of every surface harness (fuzz/*_fuzzer.py): die with the parent, run libFuzzer."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import atheris

from fuzz.surfaces import die_with_campaign


def run(check: Callable[[bytes], None], **mutators: Any) -> None:
    """libFuzzer with ``check`` as LLVMFuzzerTestOneInput (flags from argv; ``mutators``: atheris'
    custom_mutator / custom_crossover)."""
    die_with_campaign()
    atheris.Setup(sys.argv, check, **mutators)
    atheris.Fuzz()


def structure_or_bytes(data: bytes, max_size: int, seed: int) -> bytes:
    """Half the mutations structure-aware (events mutated as events: deep model states), half
    byte-level (damage the structure-aware mutator never makes)."""
    from fuzz.mutator import custom_mutator

    if seed & 1:
        return custom_mutator(data, max_size, seed, atheris.Mutate)
    out: bytes = atheris.Mutate(data, max_size)
    return out
