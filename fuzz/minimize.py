"""Signature-preserving trace minimisation: tail cut, resource closure, ddmin, a one-by-one pass
(so the result is 1-minimal: removing any single event loses the signature) and field
simplification to a fixed point. Deterministic; bounded by replays and time."""

from __future__ import annotations

import enum
import gc
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from fuzz.check import Hit, Mode, check_events, shadowing
from replay.model.kernel import Kernel
from replay.model.params import params_text
from replay.model.profiles import Profile
from traces.events import BOOL, STR, ZONES, Res, fields_of
from traces.header import MAJOR, MINOR, TraceHeader

BLOCK = 128 << 20


def reproducer_header(base: TraceHeader, events: list[Any], profile: Profile, writer: str) -> TraceHeader:
    """``base`` as the header of a reproducer made of ``events``: block size and parameters as its
    snapshot boots them, and no command line (the original machine's would contradict them)."""
    k = Kernel(profile, oracles=False)
    for ev in events:
        if ev.KIND != "boot":
            break
        k.apply(ev)
    return replace(base, writer=writer, cmdline="", block_size=k.m.block_size, params=params_text(k.m.params), major=MAJOR, minor=MINOR)


class Budget(BaseException):
    """The replay or time budget ran out (a BaseException: the model-crash handler of check_events,
    which catches every Exception, lets it through)."""


