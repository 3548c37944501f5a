"""How much each fuzz target has run: every campaign segment appends its executions to
``ARTIFACTS/campaigns.jsonl`` (rewritten atomically), and ``mhp fuzz --totals`` sums them with
the crash artifacts still failing, so a target's count adds up across sessions and restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traces.atomic import atomic_write

LOG = "campaigns.jsonl"


@dataclass(slots=True)
class Total:
    """The sum of one target's segments."""

    target: str
    execs: int = 0
    seconds: float = 0.0
    segments: int = 0
    first: str = ""
    last: str = ""
    signatures: set[str] = field(default_factory=set)  # every signature a segment reported
    open_crashes: int = 0  # artifacts the triage ledger has not seen pass

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "execs": self.execs, "seconds": round(self.seconds, 1), "segments": self.segments, "first": self.first,
                "last": self.last, "signatures": sorted(self.signatures), "open_crashes": self.open_crashes}  # fmt: skip


def record(artifacts: Path, target: str, mode: str, execs: int, seconds: float, signatures: Iterable[str]) -> None:
    """Append one segment to the log."""
    path = artifacts / LOG
    old = path.read_text() if path.exists() else ""
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "target": target, "mode": mode, "execs": execs, "seconds": round(seconds, 1),
             "signatures": sorted(signatures)}  # fmt: skip
    atomic_write(path, old + json.dumps(entry, sort_keys=True) + "\n")


def totals(artifacts: Path, pending: dict[str, int]) -> dict[str, Total]:
    """Per target: the log's sums, and ``pending`` (target -> artifacts not triaged as passing)."""
    out: dict[str, Total] = {}
    path = artifacts / LOG
    for n, line in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        try:
            e = json.loads(line)
            target, execs, seconds, sigs, at = str(e["target"]), int(e["execs"]), float(e["seconds"]), [str(s) for s in e["signatures"]], str(e["at"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{n}: not a campaign record ({err})") from None
        t = out.setdefault(target, Total(target))
        t.execs += execs
        t.seconds += seconds
        t.signatures.update(sigs)
        t.segments += 1
        t.first = t.first or at
        t.last = at
    for target, count in pending.items():
        out.setdefault(target, Total(target)).open_crashes = count
    return out


def lines(all_totals: dict[str, Total]) -> list[str]:
    """The totals as a table."""
    out = [f"{'target':<10} {'execs':>12} {'hours':>7} {'segments':>8} {'signatures':>10} {'open crashes':>12}  period"]
    for t in sorted(all_totals.values(), key=lambda t: t.target):
        out.append(f"{t.target:<10} {t.execs:>12,} {t.seconds / 3600:>7.2f} {t.segments:>8} {len(t.signatures):>10} {t.open_crashes:>12}  {t.first}..{t.last}")
    return out
