"""One verdict per steps input (fuzz/steps.py): the document's simulated trace through fuzz/check.py check_events.

The simulation (replay/simulate.py, the reference model of the mode's profile) turns the real-machine actions into
the trace a recorder would write; check_events then runs the model under test (a variant, a second model in
differential mode) with every oracle over it, so a steps hit has the signatures of the model target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fuzz.check import Hit, Mode, check_events
from fuzz.steps import SimulationCrash, decode, simulated
from traces.errors import InputError


def doc_events(doc: dict[str, Any], mode: Mode) -> list[Any] | None:
    """The simulated trace of a document on the mode's profile (None: the simulation rejects it); where the model
    crashes, the trace up to the event it crashed on."""
    try:
        return simulated(doc, mode.profile)
    except InputError:
        return None
    except SimulationCrash as e:
        return e.events


def check_doc(doc: dict[str, Any], mode: Mode, ignore: frozenset[str] = frozenset(), feedback: Callable[[int], object] | None = None) -> Hit | None:
    """The first hit of the document's simulated trace (check_events); its index is the trace's event index (a
    crash of the model while simulating shows as check_events' CRASH hit on the event it crashed on)."""
    events = doc_events(doc, mode)
    return None if events is None else check_events(events, mode, ignore, feedback)


def check_steps(data: bytes, mode: Mode, ignore: frozenset[str] = frozenset(), feedback: Callable[[int], object] | None = None) -> Hit | None:
    """check_doc on raw bytes (None for bytes that are no scenario)."""
    doc = decode(data)
    return None if doc is None else check_doc(doc, mode, ignore, feedback)
