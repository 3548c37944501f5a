"""Hypothesis strategies derived from the event table (every event type, every field's full range)."""

from __future__ import annotations

import enum
from typing import Any

from hypothesis import strategies as st

from traces.codec import Record
from traces.events import BOOL, EVENT_TYPES, STR, ZONES, FieldSpec, ZoneType, fields_of, out_of_bounds

REAL_ZONES = [z for z in ZoneType if z is not ZoneType.NONE]


def field_values(f: FieldSpec) -> st.SearchStrategy[Any]:
    if f.since:  # an appended field: also not recorded
        return st.none() | field_values(FieldSpec(f.name, f.wire, f.py, f.res))
    if f.wire is STR:
        return st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
    if f.wire is ZONES:
        return st.lists(st.sampled_from(REAL_ZONES), max_size=4).map(tuple)
    if f.wire is BOOL:
        return st.booleans()
    if isinstance(f.py, type) and issubclass(f.py, enum.IntFlag):
        members = [m for m in f.py if m.value]
        return st.lists(st.sampled_from(members), unique=True).map(lambda ms: f.py(sum(int(m) for m in ms)))
    if isinstance(f.py, type) and issubclass(f.py, enum.Enum):
        return st.sampled_from(list(f.py))
    return st.integers(f.wire.lo, f.wire.hi) | st.sampled_from([f.wire.lo, f.wire.hi, 0, 1])


def events_of(cls: type) -> st.SearchStrategy[Any]:
    """Events of ``cls`` within the bounds of a real machine (traces.events.BOUNDS)."""
    return st.tuples(*(field_values(f) for f in fields_of(cls))).map(cls._make).filter(lambda ev: out_of_bounds(ev) is None)


events = st.sampled_from(list(EVENT_TYPES.values())).flatmap(events_of)
records = st.builds(lambda ts, fl, ev: (ts, fl, ev), st.integers(0, 2**64 - 1), st.integers(0, 255), events)


def numbered(items: list[tuple[int, int, Any]]) -> list[Record]:
    return [Record(i, ts, fl, ev) for i, (ts, fl, ev) in enumerate(items)]
