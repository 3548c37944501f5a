"""Replay results as plain data: divergences, per-trace results, merged totals, text and JSON.

The JSON is stable (docs/replay-json.md):
``{"traces": [{"path", "profile", "kernel_release", "profile_reason", "events", "observations", "matched", "divergences": [...],
"divergence_count", "divergences_by_kind", "findings": [...], "finding_count",
"finding_signatures", "unknowable_answers", "stats", "verdict", "error"}], "totals": {...}}``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("decision", "accounting", "errno", "loss")


@dataclass(slots=True)
class Mismatch:
    """One field the model predicted differently from what the kernel showed."""

    field: str
    model: Any
    observed: Any


@dataclass(slots=True)
class Divergence:
    """The model and the real kernel disagree at one observation."""

    kind: str  # decision | accounting | errno | loss
    index: int  # event index in the trace
    seq: int
    ts: int
    event: str  # the observation, in the text form
    request: str | None  # the request it observed, in the text form
    mismatches: list[Mismatch]
    context: list[str] = field(default_factory=list)  # the events before it, oldest first
    numbers: list[dict[str, Any]] = field(default_factory=list)  # auto-movable stats of the decision
    zones: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """A readable report."""
        out = [f"{self.kind} divergence at event {self.index} (seq {self.seq}, t={self.ts / 1e9:.9f}s):", f"  observed: {self.event}"]
        if self.request:
            out.append(f"  request:  {self.request}")
        out += [f"  {m.field}: model {m.model!r}, kernel {m.observed!r}" for m in self.mismatches]
        for s in self.numbers:
            scope = "system" if s["nid"] == -1 else f"node {s['nid']}"
            out.append(
                f"  decision numbers ({scope}): movable {s['movable']} (incl. request {s['nr_pages']}), kernel_early {s['kernel_early']} "
                f"(other groups' requirement {s['req']}, own group kernel {s['group_kernel']}), "
                f"limit {s['limit']} -> {'Movable allowed' if s['result'] else 'kernel zone'}"
            )
        out += [f"  zone: {z}" for z in self.zones]
        out += [f"  group: {g}" for g in self.groups]
        if self.context:
            out.append("  context:")
            out += [f"    {c}" for c in self.context]
        return out


@dataclass(slots=True)
class TraceResult:
    """The outcome of replaying one trace."""

    path: str
    profile: str = ""
    kernel_release: str = ""  # from the trace's header
    profile_reason: str = ""  # why ``profile`` when it is not the release's own series (else empty)
    events: int = 0
    observations: int = 0
    matched: int = 0
    divergences: list[Divergence] = field(default_factory=list)  # the first --max-divergences
    divergence_count: int = 0
    divergences_by_kind: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)  # the first of each signature
    finding_count: int = 0
    finding_signatures: dict[str, int] = field(default_factory=dict)
    unknowable_answers: int = 0  # offlines the model cannot predict that failed: the kernel's result was taken as input
    skipped: list[str] = field(default_factory=list)  # comparisons not made: what the snapshot could not know
    stats: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # bad input: the trace could not be read to its end

    @property
    def profile_note(self) -> str:
        """Why the trace was replayed with its profile, when that is not its kernel's own (else empty)."""
        return f"{self.path}: kernel {self.kernel_release or '(none)'}: profile {self.profile}: {self.profile_reason}" if self.profile_reason else ""

    @property
    def failed(self) -> bool:
        return bool(self.divergence_count or self.finding_count or self.error)

    @property
    def verdict(self) -> str:
        state = "ERROR" if self.error else "FAILED" if self.failed else "PASSED"
        return f"{state}: {self.events} events, {self.matched} matched, {self.divergence_count} divergences, {self.finding_count} findings"

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__}
        d["divergences"] = [x.to_json() for x in self.divergences]
        d["verdict"] = self.verdict
        return d


def totals(results: list[TraceResult]) -> dict[str, Any]:
    """Merged figures over several traces."""
    sigs: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for r in results:
        sigs.update(r.finding_signatures)
        kinds.update(r.divergences_by_kind)
    return {
        "traces": len(results),
        "events": sum(r.events for r in results),
        "observations": sum(r.observations for r in results),
        "matched": sum(r.matched for r in results),
        "divergences": sum(r.divergence_count for r in results),
        "divergences_by_kind": dict(kinds),
        "findings": sum(r.finding_count for r in results),
        "finding_signatures": dict(sigs),
        "failed": sum(1 for r in results if r.failed and not r.error),
        "errors": sum(1 for r in results if r.error),
    }


def summary_table(results: list[TraceResult]) -> list[str]:
    """One line per trace and a totals line."""
    w = max([len(r.path) for r in results] + [5])
    lines = [f"{'trace':<{w}}  {'events':>10}  {'matched':>9}  {'diverg.':>7}  {'findings':>8}  verdict"]
    for r in results:
        v = "ERROR" if r.error else "FAILED" if r.failed else "PASSED"
        lines.append(f"{r.path:<{w}}  {r.events:>10}  {r.matched:>9}  {r.divergence_count:>7}  {r.finding_count:>8}  {v}")
    t = totals(results)
    lines.append(f"{'total':<{w}}  {t['events']:>10}  {t['matched']:>9}  {t['divergences']:>7}  {t['findings']:>8}")
    return lines
