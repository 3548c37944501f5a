"""Two models side by side (profiles or variants): the first events where they behave differently."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from replay.model.kernel import Kernel
from replay.model.outcome import Outcome


@dataclass(frozen=True, slots=True)
class Difference:
    """One event after which the two models disagree."""

    index: int
    event: Any
    what: str  # rc | decision | changes
    a: Any
    b: Any

    @property
    def signature(self) -> str:
        return f"DIFF:{type(self.event).__name__}:{self.what}"

    def describe(self) -> str:
        """The difference in words: the event, the aspect, then the first model's and the second's."""
        return f"{type(self.event).__name__}: {self.what} {_text(self.what, self.a)} vs {_text(self.what, self.b)}"


def _text(what: str, value: Any) -> str:
    """One model's side of an aspect, readable."""
    if what == "rc":
        return str(value)
    if what == "decision":
        parts = [f"memory{block} {zone.label}" for block, zone in value]
    elif what == "numbers":
        parts = ["; ".join(" ".join(f"{k}={v}" for k, v in s.to_json().items()) for s in stats) for stats in value]
    elif what == "changes":
        parts = [f"memory{block} {state.name.lower()} {zone.label}" for block, state, zone in value]
    else:
        parts = [f"node {nid} {zone} {pages}" for nid, zone, pages in value]
    return "[" + ", ".join(parts) + "]"


ASPECTS = ("rc", "decision", "numbers", "changes", "present", "managed")


def behaviour(k: Kernel, out: Outcome) -> tuple[Any, ...]:
    """What an event did, as comparable values: return code, zone decisions, the decisions'
    auto-movable numbers, block transitions, and every zone's present and managed pages afterwards."""
    zones = [(n.nid, z) for n in k.m.nodes.values() for z in n.zones]
    return (
        out.rc,
        tuple((d.block, d.zone) for d in out.decisions),
        tuple(d.stats for d in out.decisions),
        tuple((c.block, c.state, c.zone) for c in out.changes),
        tuple((nid, z.idx.label, z.present_pages) for nid, z in zones),
        tuple((nid, z.idx.label, z.managed_pages) for nid, z in zones),
    )


def compare_outcomes(index: int, ev: Any, ka: Kernel, a: Outcome, kb: Kernel, b: Outcome) -> Difference | None:
    """The first aspect in which two kernels' outcomes of the same event differ."""
    for what, x, y in zip(ASPECTS, behaviour(ka, a), behaviour(kb, b), strict=True):
        if x != y:
            return Difference(index, ev, what, x, y)
    return None


def diff_events(events: Iterable[Any], a: Kernel, b: Kernel, limit: int = 1) -> list[Difference]:
    """Feed model inputs to both kernels; stop after ``limit`` differences."""
    found: list[Difference] = []
    for i, ev in enumerate(events):
        if ev.KIND not in ("boot", "request", "inject"):
            continue
        d = compare_outcomes(i, ev, a, a.apply(ev), b, b.apply(ev))
        if d is not None:
            found.append(d)
            if len(found) >= limit:
                break
    return found
