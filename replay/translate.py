"""A trace as a lab scenario (``mhp confirm``): the machine preset its boot snapshot is, the kernel command line of its
parameters, and each request as what causes it on a real machine.

- a static ``group_register`` and the ``add_memory`` into it: an ACPI DIMM plug (``dimm`` step of that size on that
  node); ``remove_memory`` and ``group_unregister`` of a DIMM (after the eject's own offlines): ``unplug``;
- a dynamic group from boot: a virtio-mem device (``[[device]]``, unit = memory block: SBM, larger: BBM with that
  device block size); its adds and removals: ``vmem`` resize steps;
- user-space online/offline: ``online``/``offline`` steps (type, attr); parameter writes: ``param``/``auto_online``;
- a snapshot taken mid-life (hot-plugged memory in it): a prefix of steps that rebuilds it from boot, then
  ``record_from``.

What no real machine produces is an ``Obstacle`` naming the record and why (injected failures, a group smaller than
its memory, a probe-style add without a driver, memory on a node the machine lacks ...). The scenario is then
simulated through the model (replay/simulate.py: QEMU's first-fit placement, the drivers' choices): its requests
and their results must be the trace's, so a hot-add at an address QEMU would never choose is found there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replay.model.kernel import Kernel
from replay.model.machine import Machine
from replay.model.params import POLICY_NAMES, boot_params_from_cmdline
from replay.model.profiles import Profile, get_profile
from replay.simulate import Simulation, simulate
from traces.codec import Record
from traces.events import (
    ONLINE_TYPE_NAMES,
    AddFlags,
    AddMemory,
    Attr,
    BlockState,
    BootBlocks,
    BootGroup,
    BootMachine,
    BootParams,
    BootZone,
    Event,
    GroupRegister,
    GroupUnregister,
    InjectFailure,
    OfflineAndRemoveMemory,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    Param,
    ParamWrite,
    RemoveMemory,
    Result,
    Source,
    ZoneType,
    kind_of,
)
from traces.lab.run import size_text
from traces.machines import PRESETS, MachinePreset
from traces.reader import TraceReader
from traces.scenario import Scenario, parse_scenario
from traces.text import format_record

PAGE = 4096
GIB = 1 << 30
VMEM_FLAGS = AddFlags.NID_IS_MGID | AddFlags.DRIVER_MANAGED | AddFlags.MERGE_RESOURCE
PARAM_FILES = {Param.ONLINE_POLICY: "online_policy", Param.AUTO_MOVABLE_RATIO: "auto_movable_ratio", Param.AUTO_MOVABLE_NUMA_AWARE: "auto_movable_numa_aware"}
ONLINE_LABELS = {name: t for t, name in ONLINE_TYPE_NAMES.items()}


def event_text(ev: Event) -> str:
    """An event in the text form, without sequence number and time."""
    return format_record(Record(0, 0, 0, ev)).split(" ", 2)[2]


@dataclass(frozen=True, slots=True)
class Obstacle:
    """Why a trace cannot be produced on a real machine: the record (index in the trace) and the reason."""

    index: int
    event: str
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "event": self.event, "why": self.why}


class Inexpressible(Exception):
    """Raised inside the translation; carries the Obstacle."""

    def __init__(self, index: int, ev: Event | None, why: str) -> None:
        super().__init__(why)
        self.obstacle = Obstacle(index, event_text(ev) if ev is not None else "", why)


@dataclass(slots=True)
class Translation:
    """A trace translated for one kernel: the scenario (``doc`` as TOML text in ``toml``) or the obstacle, and for each
    step the trace's record indices it reproduces (user steps: one per sysfs write, in order)."""

    path: str
    kernel: str
    doc: dict[str, Any] = field(default_factory=dict)
    sources: list[list[int]] = field(default_factory=list)
    scenario: Scenario | None = None
    obstacles: list[Obstacle] = field(default_factory=list)  # the machine's (if any), then the first request's

    @property
    def obstacle(self) -> Obstacle | None:
        """The first thing no real machine does (None: expressible)."""
        return self.obstacles[0] if self.obstacles else None

    @property
    def toml(self) -> str:
        return scenario_toml(self.doc)


# --- the machine -------------------------------------------------------------------------------------------------


