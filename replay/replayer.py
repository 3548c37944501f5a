"""Trace -> model -> outcomes, compared lock-step with what the real kernel showed.

Model inputs (snapshot, requests, injected facts) go to ``Kernel.apply``; observations (results,
block states, zone counters, state digests) are compared with the model's prediction at that point.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from replay.model.kernel import Kernel, SnapshotError
from replay.model.machine import ZONE_NONE
from replay.model.memory import valid_zones
from replay.model.outcome import Decision, Outcome
from replay.model.profiles import Profile, get_profile, profile_for_release
from replay.observe import model_digest
from replay.report import Divergence, Mismatch, TraceResult
from traces.codec import Record
from traces.errors import TraceFormatError
from traces.events import BlockObserved, BlockState, Loss, Result, StateDigest, ZoneObserved
from traces.reader import TraceReader
from traces.text import format_record

MAX_FINDINGS_KEPT = 50


class Replayer:
    """Feeds events to a Kernel and compares observations; collects a TraceResult."""

    def __init__(self, profile: Profile, path: str = "", *, context: int = 8, max_divergences: int = 20, oracles: bool = True) -> None:
        self.kernel = Kernel(profile, oracles=oracles)
        self.result = TraceResult(path, profile=profile.name)
        self.recent: deque[tuple[int, int, Any, int | None]] = deque(maxlen=max(context, 0) + 1)
        self.context = context
        self.max_divergences = max_divergences
        self.index = -1
        self.last_request: tuple[int, int, int, Any, Outcome] | None = None
        self.last_decision: dict[int, Decision] = {}
        self.block_request: dict[int, tuple[int, int, int, Any, Outcome]] = {}  # block -> request that last decided or changed it
        self.after_loss = False
        self.compare: dict[type, Callable[[Any], list[Mismatch]]] = {
            Result: self._cmp_result,
            BlockObserved: self._cmp_block,
            ZoneObserved: self._cmp_zone,
            StateDigest: self._cmp_digest,
        }

    # --- feeding ------------------------------------------------------------------------------

    def feed(self, seq: int, ts: int, ev: Any) -> None:
        """One event of the trace."""
        self.index += 1
        cmp = self.compare.get(type(ev))
        if cmp is not None:  # an observation the model predicts
            self.recent.append((seq, ts, ev, None))
            r = self.result
            r.observations += 1
            mismatches = cmp(ev)
            if mismatches:
                self._diverged(seq, ts, ev, mismatches)
            else:
                r.matched += 1
            return
        kind = ev.KIND
        if kind == "observe" or kind == "unknown":  # device observations, record types this reader does not know: skipped
            self.recent.append((seq, ts, ev, None))
            return
        if type(ev) is Loss:
            self.after_loss = True
            self.recent.append((seq, ts, ev, None))
            return
        try:
            out = self.kernel.apply(ev)
        except SnapshotError as e:
            raise TraceFormatError(str(e).split(": ", 1)[-1], record=self.index) from None
        if kind == "request":
            req = self.last_request = (self.index, seq, ts, ev, out)
            for d in out.decisions:
                self.last_decision[d.block] = d
                self.block_request[d.block] = req
            for ch in out.changes:
                self.block_request[ch.block] = req
        if out.findings:
            self._findings(out)
        self.recent.append((seq, ts, ev, out.rc if kind == "request" else None))

    def _findings(self, out: Outcome) -> None:
        r = self.result
        for f in out.findings:
            r.finding_count += 1
            n = r.finding_signatures.get(f.signature, 0)
            r.finding_signatures[f.signature] = n + 1
            if not n and len(r.findings) < MAX_FINDINGS_KEPT:
                r.findings.append(f.to_json())

    def _diverged(self, seq: int, ts: int, ev: Any, mismatches: list[Mismatch]) -> None:
        r = self.result
        kind = "loss" if self.after_loss else self._kind(ev, mismatches)
        r.divergence_count += 1
        r.divergences_by_kind[kind] = r.divergences_by_kind.get(kind, 0) + 1
        if len(r.divergences) < self.max_divergences:
            r.divergences.append(self._divergence(kind, seq, ts, ev, mismatches))

    @staticmethod
    def _kind(ev: Any, mismatches: list[Mismatch]) -> str:
        if type(ev) is BlockObserved:
            fields = {m.field for m in mismatches}
            if fields == {"valid_zones"}:
                return "decision"
            return "errno" if "state" in fields else "accounting"
        if type(ev) is Result:
            return "errno"
        return "accounting"

    # --- comparisons ---------------------------------------------------------------------------

    def _cmp_result(self, ev: Result) -> list[Mismatch]:
        if self.last_request is None:
            return [Mismatch("rc", None, ev.rc)]
        rc = self.last_request[4].rc
        return [] if rc == ev.rc else [Mismatch("rc", rc, ev.rc)]

    def _cmp_block(self, ev: BlockObserved) -> list[Mismatch]:
        m = self.kernel.m
        mem = m.blocks.get(ev.block)
        if mem is None:
            return [] if ev.state is BlockState.ABSENT else [Mismatch("state", "absent", ev.state.name.lower())]
        out = []
        if mem.state is not ev.state:
            out.append(Mismatch("state", mem.state.name.lower(), ev.state.name.lower()))
        if ev.node >= 0 and mem.nid != ev.node:
            out.append(Mismatch("node", mem.nid, ev.node))
        if mem.state is ev.state:
            zones = valid_zones(m, mem)
            if ZONE_NONE in zones:
                zones = tuple(z for z in zones if z is not ZONE_NONE)
            if zones != ev.valid_zones:
                out.append(Mismatch("valid_zones", _zones(zones), _zones(ev.valid_zones)))
        return out

    def _cmp_zone(self, ev: ZoneObserved) -> list[Mismatch]:
        node = self.kernel.m.nodes.get(ev.node)
        if node is None or not node.online:
            return [Mismatch("node", "offline", f"node {ev.node} online")]
        z = node.zones[ev.zone]
        out = []
        if z.present_pages != ev.present:
            out.append(Mismatch("present", z.present_pages, ev.present))
        if z.spanned_pages != ev.spanned:
            out.append(Mismatch("spanned", z.spanned_pages, ev.spanned))
        if z.present_pages and ev.present and z.zone_start_pfn != ev.start_pfn:
            out.append(Mismatch("start_pfn", z.zone_start_pfn, ev.start_pfn))
        return out

    def _cmp_digest(self, ev: StateDigest) -> list[Mismatch]:
        mine = model_digest(self.kernel.m).digest
        return [] if mine == ev.digest else [Mismatch("digest", hex(mine), hex(ev.digest))]

    # --- reports -------------------------------------------------------------------------------

    def _divergence(self, kind: str, seq: int, ts: int, ev: Any, mismatches: list[Mismatch]) -> Divergence:
        m = self.kernel.m
        block = getattr(ev, "block", None)
        request = None
        req = self.block_request.get(block, self.last_request) if block is not None else self.last_request
        if req is not None:  # the request that last decided or changed the block, else the last one
            _, rseq, rts, rev, _ = req
            request = format_record(Record(rseq, rts, 0, rev))
        earlier = list(self.recent)[:-1][-self.context :] if self.context else []
        context = [format_record(Record(s, t, 0, e)) + ("" if rc is None else f"   # model rc {rc}") for s, t, e, rc in earlier]
        d = Divergence(kind, self.index, seq, ts, format_record(Record(seq, ts, 0, ev)), request, mismatches, context)
        if block is not None:
            dec = self.last_decision.get(block)
            if dec is not None:
                d.numbers = [s.to_json() for s in dec.stats]
            mem = m.blocks.get(block)
            if mem is not None:
                if mem.group is not None:
                    g = mem.group
                    kernel, movable = g.present_kernel_pages, g.present_movable_pages
                    d.groups.append({"mgid": g.mgid, "dynamic": g.is_dynamic, "node": g.nid, "pages": g.pages, "kernel": kernel, "movable": movable})
                node = m.nodes.get(mem.nid)
                if node is not None:
                    d.zones = [_zone_json(z) for z in node.zones if z.spanned_pages or z.present_pages]
        elif type(ev) is ZoneObserved and ev.node in m.nodes:
            d.zones = [_zone_json(m.nodes[ev.node].zones[ev.zone])]
        return d


def _zones(zones: tuple[Any, ...]) -> str:
    return ",".join(z.label for z in zones) or "none"


def _zone_json(z: Any) -> dict[str, Any]:
    return {
        "node": z.nid,
        "zone": z.idx.label,
        "present": z.present_pages,
        "early": z.present_early_pages,
        "start_pfn": z.zone_start_pfn,
        "spanned": z.spanned_pages,
    }


def trace_profile(release: str, profile: str | None, path: str | None) -> Profile:
    """``profile``, else the one for a trace's kernel release; a release with no version in it is
    an error about the trace's header."""
    if profile:
        return get_profile(profile)
    try:
        return profile_for_release(release or "6.1")
    except ValueError as e:
        raise TraceFormatError(f"{e}: give --profile", path=path, field="header kernel release") from None


