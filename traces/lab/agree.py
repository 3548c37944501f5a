"""The independent check of a lab run: what the guest's recorder observed at each mark against the host's own samples.

The lab marks the trace before every step (``step i: ...``) and at the end (``end``); the recorder follows each mark
with a full observation (every block, every zone, a digest). The host samples the guest through its agent once
each step settled (the observation JSON, traces/lab/run.py). The observation after mark ``step i`` is the state
step ``i - 1`` left, so it must equal the host's sample after step ``i - 1`` (the boot sample for the first step
recorded), and the one after ``end`` the sample after the last step.
"""

from __future__ import annotations

from typing import Any

from traces.events import BlockObserved, BlockState, Mark, StateDigest, ZoneObserved
from traces.reader import TraceReader

STATE_NAMES = {BlockState.ONLINE: "online", BlockState.OFFLINE: "offline", BlockState.GOING_OFFLINE: "going-offline"}
ZONE_NAMES = {0: "DMA", 1: "DMA32", 2: "Normal", 3: "Movable"}


def marked_observations(path: str) -> list[tuple[str, dict[str, Any]]]:
    """(mark text, {"blocks": ..., "zones": ...}) for every mark of a recorder trace, in the observation JSON's terms."""
    out: list[tuple[str, dict[str, Any]]] = []
    cur: dict[str, Any] | None = None
    with TraceReader(path) as r:
        for rec in r:
            ev = rec.event
            if isinstance(ev, Mark):
                cur = {"blocks": {}, "zones": []}
                out.append((ev.text, cur))
            elif cur is None:
                continue
            elif isinstance(ev, BlockObserved):
                if ev.state is not BlockState.ABSENT:
                    zones = ",".join(ZONE_NAMES[int(z)] for z in ev.valid_zones) or "none"
                    cur["blocks"][str(ev.block)] = {"state": STATE_NAMES[ev.state], "zones": zones, "node": ev.node}
            elif isinstance(ev, ZoneObserved):
                cur["zones"].append({"node": ev.node, "zone": ZONE_NAMES[int(ev.zone)], "present": ev.present, "managed": ev.managed})
            elif isinstance(ev, StateDigest):
                cur = None  # the full observation ends with its digest
    return out


def disagreements(trace_path: str, obs: dict[str, Any]) -> list[str]:
    """Where the recorder's observation at a mark differs from the host's sample of the same moment ([] when they agree)."""
    results = obs["results"]
    first = int(obs["scenario"].get("record_from", 0))
    marks = marked_observations(trace_path)
    expected = [f"step {i}" for i in range(first + 1, len(results))] + ["end"]
    names = [text.split(":", 1)[0] for text, _ in marks]
    if names != expected:
        return [f"marks {names} where the run had {expected}"]
    out = []
    for k, (text, seen) in enumerate(marks):
        sample = results[first + k]  # the state the previous step left (boot for the first recorded step)
        label = text.split(":", 1)[0]
        host_blocks = sample["blocks"]
        for b in sorted(set(host_blocks) | set(seen["blocks"]), key=int):
            if host_blocks.get(b) != seen["blocks"].get(b):
                out.append(f"at {label}: memory{b}: host {host_blocks.get(b)}, recorder {seen['blocks'].get(b)}")
        zones = [{key: z[key] for key in ("node", "zone", "present", "managed")} for z in sample["zones"] if z["zone"] in ZONE_NAMES.values()]
        if zones != seen["zones"]:
            out.append(f"at {label}: zones: host {zones}, recorder {seen['zones']}")
    return out
