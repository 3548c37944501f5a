"""Cause fingerprints of fuzz findings, so that no new bug hides behind a known signature.

A cause is what a minimised reproducer shows beyond its signature:

- ``path``: the model's decision path at the hit (fuzz.path.decision_path: the event, the branch of
  the auto-movable policy, the zone, the checks and the accounting terms in play);
- ``tip``: for a ratio finding, the terms of the oracle's MOVABLE <= ratio% x KERNEL whose removal
  alone would make it hold (``block``: the block just decided; ``cma``: CMA pages counted as
  MOVABLE and off KERNEL);
- ``boot``: the boot-state features the reproducer needs (each one neutralised loses the hit);
- ``events``: the kinds of its requests;
- ``broken_by``: for a state finding (a kernel zone picked while the ratio is already broken), what
  broke it: ``boot``, or the event after which it stopped holding (fuzz.cause.breaker).

Two findings of one signature have the same cause iff their path (for a state finding: what broke
the ratio), and their accounted tip and boot features (those that are a term of the ratio of their
own: CMA) agree (the ``block`` tip tells a decision that broke the ratio from one that met it broken,
and is kept as information); the other boot features and the event
kinds describe the reproducer's shape (each is one way of supplying memory or state the path and the
tip already show). A hit is minimised keeping its branch and zone and adding no accounting term
(fuzz.path.within), so the minimiser cannot trade its cause for another one (a group shrunk to one
page is a cause of its own). ``python -m fuzz.cause corpus/regressions/*.json`` recomputes the
``cause`` of committed regressions.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuzz.check import Hit, Mode, check_events, decode, shadowing
from fuzz.minimize import Minimizer, Result
from fuzz.mutator import MODEL_INPUTS
from fuzz.path import decision_path, pathed, plain, within
from replay.model.findings import Finding
from replay.model.kernel import Kernel
from replay.model.machine import MEM_ONLINE, ZONE_MOVABLE, Machine
from replay.model.profiles import get_profile
from traces.atomic import atomic_write
from traces.events import BootBlocks, BootGroup, BootZone, ZoneType

RATIO_ORACLES = ("AM-RATIO", "AM-RATIO-NODE")
ACCOUNTED = ("cma",)  # boot features and tips that are terms of the ratio of their own
BREAKING_TERMS = ("under", "cma")  # the terms by which a decision can place more than the ratio it checked


@dataclass(frozen=True, slots=True)
class Cause:
    """What distinguishes one cause of a signature from another (see the module docstring)."""

    path: str
    tip: tuple[str, ...]
    boot: tuple[str, ...]
    events: tuple[str, ...]
    broken_by: str = ""  # a state finding: what broke the ratio before the hit's decision (boot, or an event's path)

    def key(self) -> tuple[Any, ...]:
        """What two causes of one signature are compared by: a state finding's decision is not its
        cause (any branch that picks a kernel zone meets the broken ratio), what broke the ratio is."""
        return self.broken_by or essential(self.path), tuple(t for t in self.tip if t in ACCOUNTED), tuple(f for f in self.boot if f in ACCOUNTED)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "tip": list(self.tip), "boot": list(self.boot), "events": list(self.events)}
        if self.broken_by:
            out["broken_by"] = self.broken_by
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cause:
        return cls(str(d["path"]), tuple(d["tip"]), tuple(d["boot"]), tuple(d["events"]), str(d.get("broken_by", "")))

    def describe(self) -> str:
        broke = f"; ratio broken by {self.broken_by}" if self.broken_by else ""
        return f"path {self.path}{broke}; tipped by {'+'.join(self.tip) or '-'}; boot {'+'.join(self.boot) or '-'}; events {'+'.join(self.events)}"


# --- boot-state features and their neutralisers ---------------------------------------------------------------


def _no_cma(events: list[Any]) -> list[Any]:
    return [e._replace(cma=0) if type(e) is BootZone else e for e in events]


def _no_offline_boot_blocks(events: list[Any]) -> list[Any]:
    return [e for e in events if not (type(e) is BootBlocks and e.state is not MEM_ONLINE)]


def _no_boot_groups(events: list[Any]) -> list[Any]:
    return [e._replace(mgid=-1) if type(e) is BootBlocks else e for e in events if type(e) is not BootGroup]


def _no_boot_movable(events: list[Any]) -> list[Any]:
    return [
        e._replace(spanned=0, present=0, present_early=0, cma=0) if type(e) is BootZone and e.zone is ZoneType.MOVABLE else e
        for e in events
        if not (type(e) is BootBlocks and e.zone is ZoneType.MOVABLE)
    ]


def boot_features(m: Machine) -> dict[str, Callable[[list[Any]], list[Any]]]:
    """The boot-state features of a booted machine, each with the change of the events that removes it."""
    zones = [z for n in m.nodes.values() for z in n.zones]
    out: dict[str, Callable[[list[Any]], list[Any]]] = {}
    if any(z.cma_pages for z in zones if z.idx is not ZONE_MOVABLE):
        out["cma"] = _no_cma
    if any(z.present_early_pages for z in zones if z.idx is ZONE_MOVABLE):  # kernelcore=/movablecore=
        out["movable-at-boot"] = _no_boot_movable
    if m.groups:
        out["boot-groups"] = _no_boot_groups
    if any(b.state is not MEM_ONLINE for b in m.blocks.values()):
        out["offline-boot-blocks"] = _no_offline_boot_blocks
    if sum(1 for n in m.nodes.values() if n.node_present_pages) > 1:
        out["multi-node"] = lambda evs: evs  # not removable by a field change: kept when present
    return out


def booted(events: list[Any], profile: str) -> Machine:
    """The machine after the boot records of ``events`` (SnapshotError for an impossible one)."""
    k = Kernel(get_profile(profile), oracles=False)
    for ev in events:
        if ev.KIND != "boot":
            break
        k.apply(ev)
    return k.m


# --- the oracle's terms ---------------------------------------------------------------------------------------


def _int(v: object) -> int:
    """A finding's context number (the oracles put ints there)."""
    if not isinstance(v, int):
        raise TypeError(f"expected an int in the finding's context, got {v!r}")
    return v