def replay_file(
    path: str,
    *,
    profile: str | None = None,
    context: int = 8,
    max_divergences: int = 20,
    oracles: bool = True,
    progress: Callable[[int], object] | None = None,
) -> TraceResult:
    """Replay one trace file; bad input ends in ``result.error`` (what was replayed so far stays)."""
    t0 = time.perf_counter()
    try:
        reader = TraceReader(path)
    except TraceFormatError as e:
        return TraceResult(path, error=str(e))
    with reader:
        try:
            prof = trace_profile(reader.header.kernel_release, profile, path)
        except TraceFormatError as e:
            return TraceResult(path, error=str(e))
        rp = Replayer(prof, path, context=context, max_divergences=max_divergences, oracles=oracles)
        last = reader.pos
        try:
            for chunk in reader.chunks():
                cols = chunk.cols
                feed = rp.feed
                for seq, ts, ev in zip(cols.seqs, cols.ts, cols.events, strict=True):
                    feed(seq, ts, ev)
                if progress is not None:
                    progress(reader.pos - last)
                    last = reader.pos
        except TraceFormatError as e:
            rp.result.error = str(e.at(path=path, record=rp.index + 1))
    res = rp.result
    res.events = rp.index + 1
    secs = time.perf_counter() - t0
    res.stats = {"seconds": round(secs, 3), "events_per_s": round(res.events / secs) if secs else 0, "bytes": os.path.getsize(path)}
    return res