def machine_state(m: Machine, early_only: bool = False) -> dict[str, Any]:
    """A model machine as comparable data: geometry, nodes and their non-empty zones, blocks and groups (``early_only``:
    what boot laid out, the same before and after memory was hot-plugged: early blocks, zones' early and CMA pages)."""
    nodes = {}
    for nid, node in sorted(m.nodes.items()):
        if node.online:
            nodes[nid] = {
                z.idx.label: (z.present_early_pages, z.cma_pages)
                if early_only
                else (z.zone_start_pfn, z.spanned_pages, z.present_pages, z.present_early_pages, z.cma_pages)
                for z in node.zones
                if ((z.present_early_pages or z.cma_pages) if early_only else (z.spanned_pages or z.present_pages))
            }
    blocks = {
        b: (
            mem.nid,
            mem.state.name.lower(),
            mem.zone.idx.label if mem.zone else "none",
            mem.early,
            mem.nr_vmemmap_pages,
            mem.present_pages,
            mem.group.mgid if mem.group else -1,
        )
        for b, mem in sorted(m.blocks.items())
        if mem.early or not early_only
    }
    groups = {} if early_only else {g.mgid: (g.nid, g.is_dynamic, g.pages) for g in m.groups.values()}
    p = m.params
    params = (
        ()
        if early_only
        else (p.online_policy.name, p.auto_movable_ratio, p.auto_movable_numa_aware, p.auto_online_blocks.name, p.memmap_on_memory, p.movable_node)
    )
    return {
        "block_size": m.block_size,
        "possible_nodes": sorted(m.possible_nodes),
        "cpu_nodes": sorted(m.cpu_nodes),
        "params": params,
        "nodes": nodes,
        "blocks": blocks,
        "groups": groups,
    }


def booted(events: Iterable[Event], profile: Profile) -> Machine:
    """The model machine after a boot snapshot."""
    k = Kernel(profile, oracles=False)
    for ev in events:
        k.apply(ev)
    return k.m


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """What differs between two machine_state()s (``a`` the trace's, ``b`` a preset's): a phrase and what it is about
    (("machine",), ("zone", node, zone label) or ("block", id)) for each difference."""
    out: list[tuple[str, tuple[Any, ...]]] = [(f"{k} {a[k]} vs {b[k]}", ("machine",)) for k in ("block_size", "possible_nodes", "cpu_nodes") if a[k] != b[k]]
    if a["params"] != b["params"]:
        out.append((f"parameters {a['params']} vs {b['params']}", ("params",)))
    for nid in sorted(set(a["nodes"]) | set(b["nodes"])):
        za, zb = a["nodes"].get(nid), b["nodes"].get(nid)
        if za is None or zb is None:
            out.append((f"node {nid} {'absent' if za is None else 'present'} vs {'absent' if zb is None else 'present'}", ("machine",)))
            continue
        for z in sorted(set(za) | set(zb)):
            if za.get(z) != zb.get(z):
                what = f"zone {z} of node {nid} {za.get(z, 'empty')} vs {zb.get(z, 'empty')} (start_pfn, spanned, present, early, cma)"
                out.append((what, ("zone", nid, z)))
    ba, bb = a["blocks"], b["blocks"]
    for blk in sorted(set(ba) | set(bb)):
        if ba.get(blk) != bb.get(blk):
            what = f"memory{blk} {ba.get(blk, 'absent')} vs {bb.get(blk, 'absent')} (node, state, zone, early, vmemmap, present, group)"
            out.append((what, ("block", blk)))
    for g in sorted(set(a["groups"]) | set(b["groups"])):
        if a["groups"].get(g) != b["groups"].get(g):
            out.append((f"group {g} {a['groups'].get(g, 'absent')} vs {b['groups'].get(g, 'absent')} (node, dynamic, pages)", ("group", g)))
    return out


def _record_of(boot: list[tuple[int, Event]], about: tuple[Any, ...]) -> tuple[int, Event | None]:
    """The boot record a difference is about (the first boot record if the trace has none for it)."""
    for i, ev in boot:
        if about[0] == "machine" and isinstance(ev, BootMachine):
            return i, ev
        if about[0] == "zone" and isinstance(ev, BootZone) and (ev.node, ev.zone.label) == about[1:]:
            return i, ev
        if about[0] == "block" and isinstance(ev, BootBlocks) and ev.first <= about[1] < ev.first + ev.count:
            return i, ev
        if about[0] == "group" and isinstance(ev, BootGroup) and ev.mgid == about[1]:
            return i, ev
        if about[0] == "params" and isinstance(ev, BootParams):
            return i, ev
    return boot[0] if boot else (-1, None)


def match_preset(boot: list[tuple[int, Event]], profile: Profile, early_only: bool = False) -> tuple[MachinePreset, Obstacle | None]:
    """The preset whose boot snapshot gives the model the machine the trace's boot records give (``early_only``: the
    part boot laid out), else the closest one and why it is not the trace's machine."""
    machine_events = [ev for _, ev in boot if not isinstance(ev, (BootParams, BootGroup)) and not (isinstance(ev, BootBlocks) and ev.mgid >= 0)]
    mine = machine_state(booted(machine_events, profile), early_only)
    best: tuple[int, MachinePreset, list[tuple[str, tuple[Any, ...]]]] | None = None
    for preset in PRESETS.values():
        diff = differences(mine, machine_state(booted(list(preset.events), profile), early_only))
        if not diff:
            return preset, None
        if best is None or len(diff) < best[0]:
            best = (len(diff), preset, diff)
    assert best is not None
    n, preset, diff = best
    index, ev = _record_of(boot, diff[0][1])
    why = f"no machine preset boots into this snapshot: the closest, {preset.name}, differs in {n} place(s), first {diff[0][0]}"
    return preset, Inexpressible(index, ev, why).obstacle