def ratio_tip(m: Machine, f: Finding) -> tuple[str, ...]:
    """The terms of a ratio finding's MOVABLE <= ratio% x KERNEL whose removal alone makes it hold:
    the block just decided, CMA (as MOVABLE and off KERNEL). The other MOVABLE pages are not one:
    how much memory a reproducer needs before its decision is its size, not its cause."""
    ctx = f.context
    movable, kernel, ratio, block = _int(ctx["movable"]), _int(ctx["kernel"]), _int(ctx["ratio"]), _int(ctx["block"])
    mem = m.blocks.get(block)
    node = None if f.oracle == "AM-RATIO" or mem is None else mem.nid
    cma = sum(z.cma_pages for n in m.nodes.values() if n.online and node in (None, n.nid) for z in n.zones[:ZONE_MOVABLE])
    own = mem.present_pages if mem is not None and mem.zone is not None and mem.zone.idx is ZONE_MOVABLE else 0

    def holds(mov: int, kern: int) -> bool:
        return mov * 100 <= ratio * kern

    tip = []
    if own and holds(movable - own, kernel):
        tip.append("block")
    if cma and holds(movable - cma, kernel + cma):
        tip.append("cma")
    return tuple(tip)


def essential(path: str, checks: bool = True) -> str:
    """A decision path with its BREAKING_TERMS only (the group credits the policy summed are
    there whenever a reproducer needs a virtio-mem device's memory, whatever its cause), and
    without its checks unless ``checks``; other paths as they are."""
    parts = path.split(":")
    if len(parts) != 4:
        return path
    terms = ",".join(t for t in parts[3].split(",") if t in BREAKING_TERMS) or "-"
    return ":".join([*parts[:2], *parts[2:3] * checks, terms])


def breaker(m: Machine, ev: Any, out: Any) -> str:
    """What an event that broke the ratio did: its decision's branch, zone and BREAKING_TERMS
    (essential; which scopes the policy asked is not what broke it), or ``EVENT:ok|fail``."""
    return essential(decision_path(m, ev, out), checks=False)


