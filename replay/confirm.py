"""``mhp confirm``: a trace run on a real kernel in the lab and judged against the model.

The trace becomes a scenario (replay/translate.py), the lab runs it on Debian's kernel with the guest's own recorder
(traces/lab/run.py ``run_trace``), and the real trace is replayed. One verdict per trace and kernel:

- ``confirmed``: the real trace replays with 0 divergences, the lab's writes got the results the model gives the
  trace, the machine issued the trace's driver requests, and the real trace raises every finding signature the
  trace raises (from its own observable state);
- ``refuted``: the real kernel differs from the model: the first divergence of the real trace's replay, or a write
  whose result the model predicts otherwise, or (kind ``signature``) the real run lacks a signature the trace raises;
- ``inexpressible``: an event no real machine produces, and why (found by the translation, or by the run: the real
  machine's drivers issued other requests than the trace's);
- ``error``: the lab run failed or cannot be trusted (the recorder and the host's samples disagree).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from replay.model.profiles import get_profile
from replay.replayer import replay_file
from replay.report import Divergence, Mismatch
from replay.translate import Obstacle, Translation, event_text, read_records, requests_with_rc, translate
from traces.atomic import atomic_path, atomic_write
from traces.codec import FLAG_INFERRED, Record
from traces.events import (
    AddMemory,
    Attr,
    Event,
    Mark,
    OfflineAndRemoveMemory,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    ParamWrite,
    RemoveMemory,
    Result,
    StateDigest,
)
from traces.lab.setup import KERNELS
from traces.reader import TraceReader
from traces.text import format_record
from traces.writer import TraceWriter

GUEST_STEPS = ("online", "offline", "param", "auto_online")
USER_WRITES = (OnlineBlock, OfflineBlock, ParamWrite)
ERRNO_OF = {os.strerror(e): e for e in sorted(errno.errorcode, reverse=True)}  # strerror text -> errno (the lowest wins)


@dataclass(slots=True)
class Verdict:
    """One trace on one kernel."""

    trace: str
    kernel: str
    verdict: str  # confirmed | refuted | inexpressible | error
    signatures_expected: list[str] = field(default_factory=list)
    signatures_real: list[str] = field(default_factory=list)
    divergence: dict[str, Any] | None = None
    inexpressible: dict[str, Any] | None = None  # {index, event, why}: the first obstacle
    obstacles: list[dict[str, Any]] = field(default_factory=list)  # every obstacle found (the machine's, then a request's)
    real_trace: str | None = None
    lab_s: float | None = None
    package: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """A one-line summary."""
        head = f"{self.trace} on {self.kernel}: {self.verdict}"
        if self.inexpressible:
            o = self.inexpressible
            also = "".join(f"; also event {x['index']}: {x['why']}" for x in self.obstacles[1:])
            return f"{head}: event {o['index']} ({o['event']}): {o['why']}{also}"
        if self.divergence:
            d = self.divergence
            what = "; ".join(f"{m['field']}: model {m['model']!r}, kernel {m['observed']!r}" for m in d["mismatches"])
            return f"{head}: {d['kind']} divergence at event {d['index']} ({d['event']}): {what}"
        if self.error:
            return f"{head}: {self.error}"
        return f"{head}: signatures {', '.join(self.signatures_real) or 'none'} (expected {', '.join(self.signatures_expected) or 'none'})"


def kernels_for(release: str) -> list[str]:
    """The kernel series a trace's header names (``6.1.0-56-amd64`` -> 6.1), else every kernel the lab has."""
    m = re.match(r"(\d+)\.(\d+)", release)
    series = f"{m.group(1)}.{m.group(2)}" if m else ""
    return [series] if series in KERNELS else list(KERNELS)


def expected_signatures(path: str, kernel: str) -> list[str]:
    """The finding signatures the trace raises on the kernel's model; ValueError for bad input."""
    res = replay_file(path, profile=kernel)
    if res.error:
        raise ValueError(res.error)
    return sorted(res.finding_signatures)


def real_trace_path(path: str, kernel: str, out_dir: str | None) -> Path:
    """Where the real trace of ``path`` on ``kernel`` is kept: ``<name>.<kernel>.real.mhpt`` beside it or in ``out_dir``."""
    p = Path(path)
    return Path(out_dir or p.parent) / f"{p.name.removesuffix('.mhpt')}.{kernel}.real.mhpt"