@contextmanager
def deadline(at: float) -> Iterator[None]:
    """Raise Budget when the monotonic clock passes ``at``, also in the middle of a replay (a
    SIGALRM timer, in the main thread; elsewhere only the checks between replays hold). The timer
    rings every 50 ms until the block ends, and a ring during a garbage collection or inside a
    ``__del__`` (where the exception would be swallowed as unraisable) waits for the next one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    armed = [True]
    collecting = [False]

    def gc_start(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = True

    def gc_stop(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collecting[0] = False

    def ring(signum: int, frame: FrameType | None) -> None:
        if armed[0] and not collecting[0] and not in_finaliser(frame):
            raise Budget

    left = at - time.monotonic()
    if left <= 0:
        raise Budget
    gc.callbacks.insert(0, gc_start)  # first at a collection's start, last at its stop
    gc.callbacks.append(gc_stop)
    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, left, 0.05)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        gc.callbacks.remove(gc_start)
        gc.callbacks.remove(gc_stop)


def in_finaliser(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside a ``__del__`` (called from whatever dropped the object)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@dataclass(slots=True)
class Result:
    """The minimised events and how we got there."""

    events: list[Any]
    hit: Hit  # what the minimised events produce
    replays: int
    seconds: float
    one_minimal: bool  # the one-by-one pass completed within the budget

    @property
    def signature(self) -> str:
        return self.hit.signature


def resources(ev: Any, block_size: int = BLOCK) -> set[tuple[str, int]]:
    """The blocks, groups and nodes an event touches (address ranges as blocks)."""
    out: set[tuple[str, int]] = set()
    start = size = None
    for f in fields_of(type(ev)):
        v = getattr(ev, f.name)
        if f.res is Res.BLOCK:
            out.add(("block", v))
        elif f.res is Res.GROUP:
            out.add(("group", v))
        elif f.res is Res.NODE:
            out.add(("node", v))
        elif f.res is Res.ADDR:
            start = v
        elif f.res is Res.SIZE:
            size = v
    if start is not None and size is not None:
        first = start // block_size
        out.update(("block", b) for b in range(first, first + min(max(size // block_size, 1), 4096)))
    return out


class Minimizer:
    """Shrinks an event list while ``check`` keeps returning the same signature (``signature``, by
    default the first; any with ``accept_any``); the signatures the input hits before it are ignored."""

    def __init__(
        self,
        mode: Mode,
        signature: str | None,
        *,
        max_replays: int = 20000,
        max_seconds: float = 60.0,
        accept_any: bool = False,
        ignore: frozenset[str] = frozenset(),
    ) -> None:
        self.mode = mode
        self.ignore = ignore
        self.signature = signature
        self.accept_any = accept_any
        self.max_replays = max_replays
        self.deadline = time.monotonic() + max_seconds
        self.replays = 0
        self.cache: dict[Any, Hit | None] = {}

    def hit(self, events: list[Any]) -> Hit | None:
        return self.cached(tuple(events), lambda: check_events(events, self.mode, self.ignore))

    def spend(self) -> None:
        """Count one replay of the budget; Budget when the replays or the time are used up."""
        if self.replays >= self.max_replays or time.monotonic() > self.deadline:
            raise Budget
        self.replays += 1

    def cached(self, key: Any, check: Callable[[], Hit | None]) -> Hit | None:
        """The verdict of the input ``key`` names, from the cache or from ``check`` (one replay of the budget)."""
        if key in self.cache:
            return self.cache[key]
        self.spend()
        with deadline(self.deadline):
            h = check()
        self.cache[key] = h
        return h

    def keeps(self, events: list[Any]) -> bool:
        h = self.hit(events)
        return h is not None and (self.accept_any or h.signature == self.signature)

    def first_hit(self, events: list[Any], check: Callable[[], Hit | None], t0: float) -> Hit:
        """The input's hit past the signatures its trace ``events`` hits before the wanted one (those join the
        ignored); ValueError if it has none or the budget runs out first."""
        try:
            if self.signature is not None and not self.accept_any:
                with deadline(self.deadline):
                    self.ignore |= frozenset(shadowing(events, self.mode, self.signature, self.ignore))
            first = check()
        except Budget:
            raise ValueError(f"the budget ran out before a replay of the whole input finished ({time.monotonic() - t0:.1f} s)") from None
        if first is None:
            raise ValueError("the input does not produce any signature (its replay raises no finding, difference or crash)")
        self.signature = self.signature or first.signature
        return first

    def run(self, events: list[Any], progress: Callable[[str, int], object] | None = None) -> Result:
        t0 = time.monotonic()
        first = self.first_hit(events, lambda: self.hit(events), t0)
        cur = events[: first.index + 1]  # the tail after the failing event cannot matter
        one_minimal = False
        try:
            cur = self._closure(cur, first.index)
            cur = self._ddmin(cur, progress)
            cur, one_minimal = self._one_by_one(cur, progress)
            cur = self._simplify(cur, progress)
            if cur and one_minimal:
                cur, one_minimal = self._one_by_one(cur, progress)
        except Budget:
            pass
        hit = self.cache.get(tuple(cur)) or first  # not checked: the tail cut, which hits what the input does
        return Result(cur, hit, self.replays, time.monotonic() - t0, one_minimal)

    def _closure(self, events: list[Any], failing: int) -> list[Any]:
        """Keep the boot snapshot and events sharing a resource with the failing event (transitively)."""
        keep = {i for i, e in enumerate(events) if e.KIND == "boot"} | {failing}
        res = resources(events[failing])
        changed = True
        while changed:
            changed = False
            for i, e in enumerate(events):
                if i not in keep and resources(e) & res:
                    keep.add(i)
                    res |= resources(e)
                    changed = True
        cand = [e for i, e in enumerate(events) if i in keep]
        return cand if len(cand) < len(events) and self.keeps(cand) else events

    def _ddmin(self, events: list[Any], progress: Callable[[str, int], object] | None) -> list[Any]:
        n = 2
        while len(events) >= 2:
            size = len(events) // n
            chunks = [events[i : i + size] for i in range(0, len(events), size)] if size else [[e] for e in events]
            for i in range(len(chunks)):
                complement = [e for j, c in enumerate(chunks) if j != i for e in c]
                if complement and self.keeps(complement):
                    events = complement
                    n = max(n - 1, 2)
                    if progress:
                        progress("ddmin", len(events))
                    break
            else:
                if n >= len(events):
                    break
                n = min(n * 2, len(events))
        return events

    def _one_by_one(self, events: list[Any], progress: Callable[[str, int], object] | None) -> tuple[list[Any], bool]:
        i = len(events) - 1
        while i >= 0:
            cand = events[:i] + events[i + 1 :]
            if cand and self.keeps(cand):
                events = cand
                if progress:
                    progress("1-minimal", len(events))
            i -= 1
        return events, True

    def _simplify(self, events: list[Any], progress: Callable[[str, int], object] | None) -> list[Any]:
        """Smaller numbers, first enum members, empty strings: while the signature stays."""
        changed = True
        while changed:
            changed = False
            for i, ev in enumerate(events):
                for f in fields_of(type(ev)):
                    for v in _simpler(f, getattr(ev, f.name)):
                        cand = [*events[:i], ev._replace(**{f.name: v}), *events[i + 1 :]]
                        if self.keeps(cand):
                            events, ev, changed = cand, cand[i], True
                            if progress:
                                progress("simplify", len(events))
                            break
        return events


def _simpler(f: Any, v: Any) -> list[Any]:
    """Candidate simpler values, simplest first (an appended field: not recorded)."""
    if f.since:
        return [] if v is None else [None]
    if f.wire is STR:
        return [""] if v else []
    if f.wire is ZONES:
        return [v[:k] for k in range(len(v))]
    if f.wire is BOOL:
        return [False] if v else []
    if isinstance(v, enum.Enum):
        first = next(iter(type(v)))
        return [first] if v is not first and not isinstance(v, enum.IntFlag) else []
    if f.res in (Res.ADDR, Res.SIZE):
        return [x for x in (BLOCK, v // 2 // BLOCK * BLOCK) if 0 < x < v]
    return [x for x in dict.fromkeys((0, 1, v // 2)) if abs(x) < abs(v)]