def boot_cmdline(params: BootParams, profile: Profile) -> str:
    """The kernel command line that sets the boot parameters (every one explicit: the kernels' defaults differ)."""
    parts = [
        f"memhp_default_state={ONLINE_TYPE_NAMES[params.auto_online_blocks]}",
        f"memory_hotplug.online_policy={POLICY_NAMES[params.online_policy]}",
        f"memory_hotplug.auto_movable_ratio={params.auto_movable_ratio}",
        f"memory_hotplug.auto_movable_numa_aware={int(params.auto_movable_numa_aware)}",
    ]
    if params.memmap_on_memory:
        parts.append("memory_hotplug.memmap_on_memory=" + ("force" if params.memmap_on_memory == 2 else "1"))
    if params.movable_node:
        parts.append("movable_node")
    return " ".join(parts)


# --- the requests --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Group:
    kind: str  # "dimm" | "vmem"
    name: str
    node: int
    pages: int
    start: int = -1  # DIMM: its range once added
    size: int = 0
    index: int = -1  # the record that made it


@dataclass(slots=True)
class _Vmem:
    name: str
    mgid: int
    node: int
    unit: int
    index: int  # the record that made it (its BootGroup or group_register)
    added: set[int] = field(default_factory=set)  # unit start addresses
    first: int = -1  # the first add's address: the region start (the driver plugs from the lowest unit)
    top: int = 0  # the highest end ever added


