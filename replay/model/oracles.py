"""Invariant oracles run after every event; each has a stable id and reports plain findings.

| id                | invariant |
|-------------------|-----------|
| ACCT-UNDERFLOW    | no u64 counter update wraps below 0 (raised by the accounting helper) |
| ACCT-OVERFLOW     | no u64 counter update wraps above 2^64-1 (raised by the accounting helper) |
| ACCT-ZONE-PRESENT | zone present == boot present + pages of blocks onlined into it - pages offlined |
| ACCT-NODE-PRESENT | node present == sum of its zones' present |
| ACCT-GROUP        | group kernel/movable counters == pages of its online blocks by zone kind |
| ACCT-EARLY        | present_early_pages <= present_pages |
| ZONE-SPAN         | an online block lies inside its zone's span, and the zone inside its node's span |
| AM-RATIO          | at each auto-movable decision MOVABLE <= ratio% x (early kernel + dynamic groups' kernel) |
| AM-RATIO-NODE     | the same per node, when auto_movable_numa_aware |
| AM-STATIC-MIXED   | the policy never leaves a static group (DIMM) partly Movable, partly kernel |
| STATE-ERRNO       | a state/online store returns 0 iff the block ends in the requested state by this request |
"""

from __future__ import annotations

from collections.abc import Callable

from replay.model.findings import Finding
from replay.model.machine import ATTR_STATE, MEM_ONLINE, MMOP_OFFLINE, ZONE_MOVABLE, Machine, MemoryGroup, Zone
from replay.model.outcome import BlockChange, Outcome
from traces.events import (
    BootBlocks,
    BootZone,
    Event,
    OfflineBlock,
    OnlineBlock,
    ZoneType,
)

ORACLE_IDS = (
    "ACCT-UNDERFLOW",
    "ACCT-OVERFLOW",
    "ACCT-ZONE-PRESENT",
    "ACCT-NODE-PRESENT",
    "ACCT-GROUP",
    "ACCT-EARLY",
    "ZONE-SPAN",
    "AM-RATIO",
    "AM-RATIO-NODE",
    "AM-STATIC-MIXED",
    "STATE-ERRNO",
)