def replay_events(events: Iterable[Any], profile: Profile, **kw: Any) -> TraceResult:
    """Replay in-memory events (tests, the fuzzer, the minimiser); seq = index, ts = 0."""
    rp = Replayer(profile, **kw)
    for i, ev in enumerate(events):
        rp.feed(i, 0, ev)
    rp.result.events = rp.index + 1
    return rp.result


def replay_many(paths: list[str], *, jobs: int = 1, progress: bool = False, **kw: Any) -> list[TraceResult]:
    """Replay several traces, ``jobs`` at a time in worker processes; results in input order."""
    if jobs <= 1 or len(paths) <= 1:
        results = []
        for p in paths:
            bar = _bar(os.path.getsize(p) if os.path.exists(p) else 0, p, progress)
            results.append(replay_file(p, progress=bar.update if bar else None, **kw))
            if bar:
                bar.close()
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(replay_file, p, **kw) for p in paths]
        bar = _bar(len(paths), "traces", progress, unit="trace")
        for _ in as_completed(futures):
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        return [f.result() for f in futures]


def _bar(total: int, desc: str, enabled: bool, unit: str = "B") -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", leave=False, file=sys.stderr)


def model_at(path: str, at: int | None = None, profile: str | None = None) -> tuple[int, Kernel]:
    """(event index, model after it) at event ``at`` of a trace (default: the end); no oracles."""
    last, kernel = -1, None
    for index, _, k in walk(path, profile):
        last, kernel = index, k
        if at is not None and index >= at:
            break
    if kernel is None:
        raise TraceFormatError("the trace has no events", path=path, record=0)
    if at is not None and last < at:
        raise TraceFormatError(f"event {at} is past the trace's last event {last}", path=path)
    return last, kernel


def walk(path: str, profile: str | None = None) -> Iterator[tuple[int, Record, Kernel]]:
    """(event index, record, model after it) for every record of a trace; no oracles."""
    with TraceReader(path) as reader:
        prof = trace_profile(reader.header.kernel_release, profile, path)
        rp = Replayer(prof, path, context=0, oracles=False)
        for rec in reader:
            try:
                rp.feed(rec.seq, rec.ts, rec.event)
            except TraceFormatError as e:  # a snapshot no machine can have: name the file
                raise e.at(path=path) from None
            yield rp.index, rec, rp.kernel
