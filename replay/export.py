"""``mhp export --format chrome``: Chrome/Perfetto trace-event JSON of a trace replayed by the model.

Counter tracks carry every zone's present pages; each request and mark is an instant event, so
hotplug timelines open in ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import json
import os
from typing import Any, TextIO

from replay.replayer import walk
from traces.atomic import atomic_path
from traces.events import StateDigest
from traces.text import CLASS_NAMES, format_record

PID = 1


def export_chrome(path: str, out: str, profile: str | None = None) -> int:
    """Write the trace-event JSON atomically; returns the number of trace events written."""
    with atomic_path(out) as tmp, open(tmp, "w") as f:
        return write_chrome(path, f, profile)


def write_chrome(path: str, f: TextIO, profile: str | None) -> int:
    """The trace-event JSON of a trace, to an open text file; returns the number of trace events."""
    f.write('{"displayTimeUnit": "ns", "traceEvents": [\n')
    n = 0

    def emit(obj: dict[str, Any]) -> None:
        nonlocal n
        f.write(("" if n == 0 else ",\n") + json.dumps(obj, separators=(",", ":")))
        n += 1

    emit({"ph": "M", "pid": PID, "name": "process_name", "args": {"name": os.path.basename(path)}})
    last: dict[str, int] = {}
    for _, rec, k in walk(path, profile):
        ev = rec.event
        us = rec.ts / 1000
        kind = getattr(ev, "KIND", "")
        if kind in ("request", "mark", "inject") and type(ev) is not StateDigest:
            name = CLASS_NAMES.get(type(ev), "raw")
            emit({"ph": "i", "s": "g" if kind == "mark" else "p", "pid": PID, "tid": 1, "ts": us, "name": name, "args": {"record": format_record(rec)}})
        if kind not in ("request", "boot"):
            continue
        for node in k.m.nodes.values():
            if not node.online:
                continue
            for z in node.zones:
                key = f"node{node.nid} {z.idx.label}"
                if last.get(key) != z.present_pages:
                    last[key] = z.present_pages
                    emit({"ph": "C", "pid": PID, "ts": us, "name": f"{key} present pages", "args": {"pages": z.present_pages}})
    f.write("\n]}\n")
    return n