def finding_at(events: list[Any], mode: Mode, hit: Hit) -> tuple[Machine, Finding | None, dict[int | None, str]]:
    """The model under test after the hit's event, the finding of the hit's signature there, and
    per ratio scope (None: the system) what last broke MOVABLE <= ratio% x KERNEL (``boot``, or the
    event's name or decision path) before the hit ('' where it holds)."""
    k = Kernel(get_profile(mode.profile), variants=frozenset({mode.variant}) if mode.variant else frozenset())
    assert k.oracles is not None
    out = None
    broken: dict[int | None, str] = {}
    for ev in events[: hit.index + 1]:
        if ev.KIND not in ("boot", "request", "inject"):
            continue
        out = k.apply(ev)
        ratio = k.m.params.auto_movable_ratio
        for scope in (None, *k.m.nodes):
            movable, kernel = k.oracles._ratio_terms(scope)  # the oracle's own terms
            if movable * 100 <= ratio * kernel:
                broken[scope] = ""
            elif not broken.get(scope):
                broken[scope] = "boot" if ev.KIND == "boot" else breaker(k.m, ev, out)
    f = None if out is None else next((x for x in out.findings if x.signature == hit.signature), None)
    return k.m, f, broken


def needs(other: list[Any], events: list[Any], mode: Mode, signature: str, ignore: frozenset[str]) -> bool:
    """Whether ``events`` needs what ``other`` lacks: ``other`` (the events with a feature removed)
    is the same, or raises ``signature`` nowhere (past any signatures it hits first)."""
    if other == events:
        return True
    try:
        shadowing(other, mode, signature, ignore)
    except ValueError:  # the signature is gone (or the snapshot impossible without the feature)
        return True
    return False


def fingerprint(events: list[Any], mode: Mode, signature: str, ignore: frozenset[str] = frozenset()) -> Cause:
    """The cause of ``signature`` in (minimised) ``events``, past the signatures of ``ignore`` it
    hits first; ValueError if it does not hit ``signature``."""
    ignore = plain(ignore) - {signature}
    hit = check_events(events, mode, ignore)
    if hit is None or hit.signature != signature:
        raise ValueError(f"the input does not produce {signature} (it hits {hit.signature if hit else 'nothing'})")
    m, f, broken = finding_at(events, mode, hit)
    tip: tuple[str, ...] = ()
    broken_by = ""
    if f is not None and f.oracle in RATIO_ORACLES:
        tip = ratio_tip(m, f)
        if f.key == ("state",):  # the ratio was broken before this decision: by what
            mem = m.blocks.get(_int(f.context["block"]))
            broken_by = broken.get(None if f.oracle == "AM-RATIO" or mem is None else mem.nid, "")
    boot = [name for name, neutral in boot_features(booted(events, mode.profile)).items() if needs(neutral(events), events, mode, signature, ignore)]
    kinds = sorted({type(e).__name__ for e in events if e.KIND in ("request", "inject")})
    return Cause(hit.path, tip, tuple(boot), tuple(kinds), broken_by)


# --- known causes ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Known:
    """The causes of the signatures in a regressions directory (signature -> causes; one without
    a stored cause is known on every path)."""

    causes: dict[str, list[Cause]]
    files: dict[str, int]  # signature -> regressions of it

    @classmethod
    def load(cls, regressions: Path) -> Known:
        causes: dict[str, list[Cause]] = {}
        files: dict[str, int] = {}
        for meta_path in sorted(regressions.glob("*.json")):
            meta = json.loads(meta_path.read_text())
            sig = meta["signature"]
            files[sig] = files.get(sig, 0) + 1
            causes.setdefault(sig, [])
            if "cause" in meta:
                causes[sig].append(Cause.from_json(meta["cause"]))
        return cls(causes, files)

    def ignores(self) -> set[str]:
        """The harness's ignore entries: ``SIG @ PATH`` for each known cause, a plain ``SIG`` where
        a regression has no cause stored."""
        out: set[str] = set()
        for sig, causes in self.causes.items():
            if len(causes) < self.files[sig]:
                out.add(sig)
            out.update(pathed(sig, c.path) for c in causes)
        return out

    def match(self, signature: str, cause: Cause) -> bool:
        return any(c.key() == cause.key() for c in self.causes.get(signature, ()))

    def add(self, signature: str, cause: Cause) -> None:
        self.causes.setdefault(signature, []).append(cause)
        self.files[signature] = self.files.get(signature, 0) + 1

    def name(self, signature: str, base: str, taken: Callable[[str], bool]) -> str:
        """The file name of a new regression of ``signature``: ``base`` for the first, else
        ``base__cause-N`` (N: the next number not ``taken``)."""
        if not self.files.get(signature) and not taken(base):
            return base
        n = self.files.get(signature, 0) + 1
        while taken(f"{base}__cause-{n}"):
            n += 1
        return f"{base}__cause-{n}"


