"""Trace -> model -> outcomes, compared lock-step with what the real kernel showed.

Model inputs (snapshot, requests, injected facts) go to ``Kernel.apply``; observations (results,
block states, zone counters, state digests) are compared with the model's prediction at that point.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, BinaryIO

from replay.model.kernel import Kernel, SnapshotError
from replay.model.machine import ZONE_NONE
from replay.model.memory import valid_zones
from replay.model.memory_hotplug import offline_outcome_unknowable
from replay.model.outcome import Decision, Outcome
from replay.model.profiles import Choice, Profile, choose_profile, get_profile
from replay.observe import model_digest
from replay.report import Divergence, Mismatch, TraceResult
from traces.codec import Record
from traces.errors import TraceFormatError
from traces.events import KIND_OF, BlockObserved, BlockState, BootUnknown, Loss, OfflineBlock, Op, Result, StateDigest, UnknownFact, ZoneObserved
from traces.reader import TraceReader
from traces.text import format_record

MAX_FINDINGS_KEPT = 50
# What replay does not compare when the snapshot says it could not know a fact (boot_unknown).
SKIPPED = {
    UnknownFact.PRESENT_PAGES: "present pages unknown (recorded without root): zone present pages, state digests and the snapshot's page sums not compared",
    UnknownFact.GROUP_UNIT: "group {mgid}'s unit unknown (its virtio-mem start-up lines had left the kernel log): its blocks' valid_zones "
    "and state digests not compared",
}
# mm/memory_hotplug.c:offline_pages after the range checks: isolation (-EBUSY), a signal (-EINTR),
# dissolving free hugetlb folios (-ENOMEM, -EBUSY)
ISOLATION_ERRNOS = frozenset({errno.EBUSY, errno.EINTR, errno.ENOMEM})


class Replayer:
    """Feeds events to a Kernel and compares observations; collects a TraceResult."""

    def __init__(
        self, profile: Profile, path: str = "", *, context: int = 8, max_divergences: int = 20, oracles: bool = True, variants: frozenset[str] = frozenset()
    ) -> None:
        self.kernel = Kernel(profile, oracles=oracles, variants=variants)
        self.result = TraceResult(path, profile=profile.name)
        self.recent: deque[tuple[int, int, Any, int | None]] = deque(maxlen=max(context, 0) + 1)
        self.context = context
        self.max_divergences = max_divergences
        self.index = -1
        self.last_request: tuple[int, int, int, Any, Outcome] | None = None
        self.last_decision: dict[int, Decision] = {}
        self.block_request: dict[int, tuple[int, int, int, Any, Outcome]] = {}  # block -> request that last decided or changed it
        self.after_loss = False
        self.held: tuple[int, int, OfflineBlock] | None = None  # an offline waiting for its result
        self.compare: dict[type, Callable[[Any], list[Mismatch]]] = {
            Result: self._cmp_result,
            BlockObserved: self._cmp_block,
            ZoneObserved: self._cmp_zone,
            StateDigest: self._cmp_digest,
        }

    # --- feeding ------------------------------------------------------------------------------

    def feed(self, seq: int, ts: int, ev: Any) -> None:
        """One event of the trace. An offline whose outcome the model cannot know (a kernel-zone or
        boot block) waits for the next event: if that is its result and a failure of isolation or
        migration, the kernel's answer becomes an input fact (InjectFailure's) before the offline."""
        if self.held is not None:
            self._release(self.held, ev)
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
        kind = KIND_OF[type(ev)]
        if kind == "observe" or kind == "unknown":  # device observations, record types this reader does not know: skipped
            self.recent.append((seq, ts, ev, None))
            return
        if type(ev) is Loss:
            self.after_loss = True
            self.recent.append((seq, ts, ev, None))
            return
        if type(ev) is OfflineBlock and offline_outcome_unknowable(self.kernel.m, ev.block):
            self.held = (seq, ts, ev)
            return
        self._apply(seq, ts, ev, kind)

    def finish(self) -> None:
        """The end of the trace: an offline still waiting for its result is applied as it is."""
        if self.held is not None:
            self._release(self.held, None)

    def _release(self, held: tuple[int, int, OfflineBlock], nxt: Any) -> None:
        seq, ts, ev = held
        self.held = None
        if type(nxt) is Result and -nxt.rc in ISOLATION_ERRNOS:
            self.kernel.m.failures[(ev.block, Op.OFFLINE)] = -nxt.rc
            self.result.unknowable_answers += 1
        self._apply(seq, ts, ev, "request")

    def _apply(self, seq: int, ts: int, ev: Any, kind: str) -> None:
        """A model input: apply it, remember the request for reports, collect its findings."""
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
        if type(ev) is BootUnknown:
            self.result.skipped.append(SKIPPED[ev.fact].format(mgid=ev.mgid))
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
        if mem.state is ev.state and not (mem.group is not None and (UnknownFact.GROUP_UNIT, mem.group.mgid) in self.kernel.unknown):
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
        if not z.managed_known and not self.kernel.running:  # the snapshot's /proc/zoneinfo: boot pages managed
            z.managed_pages = z.boot_managed = ev.managed
            z.managed_known = True
        out = []
        if z.managed_known and z.managed_pages != ev.managed and not 0 < z.managed_pages - ev.managed <= self._fake_offline_pages(z):
            out.append(Mismatch("managed", z.managed_pages, ev.managed))
        if z.present_pages != ev.present and (UnknownFact.PRESENT_PAGES, -1) not in self.kernel.unknown:
            out.append(Mismatch("present", z.present_pages, ev.present))
        if z.spanned_pages != ev.spanned:
            out.append(Mismatch("spanned", z.spanned_pages, ev.spanned))
        if z.present_pages and ev.present and z.zone_start_pfn != ev.start_pfn:
            out.append(Mismatch("start_pfn", z.zone_start_pfn, ev.start_pfn))
        return out

    def _fake_offline_pages(self, z: Any) -> int:
        """Pages of the zone's online virtio-mem blocks (dynamic groups) that the driver may hold outside the buddy
        allocator: sub-blocks unplugged from a block that stays online (SBM), a big block taken by alloc_contig_range
        before it is offlined (BBM's safe unplug) (drivers/virtio/virtio_mem.c, 6.1-7.2). No event shows how many, so
        managed may be up to that much below the model's."""
        m = self.kernel.m
        return sum(
            m.block_pages
            for g in m.groups.values()
            if g.is_dynamic
            for b in g.blocks
            if (mem := m.blocks.get(b)) is not None and mem.zone is z and mem.state is BlockState.ONLINE
        )

    def _cmp_digest(self, ev: StateDigest) -> list[Mismatch]:
        if self.kernel.unknown:  # a digest covers present pages and every zone decision
            return []
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
        "managed": z.managed_pages if z.managed_known else None,
        "start_pfn": z.zone_start_pfn,
        "spanned": z.spanned_pages,
    }


