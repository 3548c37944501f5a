"""The decision path of a fuzz hit: which branch of the auto-movable policy decided the block the
finding is about, the checks it made and the accounting terms in play. Cheap (read from the
outcome and the machine after the event), so the harness can skip known (signature, path) pairs.

An ignore entry ``SIG @ PATH`` skips ``SIG`` only where it arises on ``PATH``; a plain ``SIG``
skips it everywhere.
"""

from __future__ import annotations

import functools
from typing import Any

from replay.model.machine import MMOP_ONLINE, ZONE_MOVABLE, Machine, MemoryBlock
from replay.model.outcome import Decision, Outcome

SEP = " @ "


def pathed(signature: str, path: str) -> str:
    """The ignore entry that skips ``signature`` on ``path`` only."""
    return f"{signature}{SEP}{path}"


def plain(ignore: frozenset[str] | set[str]) -> frozenset[str]:
    """The signatures of ``ignore`` with their paths dropped (every path of them ignored)."""
    return frozenset(e.partition(SEP)[0] for e in ignore)


@functools.lru_cache(maxsize=64)
def known_paths(ignore: frozenset[str]) -> dict[str, frozenset[str]]:
    """Signature -> the paths ``ignore`` skips it on (only signatures given with paths)."""
    out: dict[str, set[str]] = {}
    for e in ignore:
        sig, sep, path = e.partition(SEP)
        if sep:
            out.setdefault(sig, set()).add(path)
    return {s: frozenset(p) for s, p in out.items()}


def group_kind(m: Machine, mem: MemoryBlock | None) -> str:
    """The group a block belongs to, as auto_movable_zone_for_pfn (6.1) tells them apart: none,
    static (a DIMM), dynamic (one block per unit, virtio-mem SBM) or dynamic-unit (BBM)."""
    g = None if mem is None else mem.group
    if g is None:
        return "none"
    if not g.is_dynamic:
        return "static"
    return "dynamic" if g.pages == m.block_pages else "dynamic-unit"


def decision_branch(m: Machine, d: Decision) -> str:
    """The branch of zone_for_pfn_range / auto_movable_zone_for_pfn (6.1) that chose ``d.zone``."""
    if not d.policy_decided:  # the online type chose (or, for MMOP_ONLINE, the contig-zones policy)
        return "contig-zones" if d.online_type is MMOP_ONLINE else f"type-{d.online_type.name.lower()}"
    mem = m.blocks.get(d.block)
    kind = group_kind(m, mem)
    if d.stats:
        return kind
    if not m.params.auto_movable_ratio:
        return "ratio-0"
    return f"{kind}-kernel"  # a static group holding kernel pages, or a unit with a section in a kernel zone


def terms_in_play(m: Machine, d: Decision) -> list[str]:
    """The accounting terms auto_movable_can_online_movable (6.1) had non-zero for ``d``: a
    question smaller than the memory it decides (``under``: less than a block, or a static group
    registered smaller than the blocks it holds), other dynamic groups' requirement and movable
    pages (``req``, ``gmov``), the group's own kernel pages (``gkern``), CMA pages in the scope."""
    out: list[str] = []
    st = d.stats
    if not st:  # no ratio check made: no term in play
        return out
    mem = m.blocks.get(d.block)
    g = None if mem is None else mem.group
    if any(s.nr_pages < m.block_pages for s in st) or (g is not None and not g.is_dynamic and g.pages < len(g.blocks) * m.block_pages):
        out.append("under")
    for name in ("req", "gmov", "group_kernel"):
        if any(getattr(s, name) for s in st):
            out.append("gkern" if name == "group_kernel" else name)
    scopes = {s.nid for s in st}
    if scopes and any(z.cma_pages for n in m.nodes.values() if n.online and (-1 in scopes or n.nid in scopes) for z in n.zones[:ZONE_MOVABLE]):
        out.append("cma")
    return out


def decision_path(m: Machine, ev: Any, out: Outcome, block: object = None) -> str:
    """``branch:zone:checks:terms`` of the decision about ``block`` (the finding's; the event's
    last decision if the finding names none; the same whether a user's online or a driver's
    auto-online asked for it), or ``EVENT:ok|fail`` for an event deciding no zone. The checks are
    the ones that failed (``global-``, ``node-``), ``pass`` if all passed, ``-`` if none was made:
    which scopes the policy asked that passed does not change its answer."""
    d = next((x for x in reversed(out.decisions) if x.block == block), out.decisions[-1] if out.decisions else None)
    if d is None:
        return f"{type(ev).__name__}:{'fail' if out.rc < 0 else 'ok'}"
    checks = ",".join(("global" if s.nid < 0 else "node") + "-" for s in d.stats if not s.result) or ("pass" if d.stats else "-")
    return f"{decision_branch(m, d)}:{d.zone.label}:{checks}:{','.join(terms_in_play(m, d)) or '-'}"


def within(path: str, origin: str) -> bool:
    """Whether ``path`` is ``origin``'s branch and zone with no accounting term ``origin`` lacks
    (its checks may differ): what a minimised reproducer may keep of the hit it came from."""
    a, b = path.split(":"), origin.split(":")
    if len(a) != 4 or len(b) != 4:
        return path == origin
    return a[:2] == b[:2] and set(a[3].split(",")) - {"-"} <= set(b[3].split(",")) - {"-"}
