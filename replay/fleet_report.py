"""The fleet report: per-trace summaries merged incrementally into totals per kernel release, per
profile, per finding signature and per divergence kind, with the first example trace of each.

Memory is bounded by the number of distinct signatures, releases and profiles (plus at most
``MAX_ERRORS_KEPT`` unreadable traces), never by the number of traces. The JSON is stable
(docs/replay-json.md, "fleet report").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_ERRORS_KEPT = 1000
_FIGURES = ("traces", "events", "observations", "matched", "divergences", "findings", "failed", "errors")


def summarise(result: dict[str, Any], release: str, digest: str) -> dict[str, Any]:
    """A trace's summary (what the fleet keeps of it) from its ``TraceResult.to_json()``."""
    findings: dict[str, dict[str, Any]] = {}
    for f in result["findings"]:  # the first finding of each signature, in trace order
        findings.setdefault(f["signature"], {"event_index": f["event_index"], "message": f["message"]})
    divergences: dict[str, dict[str, Any]] = {}
    for d in result["divergences"]:
        divergences.setdefault(d["kind"], {"event_index": d["index"], "event": d["event"]})
    return {
        "path": result["path"],
        "digest": digest,
        "release": release,
        "profile": result["profile"],
        "events": result["events"],
        "observations": result["observations"],
        "matched": result["matched"],
        "divergence_count": result["divergence_count"],
        "divergences_by_kind": result["divergences_by_kind"],
        "first_divergences": divergences,
        "finding_count": result["finding_count"],
        "finding_signatures": result["finding_signatures"],
        "first_findings": findings,
        "error": result["error"],
        "seconds": result["stats"].get("seconds", 0.0),
    }


@dataclass(slots=True)
class Group:
    """Figures of the traces of one kernel release or one profile."""

    figures: Counter[str] = field(default_factory=Counter)
    signatures: Counter[str] = field(default_factory=Counter)  # findings per signature
    kinds: Counter[str] = field(default_factory=Counter)  # divergences per kind

    def add(self, s: dict[str, Any]) -> None:
        f = self.figures
        f["traces"] += 1
        f["events"] += s["events"]
        f["observations"] += s["observations"]
        f["matched"] += s["matched"]
        f["divergences"] += s["divergence_count"]
        f["findings"] += s["finding_count"]
        f["failed"] += bool(not s["error"] and (s["divergence_count"] or s["finding_count"]))
        f["errors"] += bool(s["error"])
        self.signatures.update(s["finding_signatures"])
        self.kinds.update(s["divergences_by_kind"])

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: self.figures[k] for k in _FIGURES},
            "divergences_by_kind": dict(sorted(self.kinds.items())),
            "finding_signatures": dict(sorted(self.signatures.items())),
        }


@dataclass(slots=True)
class Tally:
    """One finding signature or divergence kind across the fleet: count, traces, first example."""

    count: int = 0
    traces: int = 0
    first: tuple[int, dict[str, Any]] | None = None  # (input index, example)

    def add(self, index: int, n: int, example: dict[str, Any]) -> None:
        self.count += n
        self.traces += 1
        if self.first is None or index < self.first[0]:
            self.first = (index, example)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "traces": self.traces, "first": self.first[1] if self.first else None}