def pick_profile(release: str, profile: str | None = None) -> Choice:
    """The profile to replay a trace of kernel ``release`` with: ``profile`` if given, else the
    release's (choose_profile: the nearest profile, and why, for a release none covers)."""
    return Choice(get_profile(profile), "") if profile else choose_profile(release)


def replay_file(
    path: str,
    *,
    source: BinaryIO | None = None,
    profile: str | None = None,
    context: int = 8,
    max_divergences: int = 20,
    oracles: bool = True,
    progress: Callable[[int], object] | None = None,
    variants: frozenset[str] = frozenset(),
) -> TraceResult:
    """Replay one trace file (or ``source``, an open binary file reported as ``path``) on the model (with the seeded
    ``variants``, replay/model/variants.py); bad input ends in ``result.error`` (what was replayed so far stays)."""
    t0 = time.perf_counter()
    try:
        reader = TraceReader(path if source is None else source)
    except TraceFormatError as e:
        return TraceResult(path, error=str(e))
    with reader:
        release = reader.header.kernel_release
        choice = pick_profile(release, profile)
        rp = Replayer(choice.profile, path, context=context, max_divergences=max_divergences, oracles=oracles, variants=variants)
        rp.result.kernel_release, rp.result.profile_reason = release, choice.reason
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
            rp.finish()
        except TraceFormatError as e:
            rp.result.error = str(e.at(path=path, record=rp.index + 1))
        size = os.path.getsize(path) if source is None else reader.f.seek(0, os.SEEK_END)
    res = rp.result
    res.events = rp.index + 1
    secs = time.perf_counter() - t0
    res.stats = {"seconds": round(secs, 3), "events_per_s": round(res.events / secs) if secs else 0, "bytes": size}
    return res


def replay_events(events: Iterable[Any], profile: Profile, **kw: Any) -> TraceResult:
    """Replay in-memory events (tests, the fuzzer, the minimiser); seq = index, ts = 0."""
    rp = Replayer(profile, **kw)
    for i, ev in enumerate(events):
        rp.feed(i, 0, ev)
    rp.finish()
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
        rp = Replayer(pick_profile(reader.header.kernel_release, profile).profile, path, context=0, oracles=False)
        try:
            for rec in reader:
                rp.feed(rec.seq, rec.ts, rec.event)
                yield rp.index, rec, rp.kernel
            rp.finish()  # a held offline applied at the end can meet the snapshot's check too
        except TraceFormatError as e:  # a snapshot no machine can have: name the file
            raise e.at(path=path) from None