class Oracles:
    """All invariant checks; keeps the shadow counters it needs, derived only from outcomes."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.zone_present: dict[tuple[int, int], int] = {}
        self.group_present: dict[int, list[int]] = {}  # mgid -> [kernel, movable]
        self.explicit_groups: set[int] = set()  # static groups with a user-chosen online type
        self.dynamic_kernel: dict[int | None, int] = {}  # node (None: all) -> kernel pages of dynamic groups

    def check(self, index: int, ev: Event, out: Outcome) -> None:
        """Run the oracles an event can concern (findings go into ``out.findings``): the accounting ones on the
        zones, nodes and groups its block changes touched, the policy ones on its zone decisions, STATE-ERRNO on
        a block store. An event that changed no block and decided no zone concerns none of them."""
        state_store = isinstance(ev, (OnlineBlock, OfflineBlock))
        if out.changes or out.decisions or state_store or isinstance(ev, (BootZone, BootBlocks)):
            self._check(index, ev, out, state_store)
        if len(out.findings) > 1:  # one finding per signature and event (an add onlines many blocks)
            first: dict[str, Finding] = {}
            for f in out.findings:
                first.setdefault(f.signature, f)
            out.findings[:] = first.values()

    def _check(self, index: int, ev: Event, out: Outcome, state_store: bool) -> None:
        emit = out.findings.append
        if isinstance(ev, BootZone):
            self.zone_present[(ev.node, int(ev.zone))] = ev.present
        elif isinstance(ev, BootBlocks) and ev.mgid >= 0 and ev.state is MEM_ONLINE:
            movable = ev.zone is ZONE_MOVABLE
            pages = ev.count * self.m.block_pages
            self.group_present.setdefault(ev.mgid, [0, 0])[movable] += pages
            if not movable and self.m.groups[ev.mgid].is_dynamic:
                self._add_dynamic_kernel(ev.node, pages)
        if out.changes:
            self._account_changes(out.changes, index, emit)
        if out.decisions:
            self._check_decisions(out, index, emit)
        if state_store:
            assert isinstance(ev, (OnlineBlock, OfflineBlock))
            self._check_state_errno(ev, out, index, emit)

    def _check_decisions(self, out: Outcome, index: int, emit: Callable[[Finding], None]) -> None:
        for d in out.decisions:
            mem = self.m.blocks.get(d.block)
            if mem is None or mem.group is None or mem.group.is_dynamic:
                continue
            if not d.policy_decided:
                self.explicit_groups.add(mem.group.mgid)
        terms: dict[int | None, tuple[int, int]] = {}  # the state after the event: one walk per scope
        for d in out.decisions:
            if d.policy_decided:
                self._check_ratio(d.block, d.zone, index, emit, terms)

    # -- accounting --------------------------------------------------------------------------------

    def _account_changes(self, changes: list[BlockChange], index: int, emit: Callable[[Finding], None]) -> None:
        """Shadow counters from the event's block changes; ZONE-SPAN on each onlined block; then the accounting
        oracles on the zones (in the order the changes touched them), their nodes (once each) and the groups."""
        m = self.m
        nodes, blocks, block_pages, zone_present = m.nodes, m.blocks, m.block_pages, self.zone_present
        zones: dict[Zone, None] = {}
        groups: dict[MemoryGroup, None] = {}
        for ch in changes:
            pages = ch.pages
            if not pages:
                continue
            node = nodes[ch.nid]
            zone = node.zones[ch.zone]
            zones[zone] = None
            key = (ch.nid, int(ch.zone))
            zone_present[key] = zone_present.get(key, 0) + pages
            if ch.mgid >= 0:
                group = m.groups.get(ch.mgid)
                if group is not None:
                    groups[group] = None
                    shadow = self.group_present.setdefault(ch.mgid, [0, 0])
                    movable = ch.zone is ZONE_MOVABLE
                    shadow[1 if movable else 0] += pages
                    if group.is_dynamic and not movable:
                        self._add_dynamic_kernel(ch.nid, pages)
            if pages > 0:
                mem = blocks.get(ch.block)
                if mem is None:
                    continue
                start, end, zone_start, zone_end = mem.start_pfn, mem.start_pfn + block_pages, zone.zone_start_pfn, zone.zone_end_pfn
                if not (zone_start <= start and end <= zone_end) or not (
                    node.node_start_pfn <= zone_start and zone_end <= node.node_start_pfn + node.node_spanned_pages
                ):
                    emit(
                        Finding(
                            "ZONE-SPAN",
                            index,
                            f"memory{ch.block} [{start}, {end}) outside {zone} span [{zone_start}, {zone_end}) or zone outside node span",
                            (ch.zone.label,),
                            {"block": ch.block},
                        )
                    )
        checked_nodes: set[int] = set()
        for z in zones:
            self._check_zone(z, index, emit, z.nid not in checked_nodes)
            checked_nodes.add(z.nid)
        for g in groups:
            self._check_group(g, index, emit)

    def _check_group(self, g: MemoryGroup, index: int, emit: Callable[[Finding], None]) -> None:
        shadow = self.group_present.get(g.mgid, [0, 0])
        if (g.present_kernel_pages, g.present_movable_pages) != tuple(shadow):
            emit(
                Finding(
                    "ACCT-GROUP",
                    index,
                    f"group {g.mgid} counters kernel={g.present_kernel_pages} movable={g.present_movable_pages}, "
                    f"online blocks give kernel={shadow[0]} movable={shadow[1]}",
                    ("dynamic" if g.is_dynamic else "static",),
                    {"group": g.mgid},
                )
            )

    def _check_zone(self, z: Zone, index: int, emit: Callable[[Finding], None], with_node: bool = True) -> None:
        expected = self.zone_present.get((z.nid, int(z.idx)), 0)
        if z.present_pages != expected:
            emit(
                Finding(
                    "ACCT-ZONE-PRESENT",
                    index,
                    f"{z} present {z.present_pages}, online blocks give {expected}",
                    (z.idx.label,),
                    {"zone": str(z), "present": z.present_pages, "expected": expected},
                )
            )
        if z.present_early_pages > z.present_pages:
            emit(Finding("ACCT-EARLY", index, f"{z} present_early {z.present_early_pages} > present {z.present_pages}", (z.idx.label,), {"zone": str(z)}))
        if not with_node:  # the node was checked with another of its zones this event
            return
        node = self.m.nodes[z.nid]
        total = sum([x.present_pages for x in node.zones])
        if node.node_present_pages != total:
            emit(Finding("ACCT-NODE-PRESENT", index, f"{node} present {node.node_present_pages} != sum of zones {total}", (), {"node": z.nid}))

    # -- policy --------------------------------------------------------------------------------------

    def _ratio_terms(self, nid: int | None) -> tuple[int, int]:
        """(movable, kernel) as the documented ratio counts them, over one node or all."""
        movable = kernel = 0
        for node in self.m.nodes.values():
            if not node.online or (nid is not None and node.nid != nid):
                continue
            for z in node.zones:
                if z.idx is ZONE_MOVABLE:
                    movable += z.present_pages
                else:
                    kernel += z.present_early_pages - z.cma_pages
                    movable += z.cma_pages
        return movable, kernel + self.dynamic_kernel.get(nid, 0)

    def _add_dynamic_kernel(self, nid: int, pages: int) -> None:
        for scope in (None, nid):
            self.dynamic_kernel[scope] = self.dynamic_kernel.get(scope, 0) + pages

    def _check_ratio(self, block: int, zone: ZoneType, index: int, emit: Callable[[Finding], None], terms: dict[int | None, tuple[int, int]]) -> None:
        m = self.m
        mem = m.blocks.get(block)
        if mem is None:
            return
        ratio = m.params.auto_movable_ratio
        what = "movable-decision" if zone is ZONE_MOVABLE else "state"
        scopes: list[tuple[str, int | None]] = [("AM-RATIO", None)]
        if m.params.auto_movable_numa_aware:
            scopes.append(("AM-RATIO-NODE", mem.nid))
        for oracle, nid in scopes:
            if nid not in terms:
                terms[nid] = self._ratio_terms(nid)
            movable, kernel = terms[nid]
            if movable * 100 > ratio * kernel:
                where = "system" if nid is None else f"node {nid}"
                emit(
                    Finding(
                        oracle,
                        index,
                        f"at the policy's decision for memory{block} ({zone.label}): {where} MOVABLE {movable} > {ratio}% of KERNEL {kernel} "
                        "(early kernel pages plus dynamic groups' kernel pages)",
                        (what,),
                        {"block": block, "movable": movable, "kernel": kernel, "ratio": ratio},
                    )
                )
        group = mem.group
        if group is None or group.is_dynamic or group.mgid in self.explicit_groups:
            return
        if group.present_kernel_pages and group.present_movable_pages:
            emit(
                Finding(
                    "AM-STATIC-MIXED",
                    index,
                    f"policy put memory{block} into {zone.label}; static group {group.mgid} now holds "
                    f"kernel {group.present_kernel_pages} and movable {group.present_movable_pages} pages",
                    (zone.label,),
                    {"block": block, "group": group.mgid},
                )
            )

    def _check_state_errno(self, ev: OnlineBlock | OfflineBlock, out: Outcome, index: int, emit: Callable[[Finding], None]) -> None:
        want_online = isinstance(ev, OnlineBlock) and not (ev.attr is ATTR_STATE and ev.online_type is MMOP_OFFLINE)
        changed = any(ch.block == ev.block and ch.pages for ch in out.changes)
        mem = self.m.blocks.get(ev.block)
        now_ok = mem is not None and (mem.state is MEM_ONLINE) == want_online
        # state store: success iff this request changed the state; online store: iff the state holds
        expect_ok = changed if ev.attr is ATTR_STATE else now_ok
        if (out.rc == 0) != expect_ok or (out.rc != 0 and changed):
            emit(
                Finding(
                    "STATE-ERRNO",
                    index,
                    f"{type(ev).__name__} memory{ev.block} returned {out.rc} but state changed={changed}, "
                    f"now {'online' if mem and mem.state is MEM_ONLINE else 'not online'}",
                    (type(ev).__name__, ev.attr.name),
                    {"block": ev.block, "rc": out.rc},
                )
            )