class _Translator:
    """Walks a trace's requests and builds the scenario's devices and steps."""

    def __init__(self, records: list[Record], profile: Profile, preset: MachinePreset) -> None:
        self.recs = records
        self.profile = profile
        self.preset = preset
        self.block_size = preset.block_size
        self.groups: dict[int, _Group] = {}
        self.vmems: dict[int, _Vmem] = {}
        self.dimm_count = 0
        self.dimm_starts: list[int] = []  # every DIMM's address, in plug order
        self.steps: list[dict[str, Any]] = []
        self.sources: list[list[int]] = []
        self.last_request = -1  # index of the previous request handled
        self.started = False  # a request other than a virtio-mem probe was seen
        self.requests = [i for i, r in enumerate(records) if r.event.KIND in ("request", "inject")]

    def fail(self, i: int, why: str) -> Inexpressible:
        return Inexpressible(i, self.recs[i].event, why)

    def next_request(self, i: int) -> int | None:
        """The index of the request after record ``i``."""
        pos = self.requests.index(i) + 1
        return self.requests[pos] if pos < len(self.requests) else None

    def alloc(self) -> int:
        mgid = 0
        while mgid in self.groups:
            mgid += 1
        return mgid

    def boot_group(self, i: int, ev: BootGroup, blocks: list[int]) -> None:
        """A group in the boot snapshot: a virtio-mem device (with the units it had plugged), or a DIMM plugged before
        the recording began."""
        bs = self.block_size
        if ev.dynamic:
            self.vmem(i, ev.mgid, ev.node, ev.pages)
            v = self.vmems[ev.mgid]
            v.added = {b * bs // v.unit * v.unit for b in blocks}
            if blocks:
                v.first, v.top = min(v.added), max(v.added) + v.unit
            return
        if not blocks:
            raise self.fail(i, "a static group without memory in the snapshot: an ACPI DIMM's group exists only while the DIMM is plugged")
        if blocks != list(range(blocks[0], blocks[0] + len(blocks))) or len(blocks) * bs != ev.pages * PAGE:
            raise self.fail(i, f"a static group of {ev.pages} pages holding memory{blocks[0]}..memory{blocks[-1]}: an ACPI DIMM's group is its one whole range")
        self.check_node(i, ev.node)
        g = self.groups[ev.mgid] = _Group("dimm", f"d{self.dimm_count}", ev.node, ev.pages, blocks[0] * bs, len(blocks) * bs, i)
        self.dimm_count += 1
        self.dimm_starts.append(g.start)

    def prefix(self, online: dict[int, str], auto_online: OnlineType) -> None:
        """The steps that make a snapshot taken mid-life, before the recorder starts: virtio-mem devices resized to what
        they had plugged, the DIMMs plugged in address order (auto-online off), each hot-plugged block onlined to the
        zone it is in, then auto_online_blocks as the snapshot has it."""
        for v in sorted(self.vmems.values(), key=lambda v: v.index):
            if v.added:
                self.step({"vmem": v.name, "size": size_text(len(v.added) * v.unit)}, [])
        cursor = self.preset.device_memory_base  # QEMU's first fit (the devices' regions come first)
        for g in sorted((g for g in self.groups.values() if g.kind == "dimm"), key=lambda g: g.start):
            if not self.vmems and g.start != cursor:
                raise self.fail(
                    g.index,
                    f"a DIMM at {g.start:#x} where one plugged now lands at {cursor:#x}: memory freed before the recording left a gap (history unknown)",
                )
            cursor = g.start + g.size
            self.step({"dimm": size_text(g.size), "node": g.node, "id": g.name}, [])
        last: tuple[str, int] | None = None
        for b in sorted(online):
            kind = online[b]
            if last is not None and last == (kind, b - 1):
                first = str(self.steps[-1]["online"]).partition("-")[0]
                self.steps[-1]["online"] = f"{first}-{b}"
            else:
                self.step({"online": b, "type": kind}, [])
            last = (kind, b)
        if auto_online is not OnlineType.OFFLINE:
            self.step({"auto_online": ONLINE_TYPE_NAMES[auto_online]}, [])

    def vmem(self, i: int, mgid: int, node: int, pages: int) -> None:
        unit = pages * PAGE
        if unit < self.block_size or unit & (unit - 1):
            raise self.fail(i, f"a dynamic group with a unit of {pages} pages: virtio-mem's unit is a power of two of at least one memory block")
        self.check_node(i, node)
        name = f"vm{len(self.vmems)}"
        self.groups[mgid] = _Group("vmem", name, node, pages)
        self.vmems[mgid] = _Vmem(name, mgid, node, unit, i)

    def check_node(self, i: int, node: int) -> None:
        nodes = sorted(n for n in range(64) if _machine_nodes(self.preset) >> n & 1)
        if node not in nodes:
            raise self.fail(i, f"memory on node {node}, which the machine ({self.preset.name}: nodes {', '.join(map(str, nodes))}) lacks")

    def continues(self) -> bool:
        """The previous step holds the previous request (a step of this trace, not of a prefix)."""
        return bool(self.sources and self.sources[-1] and self.sources[-1][-1] == self.last_request)

    def step(self, doc: dict[str, Any], sources: list[int]) -> None:
        self.steps.append(doc)
        self.sources.append(sources)

    def run(self) -> None:
        for i in self.requests:
            ev = self.recs[i].event
            handler = getattr(self, f"on_{type(ev).__name__}")
            handler(i, ev)
            self.last_request = i

    # requests, one handler per event type

    def on_InjectFailure(self, i: int, ev: InjectFailure) -> None:
        raise self.fail(
            i, "an injected failure: a real kernel fails an online or offline by its own state (unmovable pages, a notifier), the lab cannot force it"
        )

    def on_GroupRegister(self, i: int, ev: GroupRegister) -> None:
        if ev.dynamic:
            if self.started:
                raise self.fail(i, "a virtio-mem device probed after boot: the lab's virtio-mem devices exist from boot")
            self.vmem(i, self.alloc(), ev.node, ev.pages)
            return
        self.started = True
        nxt = self.next_request(i)
        add = self.recs[nxt].event if nxt is not None else None
        mgid = self.alloc()
        if not isinstance(add, AddMemory) or not add.flags & AddFlags.NID_IS_MGID or add.nid != mgid:
            raise self.fail(i, "a static group without its add_memory right after it: the ACPI driver registers a DIMM's group and adds its range at once")
        if not ev.pages:
            raise self.fail(i, "a static group of 0 pages: the ACPI driver registers the DIMM's size")
        self.check_node(i, ev.node)
        self.groups[mgid] = _Group("dimm", f"d{self.dimm_count}", ev.node, ev.pages)
        self.dimm_count += 1

    def on_AddMemory(self, i: int, ev: AddMemory) -> None:
        self.started = True
        if not ev.flags & AddFlags.NID_IS_MGID:
            raise self.fail(i, "a probe-style add_memory without a driver (no memory group): QEMU's devices are added by the ACPI or virtio-mem driver")
        g = self.groups.get(ev.nid)
        if g is None:
            raise self.fail(i, f"add_memory into group {ev.nid}, which does not exist")
        if g.kind == "vmem":
            self.vmem_add(i, ev, self.vmems[ev.nid])
            return
        if g.start >= 0 or self.last_request < 0 or not isinstance(self.recs[self.last_request].event, GroupRegister):
            raise self.fail(i, f"a second add_memory into DIMM group {ev.nid}: an ACPI DIMM is one range, added once")
        if ev.flags & (AddFlags.DRIVER_MANAGED | AddFlags.MERGE_RESOURCE):
            raise self.fail(i, "driver-managed memory in a static group (dax/kmem): the lab has no persistent-memory device")
        if ev.size != g.pages * PAGE:
            rel = "smaller" if g.pages * PAGE < ev.size else "larger"
            pages = f"{g.pages} page" + ("s" if g.pages != 1 else "")
            raise self.fail(i, f"a group registered {rel} than its memory ({pages} for {size_text(ev.size)}): the ACPI driver registers the DIMM's whole size")
        if not ev.size or ev.size % self.block_size:
            raise self.fail(i, f"a DIMM of {size_text(ev.size)}: not a whole number of {size_text(self.block_size)} memory blocks")
        g.start, g.size = ev.start, ev.size
        self.dimm_starts.append(ev.start)
        self.step({"dimm": size_text(ev.size), "node": g.node, "id": g.name}, [self.last_request, i])

    def vmem_add(self, i: int, ev: AddMemory, v: _Vmem) -> None:
        if ev.flags != VMEM_FLAGS:
            raise self.fail(i, f"add_memory into virtio-mem group {v.mgid} with flags other than the driver's (nid_is_mgid|driver_managed|merge_resource)")
        if ev.size != v.unit:
            raise self.fail(i, f"virtio-mem adds one unit ({size_text(v.unit)}) at a time, not {size_text(ev.size)}")
        if v.first < 0:
            v.first = ev.start
        v.added.add(ev.start)
        v.top = max(v.top, ev.start + ev.size)
        self.vmem_step(i, v, +1)

    def vmem_step(self, i: int, v: _Vmem, direction: int) -> None:
        """Extend the previous step if it resized the same device the same way with the previous request, else a new one."""
        size = len(v.added) * v.unit
        prev = self.steps[-1] if self.steps else None
        if prev is not None and prev.get("vmem") == v.name and self.continues() and prev.get("_dir") == direction:
            prev["size"] = size_text(size)
            self.sources[-1].append(i)
        else:
            self.step({"vmem": v.name, "size": size_text(size), "_dir": direction}, [i])

    def owner(self, start: int, size: int) -> tuple[int, _Group] | None:
        for mgid, g in self.groups.items():
            if g.kind == "dimm" and g.start >= 0 and g.start < start + size and start < g.start + g.size:
                return mgid, g
        return None

    def vmem_of(self, addr: int) -> _Vmem | None:
        return next((v for v in self.vmems.values() if addr in v.added), None)

    def remove(self, i: int, ev: RemoveMemory | OfflineAndRemoveMemory) -> None:
        self.started = True
        v = self.vmem_of(ev.start)
        if v is not None:
            if ev.size != v.unit:
                raise self.fail(i, f"virtio-mem removes one unit ({size_text(v.unit)}) at a time, not {size_text(ev.size)}")
            v.added.discard(ev.start)
            self.vmem_step(i, v, -1)
            return
        hit = self.owner(ev.start, ev.size)
        if hit is None:
            raise self.fail(i, "removal of memory no device holds")
        mgid, g = hit
        if (ev.start, ev.size) != (g.start, g.size):
            raise self.fail(i, f"removal of part of DIMM {g.name} ({g.start:#x}+{size_text(g.size)}): an ACPI eject removes the whole DIMM")
        if isinstance(ev, OfflineAndRemoveMemory):
            raise self.fail(i, "offline_and_remove_memory of a DIMM: that is virtio-mem's call; an ACPI eject offlines, then calls remove_memory")
        nxt = self.next_request(i)
        if nxt is None or self.recs[nxt].event != GroupUnregister(mgid):
            raise self.fail(i, f"remove_memory of DIMM {g.name} without its group_unregister right after it: the ACPI eject frees the group at once")
        offlines = self.eject_offlines(g)
        self.step({"unplug": g.name}, [*offlines, i, nxt])

    def eject_offlines(self, g: _Group) -> list[int]:
        """The driver's offlines of the DIMM's blocks just before its removal (the eject's own), taken from the last step."""
        if not self.sources or self.steps[-1].get("_eject") != g.name:
            return []
        self.steps.pop()
        return self.sources.pop()

    on_RemoveMemory = remove
    on_OfflineAndRemoveMemory = remove

    def on_GroupUnregister(self, i: int, ev: GroupUnregister) -> None:
        if self.last_request >= 0 and isinstance(self.recs[self.last_request].event, RemoveMemory) and self.sources and self.sources[-1][-1:] == [i]:
            del self.groups[ev.mgid]  # the unplug step's own
            return
        g = self.groups.get(ev.mgid)
        what = (
            "a virtio-mem device's group: the lab never unplugs virtio-mem devices"
            if g is not None and g.kind == "vmem"
            else "a group with memory still added, or none"
        )
        raise self.fail(i, f"group_unregister of {what}")

    def on_OnlineBlock(self, i: int, ev: OnlineBlock) -> None:
        if ev.attr is Attr.ONLINE:
            self.block_write(i, ev, "online", {"attr": "online"})
        elif ev.online_type is OnlineType.OFFLINE:  # "offline" written to state
            self.block_write(i, ev, "offline", {})
        else:
            self.block_write(i, ev, "online", {"type": ONLINE_TYPE_NAMES[ev.online_type]} if ev.online_type is not OnlineType.ONLINE else {})

    def on_OfflineBlock(self, i: int, ev: OfflineBlock) -> None:
        self.block_write(i, ev, "offline", {"attr": "online"} if ev.attr is Attr.ONLINE else {})

    def block_write(self, i: int, ev: OnlineBlock | OfflineBlock, action: str, extra: dict[str, Any]) -> None:
        """A block's online or offline request: user space's (a step), an eject's (part of an unplug), never the kernel's."""
        self.started = True
        if ev.source is Source.KERNEL:
            what = "online" if isinstance(ev, OnlineBlock) else "offline"
            raise self.fail(i, f"an {what} request by the kernel: the kernel onlines blocks itself only inside a hot-add, and offlines them only for a driver")
        if ev.source is Source.DRIVER:
            self.driver_write(i, ev.block)
        else:
            self.user_write(i, action, ev.block, extra)

    def driver_write(self, i: int, block: int) -> None:
        """An ACPI eject's offline (or its roll-back online) of a DIMM block: part of an ``unplug`` step (one that fails if
        no removal follows)."""
        hit = self.owner(block * self.block_size, self.block_size)
        if hit is None:
            raise self.fail(i, f"a driver's online/offline of memory{block}, which no DIMM holds (the ACPI eject touches only its DIMM's blocks)")
        g = hit[1]
        prev = self.steps[-1] if self.steps else None
        if prev is not None and prev.get("_eject") == g.name and self.continues():
            self.sources[-1].append(i)
        else:
            self.step({"unplug": g.name, "_eject": g.name}, [i])

    def user_write(self, i: int, action: str, block: int, extra: dict[str, Any]) -> None:
        """A user-space sysfs write: extends the previous step when it wrote the next lower block the same way."""
        prev = self.steps[-1] if self.steps else None
        if prev is not None and action in prev and self.continues() and {k: v for k, v in prev.items() if k != action} == extra:
            first, _, last = str(prev[action]).partition("-")
            if int(last or first) + 1 == block:
                prev[action] = f"{first}-{block}"
                self.sources[-1].append(i)
                return
        self.step({action: block, **extra}, [i])

    def on_ParamWrite(self, i: int, ev: ParamWrite) -> None:
        self.started = True
        value = ev.value.removesuffix("\n")  # echo appends the newline itself
        if any(c in value for c in "\n\r\0"):
            raise self.fail(i, "a parameter value with a line break or NUL inside: one echo cannot write it")
        if ev.param is Param.AUTO_ONLINE_BLOCKS:
            if value not in ONLINE_LABELS:
                raise self.fail(i, f"auto_online_blocks = {value!r}: the lab writes only the online types ({', '.join(ONLINE_LABELS)})")
            self.step({"auto_online": value}, [i])
        else:
            self.step({"param": PARAM_FILES[ev.param], "value": value}, [i])

    def devices(self) -> list[dict[str, Any]]:
        """The virtio-mem devices in probe order, sized so that QEMU places each where the trace's adds say: up to the
        next device's first add, the last one up to the lowest DIMM (they are placed after the devices)."""
        order = sorted(self.vmems.values(), key=lambda v: v.index)
        out = []
        for k, v in enumerate(order):
            block = v.unit if v.unit > self.block_size else 2 << 20
            align = max(block, self.block_size)
            bound = next((w.first for w in order[k + 1 :] if w.first >= 0), None) if k + 1 < len(order) else min(self.dimm_starts, default=None)
            if v.first >= 0 and bound is not None and bound > v.first:
                size = bound - v.first
            else:
                size = max(-(-(v.top - v.first) // GIB) * GIB if v.first >= 0 else GIB, GIB)
            size = -(-size // align) * align
            dev: dict[str, Any] = {"id": v.name, "type": "virtio-mem", "node": v.node, "max_size": size_text(size)}
            if block != 2 << 20:
                dev["block_size"] = size_text(block)
            out.append(dev)
        return out


def _machine_nodes(preset: MachinePreset) -> int:
    return next((e.possible_nodes for e in preset.events if isinstance(e, BootMachine)), 1)


# --- the whole translation ---------------------------------------------------------------------------------------


def read_records(path: str) -> tuple[str, list[Record]]:
    """A trace's kernel release and records (TraceFormatError for bad input)."""
    with TraceReader(path) as r:
        return r.header.kernel_release, list(r)


def translate(path: str, kernel: str, records: list[Record] | None = None) -> Translation:
    """The scenario that reproduces the trace on ``kernel`` (6.1 or 6.12), or the obstacle; checked by simulation."""
    profile = get_profile(kernel)
    recs = records if records is not None else read_records(path)[1]
    tr = Translation(path, profile.name)
    try:
        _build(tr, recs, profile)
        check_by_simulation(tr, recs, profile)  # on the closest preset if the machine is not one: placements still show
    except Inexpressible as e:
        tr.obstacles.append(e.obstacle)
    return tr


def _build(tr: Translation, recs: list[Record], profile: Profile) -> None:
    boot = [(i, r.event) for i, r in enumerate(recs) if r.event.KIND == "boot"]
    hot = [ev for _, ev in boot if isinstance(ev, BootBlocks) and ev.mgid >= 0]  # memory plugged before the recording began
    preset, machine = match_preset(boot, profile, early_only=bool(hot))
    if machine is not None:  # go on with the closest preset: the requests may have obstacles of their own
        tr.obstacles.append(machine)
    params = next((ev for _, ev in boot if isinstance(ev, BootParams)), None)
    if params is None:  # the model's defaults for this kernel
        m = booted([ev for _, ev in boot], profile).params
        params = BootParams(m.online_policy, m.auto_movable_ratio, m.auto_movable_numa_aware, m.auto_online_blocks, m.memmap_on_memory, m.movable_node)
    at_boot = params._replace(auto_online_blocks=OnlineType.OFFLINE) if hot else params  # the prefix onlines by hand
    cmdline = boot_cmdline(at_boot, profile)
    if boot_params_from_cmdline(cmdline, profile.default_online_type, profile.memmap_force_mode) != at_boot:
        i = next((i for i, ev in boot if isinstance(ev, BootParams)), boot[0][0] if boot else -1)
        raise Inexpressible(i, recs[i].event if i >= 0 else None, f"no {profile.name} kernel command line sets these boot parameters")
    t = _Translator(recs, profile, preset)
    blocks: dict[int, list[int]] = {}
    online: dict[int, str] = {}
    for ev in hot:
        blocks.setdefault(ev.mgid, []).extend(range(ev.first, ev.first + ev.count))
        if ev.state is BlockState.ONLINE:
            online.update(dict.fromkeys(range(ev.first, ev.first + ev.count), "online_movable" if ev.zone is ZoneType.MOVABLE else "online_kernel"))
    for i, ev in boot:
        if isinstance(ev, BootGroup):
            t.boot_group(i, ev, sorted(blocks.pop(ev.mgid, [])))
    if blocks:
        i, ev = next((i, ev) for i, ev in boot if isinstance(ev, BootBlocks) and ev.mgid in blocks)
        raise Inexpressible(i, ev, f"blocks of group {ev.mgid}, which the snapshot does not define")
    if hot:
        t.prefix(online, params.auto_online_blocks)
    record_from = len(t.steps)
    t.run()
    pending = next((k for k, s in enumerate(t.steps) if "_eject" in s), None)
    if pending is not None:  # an eject whose offlines ended without a removal: a refused unplug
        t.steps[pending].pop("_eject")
    for s in t.steps:
        for key in ("_dir", "_eject"):
            s.pop(key, None)
    name = Path(tr.path).name.removesuffix(".mhpt")
    tr.doc = {
        "name": name,
        "description": f"mhp confirm: {tr.path} on {profile.name}",
        "machine": {"preset": preset.name},
        "kernel": {"profile": profile.name, "cmdline": cmdline},
        "device": t.devices(),
        "step": t.steps,
    }
    if record_from:
        tr.doc["record_from"] = record_from
    tr.sources = t.sources
    tr.scenario = parse_scenario(json.loads(json.dumps(tr.doc)), f"<{name} on {profile.name}>", tr.toml)


# --- the check by simulation ---------------------------------------------------------------------------------------


def request_key(ev: Event, memmap_on: bool) -> tuple[Any, ...] | None:
    """A request as the machine shows it, for comparison; None for what the devices' set-up or an eject do by themselves
    (virtio-mem probes, the eject's offlines)."""
    if isinstance(ev, GroupRegister):
        return None if ev.dynamic else ("group_register", ev.node, ev.pages)
    if isinstance(ev, GroupUnregister):
        return ("group_unregister", ev.mgid)
    if isinstance(ev, AddMemory):
        flags = ev.flags if memmap_on else ev.flags & ~AddFlags.MEMMAP_ON_MEMORY
        return ("add_memory", ev.start, ev.size, ev.nid, int(flags))
    if isinstance(ev, (RemoveMemory, OfflineAndRemoveMemory)):
        return ("remove_memory", ev.start, ev.size)
    if isinstance(ev, (OnlineBlock, OfflineBlock)):
        if ev.source is Source.DRIVER:
            return None
        online = isinstance(ev, OnlineBlock) and not (ev.attr is Attr.STATE and ev.online_type is OnlineType.OFFLINE)
        kind = ev.online_type.name.lower() if isinstance(ev, OnlineBlock) and online and ev.attr is Attr.STATE else ""
        return ("online" if online else "offline", ev.block, ev.attr.name.lower(), kind)
    if isinstance(ev, ParamWrite):
        return ("param", ev.param.name.lower(), ev.value.removesuffix("\n"))
    return (type(ev).__name__,)


def requests_with_rc(events: list[Event], profile: Profile) -> list[tuple[int, Event, int]]:
    """(index, request, the model's rc) for every request and injection of an event list."""
    k = Kernel(profile, oracles=False)
    out = []
    for i, ev in enumerate(events):
        if kind_of(ev) in ("boot", "request", "inject"):
            rc = k.apply(ev).rc
            if kind_of(ev) != "boot":
                out.append((i, ev, rc))
    return out


def simulated_events(sc: Scenario, profile: Profile) -> list[Event]:
    """Every event the model's simulation of the scenario issues (QEMU's placement, the drivers' choices)."""
    sim = Simulation(sc, profile)
    for _ in simulate(sc, sim=sim):
        pass
    return sim.events


def simulate_recorded(sc: Scenario, profile: Profile) -> tuple[dict[str, Any] | None, list[tuple[Event, int]]]:
    """The model's simulation of the scenario: the machine when the recorder starts (None: at boot) and each request
    from then on with its result."""
    sim = Simulation(sc, profile)
    sim.boot()
    for i, step in enumerate(sc.steps[: sc.record_from], 1):
        sim.run_step(i, step)
    state = machine_state(sim.kernel.m) if sc.record_from else None
    start = 0 if not sc.record_from else len(sim.events)
    for i, step in enumerate(sc.steps[sc.record_from :], sc.record_from + 1):
        sim.run_step(i, step)
    events = sim.events[start:]
    out = []
    for i, ev in enumerate(events):
        if kind_of(ev) == "request":
            nxt = events[i + 1] if i + 1 < len(events) else None
            out.append((ev, nxt.rc if isinstance(nxt, Result) else 0))
        elif kind_of(ev) == "inject":
            out.append((ev, 0))
    return state, out


def check_by_simulation(tr: Translation, recs: list[Record], profile: Profile) -> None:
    """The scenario's simulated requests and results must be the trace's (and, for a snapshot taken mid-life, the
    simulated machine when the recorder starts the snapshot's); Inexpressible at the first that is not."""
    assert tr.scenario is not None
    events = [r.event for r in recs]
    memmap_on = any(isinstance(ev, BootParams) and ev.memmap_on_memory for ev in events)
    state, simulated = simulate_recorded(tr.scenario, profile)
    if state is not None:
        boot = [(i, ev) for i, ev in enumerate(events) if kind_of(ev) == "boot"]
        diff = differences(machine_state(booted([ev for _, ev in boot], profile)), state)
        if diff:
            index, ev = _record_of(boot, diff[0][1])
            why = f"plugging the devices and onlining the blocks from boot gives another snapshot ({len(diff)} difference(s)), first {diff[0][0]}"
            raise Inexpressible(index, ev, why)
    mine = [(i, ev, rc, key) for i, ev, rc in requests_with_rc(events, profile) if (key := request_key(ev, memmap_on)) is not None]
    sim = [(ev, rc, key) for ev, rc in simulated if (key := request_key(ev, memmap_on)) is not None]
    for pos, (i, ev, rc, key) in enumerate(mine):
        if pos >= len(sim):
            raise Inexpressible(i, ev, "the real machine's steps end before this request")
        sev, src, skey = sim[pos]
        if skey != key:
            raise Inexpressible(i, ev, f"on a real machine this step gives {event_text(sev)}{_placement(ev, sev)}")
        if src != rc:
            raise Inexpressible(i, ev, f"on a real machine's path to here this request returns {src}, in the trace {rc}")
    if len(sim) > len(mine):
        sev = sim[len(mine)][0]
        last = mine[-1][0] if mine else len(recs) - 1
        raise Inexpressible(last, recs[last].event if last >= 0 else None, f"a real machine's steps also issue {event_text(sev)} after this request")


def _placement(ev: Event, sev: Event) -> str:
    if isinstance(ev, AddMemory) and isinstance(sev, AddMemory) and ev.start != sev.start and ev.size == sev.size:
        who = "the virtio-mem driver plugs" if ev.flags & AddFlags.DRIVER_MANAGED else "QEMU places the DIMM at"
        return f" ({who} {sev.start:#x}, not {ev.start:#x})"
    return ""


# --- TOML text --------------------------------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def scenario_toml(doc: dict[str, Any]) -> str:
    """A scenario document as TOML text (scalars at the top, then tables, then arrays of tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, (dict, list)) or (isinstance(v, list) and not v)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]", *(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())]
    for k, v in doc.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                lines += ["", f"[[{k}]]", *(f"{kk} = {_toml_value(vv)}" for kk, vv in item.items())]
    return "\n".join(lines) + "\n"