def known_ignores(regressions: Path) -> set[str]:
    """The ignore entries of a campaign whose known regressions are ``regressions``."""
    return Known.load(regressions).ignores()


class CauseMinimizer(Minimizer):
    """A Minimizer that also keeps the hit's branch and zone and adds no accounting term to its path."""

    def __init__(self, mode: Mode, signature: str, origin: str, *, max_seconds: float, ignore: frozenset[str]) -> None:
        super().__init__(mode, signature, max_seconds=max_seconds, ignore=ignore)
        self.origin = origin

    def keeps(self, events: list[Any]) -> bool:
        h = self.hit(events)
        return h is not None and h.signature == self.signature and within(h.path, self.origin)


def classify(events: list[Any], hit: Hit, mode: Mode, known: Known, ignore: set[str], minimize_seconds: float) -> tuple[Result | None, Cause | None, bool]:
    """Minimise a hit and fingerprint the result: (result, cause, new). ``ignore`` (the campaign's
    entries) learns the hit's path and the cause's, so the harness skips them from now on. A hit
    after the input's first of its signature (on a path ``ignore`` skips) is that one's
    consequence (the ratio it broke stays broken): (None, None, False), not minimised."""
    sig = hit.signature
    events = [e for e in events if e.KIND in MODEL_INPUTS]  # observations and marks cannot matter: minimise without them
    first = check_events(events, mode, plain(ignore) - {sig})
    ignore.add(pathed(sig, hit.path))
    if first is None or first.signature != sig or not within(first.path, hit.path):
        return None, None, False
    result = CauseMinimizer(mode, sig, hit.path, max_seconds=minimize_seconds, ignore=plain(ignore) - {sig}).run(events)
    cause = fingerprint(result.events, mode, sig, frozenset(ignore))
    ignore.add(pathed(sig, cause.path))
    return result, cause, not known.match(sig, cause)


# --- recomputing the committed regressions' causes ------------------------------------------------------------


def recompute(paths: Iterable[Path]) -> list[tuple[Path, Cause]]:
    """Store the cause of each regression (``NAME.json`` beside ``NAME.mhpt``) in its ``cause`` field."""
    done = []
    for meta_path in paths:
        meta = json.loads(meta_path.read_text())
        events = decode(meta_path.with_suffix(".mhpt").read_bytes())
        if events is None:
            raise ValueError(f"{meta_path.with_suffix('.mhpt')}: not a valid trace")
        mode = Mode(meta["profile"], meta["variant"], meta["diff"])
        cause = fingerprint(events, mode, meta["signature"], frozenset(meta.get("ignore", [])))
        meta["cause"] = cause.to_json()
        atomic_write(meta_path, json.dumps(meta, indent=1) + "\n")
        done.append((meta_path, cause))
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz.cause", description="recompute the cause fingerprint of regressions (their .json files)")
    p.add_argument("meta", nargs="+", type=Path, help="regression metadata files, e.g. corpus/regressions/*.json")
    args = p.parse_args(argv)
    try:
        for path, cause in recompute(args.meta):
            print(f"{path}: {cause.describe()}")
    except (OSError, ValueError, KeyError) as e:
        print(f"python -m fuzz.cause: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