@dataclass(slots=True)
class FleetReport:
    """Trace summaries merged as they arrive, in any order; first examples are by input order."""

    total: Group = field(default_factory=Group)
    releases: dict[str, Group] = field(default_factory=dict)
    profiles: dict[str, Group] = field(default_factory=dict)
    signatures: dict[str, Tally] = field(default_factory=dict)
    kinds: dict[str, Tally] = field(default_factory=dict)
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (input index, path, error), the first MAX_ERRORS_KEPT
    run: dict[str, Any] = field(default_factory=dict)  # how it ran: not part of the comparison with -j 1

    def add(self, index: int, s: dict[str, Any]) -> None:
        """Merge the summary of input trace ``index``."""
        self.total.add(s)
        self.releases.setdefault(s["release"] or "unknown", Group()).add(s)
        self.profiles.setdefault(s["profile"] or "unknown", Group()).add(s)
        for sig, n in s["finding_signatures"].items():
            first = s["first_findings"].get(sig, {})
            example = {"path": s["path"], "release": s["release"], **first}
            self.signatures.setdefault(sig, Tally()).add(index, n, example)
        for kind, n in s["divergences_by_kind"].items():
            first = s["first_divergences"].get(kind, {})
            self.kinds.setdefault(kind, Tally()).add(index, n, {"path": s["path"], "release": s["release"], **first})
        if s["error"]:
            self.errors.append((index, s["path"], s["error"]))
            if len(self.errors) > MAX_ERRORS_KEPT:
                self.errors.remove(max(self.errors))

    @property
    def exit_code(self) -> int:
        """As ``mhp replay``: 2 a trace could not be read, 1 a divergence or finding, 0 clean."""
        f = self.total.figures
        return 2 if f["errors"] else 1 if f["failed"] else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "totals": self.total.to_json(),
            "by_release": {k: g.to_json() for k, g in sorted(self.releases.items())},
            "by_profile": {k: g.to_json() for k, g in sorted(self.profiles.items())},
            "signatures": {k: t.to_json() for k, t in sorted(self.signatures.items())},
            "divergence_kinds": {k: t.to_json() for k, t in sorted(self.kinds.items())},
            "errors": [{"path": p, "error": e} for _, p, e in sorted(self.errors)],
            "run": self.run,
        }

    def lines(self) -> list[str]:
        """The text summary."""
        t = self.total.figures
        out = [
            f"fleet: {t['traces']:,} traces, {t['events']:,} events, {t['matched']:,} of {t['observations']:,} observations matched, "
            f"{t['divergences']:,} divergences, {t['findings']:,} findings; {t['failed']:,} traces failed, {t['errors']:,} unreadable"
        ]
        for title, groups in (("kernel release", self.releases), ("profile", self.profiles)):
            w = max([len(k) for k in groups] + [len(title)])
            out += ["", f"by {title}:", f"  {title:<{w}}  {'traces':>8}  {'events':>12}  {'diverg.':>8}  {'findings':>8}  {'failed':>7}  {'errors':>6}"]
            for k, g in sorted(groups.items()):
                f = g.figures
                figures = f"{f['traces']:>8,}  {f['events']:>12,}  {f['divergences']:>8,}  {f['findings']:>8,}  {f['failed']:>7,}  {f['errors']:>6,}"
                out.append(f"  {k:<{w}}  {figures}")
        for title, tallies, what in (("finding signatures", self.signatures, "findings"), ("divergence kinds", self.kinds, "divergences")):
            if not tallies:
                out += ["", f"{title}: none"]
                continue
            w = max(len(k) for k in tallies)
            out += ["", f"{title}:", f"  {'':<{w}}  {what:>11}  {'traces':>8}  first example"]
            for k, tally in sorted(tallies.items()):
                ex = tally.first[1] if tally.first else {}
                detail = ex.get("message") or ex.get("event") or ""
                at = f" event {ex['event_index']}" if "event_index" in ex else ""
                out.append(f"  {k:<{w}}  {tally.count:>11,}  {tally.traces:>8,}  {ex.get('path', '')}{at}: {detail}")
        if self.errors:
            more = t["errors"] - len(self.errors)
            out += ["", f"traces that could not be read ({t['errors']:,}):"] + [f"  {e}" for _, _, e in sorted(self.errors)]
            if more:
                out.append(f"  ... and {more:,} more (each in its result file under --results)")
        if self.run:
            r = self.run
            out += [
                "",
                f"run: {r['cluster']} ({r['workers']} workers, {r['threads']} threads): {r['replayed']:,} traces replayed, {r['skipped']:,} skipped "
                f"(already in --results), {r['seconds']:.1f} s, {r['events_per_s']:,} events/s",
            ]
        return out