def confirm(path: str, kernel: str, out_dir: str | None = None, verbose: bool = False) -> Verdict:
    """Translate, run in the lab, judge; the real trace of a confirmed or refuted run is kept (real_trace_path)."""
    from traces.lab.qemu import LabError
    from traces.lab.run import run_trace
    from traces.lab.setup import LabSetupError, cached_kernel
    from traces.scenario import ScenarioError

    try:
        kp = cached_kernel(kernel)
        package: str | None = f"{kp.package} {kp.version}"
    except LabSetupError:
        package = None
    v = Verdict(path, kernel, "error", expected_signatures(path, kernel), package=package)
    recs = read_records(path)[1]
    tr = translate(path, kernel, recs)
    if tr.obstacle is not None:
        return inexpressible(v, tr.obstacles)
    assert tr.scenario is not None
    with tempfile.TemporaryDirectory(prefix="mhp-confirm-") as tmp:
        real, obs_path = Path(tmp) / "real.mhpt", Path(tmp) / "obs.json"
        t0 = time.monotonic()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the lab's log: stdout is for verdicts
                run_trace(tr.scenario.path, kernel, real, verbose, scenario=tr.scenario, obs_path=obs_path)
        except (LabError, LabSetupError, ScenarioError, OSError) as e:
            v.error = f"lab run failed: {e}"
            return v
        finally:
            v.lab_s = round(time.monotonic() - t0, 1)
        obs = json.loads(obs_path.read_text())
        exact = Path(tmp) / "exact.mhpt"
        with_lab_writes(str(real), str(exact), tr, recs, obs)
        judge(v, tr, recs, str(exact), obs)
        if v.verdict in ("confirmed", "refuted"):
            dest = real_trace_path(path, kernel, out_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as t:
                shutil.copyfile(exact, t)
            v.real_trace = str(dest)
    return v


def inexpressible(v: Verdict, obstacles: list[Obstacle]) -> Verdict:
    v.verdict = "inexpressible"
    v.obstacles = [o.to_json() for o in obstacles]
    v.inexpressible = v.obstacles[0]
    return v


def judge(v: Verdict, tr: Translation, recs: list[Record], real: str, obs: dict[str, Any]) -> Verdict:
    """The verdict of a finished lab run: ``real`` the guest's trace, ``obs`` the host's observation (traces/lab/run.py)."""
    from traces.lab.agree import disagreements

    res = replay_file(real)
    if res.error:
        v.error = f"the real trace: {res.error}"
        return v
    v.signatures_real = sorted(res.finding_signatures)
    if res.divergence_count:
        v.verdict, v.divergence = "refuted", res.divergences[0].to_json()
        return v
    odd = disagreements(real, obs)
    if odd:
        v.error = f"the guest's recorder and the host's samples disagree ({len(odd)}): {odd[0]}"
        return v
    obstacle = order_difference(tr, recs, real)
    if obstacle is not None:
        return inexpressible(v, [obstacle])
    div = write_difference(tr, recs, obs)
    if div is None:
        missing = sorted(set(v.signatures_expected) - set(v.signatures_real))
        if missing:
            div = Divergence("signature", -1, -1, 0, f"the real trace raises {', '.join(v.signatures_real) or 'no finding'}", None, [])
            div.mismatches = [Mismatch("signatures", v.signatures_expected, v.signatures_real)]
    if div is not None:
        v.verdict, v.divergence = "refuted", div.to_json()
        return v
    v.verdict = "confirmed"
    return v


def write_difference(tr: Translation, recs: list[Record], obs: dict[str, Any]) -> Divergence | None:
    """The first failed sysfs write of the lab run whose message names no errno (no result went into the real trace for
    replay to compare) where the model predicts success for the trace's request."""
    rcs = {i: rc for i, _, rc in requests_with_rc([r.event for r in recs], get_profile(tr.kernel))}
    for k, (step, sources) in enumerate(zip(tr.doc["step"], tr.sources, strict=True)):
        if not any(a in step for a in GUEST_STEPS):
            continue
        writes = obs["results"][k + 1].get("writes") or []
        for i, (_, status, message) in zip(sources, writes, strict=False):
            rc = rcs[i]
            if write_rc(status, message) is None and rc >= 0:
                rec = recs[i]
                event = f"step {k + 1}'s write: exit status {status}" + (f" ({message})" if message else "")
                return Divergence("errno", i, rec.seq, rec.ts, event, format_record(rec), [Mismatch("rc", rc, f"status {status}: {message}" if status else 0)])
    return None


def write_rc(status: int, message: str) -> int | None:
    """The kernel's answer to a lab write: 0, -errno from the shell's message (``sh: write error: Invalid argument``), or
    None when the message names no errno."""
    if status == 0:
        return 0
    e = ERRNO_OF.get(message.rsplit(": ", 1)[-1].strip())
    return None if e is None else -e


def _write_key(ev: Event) -> tuple[Any, ...]:
    """What a write and the recorder's inference of it share: the block (or parameter) and the direction."""
    if isinstance(ev, ParamWrite):
        return ("param", ev.param)
    online = isinstance(ev, OnlineBlock) and not (ev.attr is Attr.STATE and ev.online_type is OnlineType.OFFLINE)
    return ("online" if online else "offline", getattr(ev, "block", -1))


def lab_writes(tr: Translation, recs: list[Record], obs: dict[str, Any]) -> dict[int, list[tuple[Event, int | None]]]:
    """Each guest step's writes (by step number) as the trace's requests the lab made, with the kernel's result."""
    out: dict[int, list[tuple[Event, int | None]]] = {}
    for k, (step, sources) in enumerate(zip(tr.doc["step"], tr.sources, strict=True)):
        if any(a in step for a in GUEST_STEPS):
            writes = obs["results"][k + 1].get("writes") or []
            evs = [recs[i].event for i in sources]
            out[k + 1] = [
                (ev._replace(value=ev.value.removesuffix("\n")) if isinstance(ev, ParamWrite) else ev, write_rc(status, message))
                for ev, (_, status, message) in zip(evs, writes, strict=False)
            ]
    return out


def with_lab_writes(real: str, out: str, tr: Translation, recs: list[Record], obs: dict[str, Any]) -> int:
    """The guest's trace with each guest step's writes as the lab made them, each followed by the kernel's result, in
    place of the recorder's inferences (it sees the zone a block went to, not the online type written, and no failed
    write); returns the number of writes put in. A successful write takes the place of its inference (so it stays in
    order with what the drivers did meanwhile), a failed one follows the write before it (the first: the full
    observation after the step's mark)."""
    exact = lab_writes(tr, recs, obs)
    put = 0
    with TraceReader(real) as r, TraceWriter(out, r.header) as w:
        todo: list[tuple[Event, int | None]] = []  # the current step's writes not yet written
        started = False  # the full observation after the step's mark is written

        def write_first(n: int, ts: int) -> None:
            nonlocal put
            for ev, rc in todo[:n]:
                w.write(ev, ts=ts)
                if rc is not None:
                    w.write(Result(rc), ts=ts)
            put += len(todo[:n])
            del todo[:n]

        def failed() -> int:
            """How many writes at the head of ``todo`` failed (the recorder saw nothing of them)."""
            return next((k for k, (_, rc) in enumerate(todo) if rc == 0), len(todo))

        ts = 0
        for rec in r:
            ev, ts = rec.event, rec.ts
            if isinstance(ev, Mark):
                write_first(len(todo), ts)  # writes whose effect the recorder never saw: before the next mark
                head = ev.text.split(":", 1)[0]
                todo = list(exact.get(int(head[5:]), [])) if head.startswith("step ") and head[5:].isdigit() else []
                started = False
            elif todo and rec.flags & FLAG_INFERRED and isinstance(ev, USER_WRITES):
                k = failed()
                if k < len(todo) and _write_key(todo[k][0]) == _write_key(ev):
                    write_first(k + 1, ts)  # the failed writes before it, then it in place of the inference
                    write_first(failed(), ts)  # and the failed ones right after it
                    continue
            w.write(ev, ts=ts, flags=rec.flags)
            if todo and not started and isinstance(ev, StateDigest):
                started = True
                write_first(failed(), ts)
        write_first(len(todo), ts)
    return put


def _in_order(items: Sequence[tuple[int, Event]]) -> list[tuple[int, Event, tuple[Any, ...]]]:
    out: list[tuple[int, Event, tuple[Any, ...]]] = []
    for i, ev in items:
        if isinstance(ev, AddMemory):
            out.append((i, ev, ("add", ev.start, ev.size)))
        elif isinstance(ev, (RemoveMemory, OfflineAndRemoveMemory)):
            out.append((i, ev, ("remove", ev.start, ev.size)))
        else:
            out.append((i, ev, _write_key(ev)))
    return out


def order_difference(tr: Translation, recs: list[Record], exact: str) -> Obstacle | None:
    """The first of the trace's hot-adds, removals (those that succeed) and lab writes that the real machine did not do
    in the same order (``exact``: its trace with the lab's writes, with_lab_writes); None: the same sequence."""
    written = {i for step, sources in zip(tr.doc["step"], tr.sources, strict=True) if any(a in step for a in GUEST_STEPS) for i in sources}
    memory = (AddMemory, RemoveMemory, OfflineAndRemoveMemory)
    rcs = requests_with_rc([r.event for r in recs], get_profile(tr.kernel))
    mine = _in_order([(i, ev) for i, ev, rc in rcs if (isinstance(ev, memory) and rc == 0) or i in written])
    real = read_records(exact)[1]
    lab = [(j, r.event) for j, r in enumerate(real) if isinstance(r.event, memory) or (isinstance(r.event, USER_WRITES) and not r.flags & FLAG_INFERRED)]
    theirs = _in_order(lab)
    kernel = tr.kernel
    for pos, (i, ev, key) in enumerate(mine):
        if pos >= len(theirs):
            return Obstacle(i, event_text(ev), f"the real {kernel} machine did nothing more of the kind after its last")
        j, rev, rkey = theirs[pos]
        if rkey != key:
            return Obstacle(i, event_text(ev), f"the real {kernel} machine did {event_text(rev)} here (its trace's record {j})")
    if len(theirs) > len(mine):
        j, rev, _ = theirs[len(mine)]
        last = mine[-1][0] if mine else len(recs) - 1
        return Obstacle(last, event_text(recs[last].event), f"the real {kernel} machine also did {event_text(rev)} (its trace's record {j})")
    return None


def record_verdict(v: Verdict, date: str | None = None) -> Path | None:
    """Store the verdict in the trace's regression file (``<name>.json`` beside it, field ``verdicts``); None if it has none."""
    p = Path(v.trace)
    meta = p.with_name(p.name.removesuffix(".mhpt") + ".json")
    if not meta.is_file():
        return None
    doc = json.loads(meta.read_text())
    entry: dict[str, Any] = {"verdict": v.verdict, "date": date or datetime.date.today().isoformat(), "package": v.package}
    if v.inexpressible:
        entry["reason"] = v.inexpressible
        if len(v.obstacles) > 1:
            entry["also"] = v.obstacles[1:]
    if v.divergence:
        entry["divergence"] = v.divergence
    if v.error:
        entry["reason"] = v.error
    if v.real_trace:
        entry["real_trace"] = Path(v.real_trace).name
        entry["signatures"] = {"expected": v.signatures_expected, "real": v.signatures_real}
        entry["lab_s"] = v.lab_s
    doc.setdefault("verdicts", {})[v.kernel] = entry
    atomic_write(meta, json.dumps(doc, indent=1) + "\n")
    return meta


def exit_code(verdicts: list[Verdict]) -> int:
    """0 all confirmed, 1 any refuted, 2 a run failed, 3 any inexpressible (none refuted)."""
    kinds = {v.verdict for v in verdicts}
    if "refuted" in kinds:
        return 1
    if "error" in kinds:
        return 2
    return 3 if "inexpressible" in kinds else 0


def confirm_all(
    traces: list[str], kernels: list[str] | None, out_dir: str | None = None, record: bool = False, verbose: bool = False, log: Any = None
) -> list[Verdict]:
    """Every trace on every kernel (default: the one its header names, else both); every input is checked first, so bad
    input (ValueError naming the trace) stops before any lab run. ``record``: verdicts go to the regressions' files."""
    for k in kernels or ():
        if k not in KERNELS:
            raise ValueError(f"--kernel {k}: expected one of {', '.join(KERNELS)}")
    jobs = []
    for t in traces:
        release = read_records(t)[0]
        for k in kernels or kernels_for(release):
            expected_signatures(t, k)
            jobs.append((t, k))
    out = []
    for t, k in jobs:
        v = confirm(t, k, out_dir, verbose)
        if record:
            record_verdict(v)
        if log is not None:
            log(v)
        out.append(v)
    return out
