"""The model's single entry point: ``Kernel.apply(event) -> Outcome``.

The replayer, the simulator, the generator, the fuzzer and the minimiser all drive the model
through this one method.
"""

from __future__ import annotations

from itertools import pairwise

from replay.model.add_remove import add_memory, offline_and_remove_memory, try_remove_memory
from replay.model.machine import (
    ATTR_ONLINE,
    MAX_PHYSMEM_BITS,
    MEM_OFFLINE,
    MEM_ONLINE,
    MMOP_OFFLINE,
    PAGES_PER_SECTION,
    ZONE_MOVABLE,
    ZONE_NONE,
    Machine,
    MemoryBlock,
    MemoryGroup,
)
from replay.model.memory import memory_group_register, memory_group_unregister, online_store, state_store
from replay.model.memory_hotplug import (
    recompute_dynamic_group_terms,
    set_node_online,
    update_dynamic_group_term,
    update_pgdat_span,
    update_zone_stats,
)
from replay.model.oracles import Oracles
from replay.model.outcome import Outcome
from replay.model.params import write_param
from replay.model.profiles import Profile
from replay.model.variants import check_variants
from traces.events import (
    KIND_OF,
    AddMemory,
    BootBlocks,
    BootGroup,
    BootMachine,
    BootParams,
    BootUnknown,
    BootZone,
    Event,
    GroupRegister,
    GroupUnregister,
    InjectFailure,
    Mark,
    OfflineAndRemoveMemory,
    OfflineBlock,
    OnlineBlock,
    Param,
    ParamWrite,
    RemoveMemory,
    UnknownFact,
)


class SnapshotError(ValueError):
    """A boot snapshot that no real machine can be in."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"event {index}: {message}")
        self.index = index


class Kernel:
    """One modelled kernel instance."""

    def __init__(self, profile: Profile, oracles: bool = True, variants: frozenset[str] = frozenset()) -> None:
        self.m = Machine(profile, variants=check_variants(variants))
        self.m.params.auto_online_blocks = profile.default_online_type
        self.index = -1
        self.running = False  # a request was applied: the boot snapshot is complete
        self.unknown: set[tuple[UnknownFact, int]] = set()  # the snapshot's boot_unknown facts (fact, mgid)
        self.oracles = Oracles(self.m) if oracles else None

    @property
    def profile(self) -> Profile:
        return self.m.profile

    def apply(self, ev: Event) -> Outcome:
        """Apply one event to the model and return what it did."""
        self.index += 1
        m = self.m
        if not self.running and KIND_OF[type(ev)] != "boot":
            self.running = True
            self._check_snapshot()
        out = m.outcome = Outcome()
        m.acct.event_index = self.index
        m.acct.findings = out.findings
        out.rc = self._dispatch(ev)
        if self.oracles is not None:
            self.oracles.check(self.index, ev, out)
        return out

    def _dispatch(self, ev: Event) -> int:
        """The handler of the event's type (the common requests first); TypeError for an event that is no model input."""
        m = self.m
        if isinstance(ev, OnlineBlock):
            return online_store(m, ev.block, True) if ev.attr is ATTR_ONLINE else state_store(m, ev.block, ev.online_type)
        if isinstance(ev, OfflineBlock):
            return online_store(m, ev.block, False) if ev.attr is ATTR_ONLINE else state_store(m, ev.block, MMOP_OFFLINE)
        if isinstance(ev, AddMemory):
            return add_memory(m, ev.start, ev.size, ev.nid, ev.flags)
        if isinstance(ev, RemoveMemory):
            return try_remove_memory(m, ev.start, ev.size)
        if isinstance(ev, OfflineAndRemoveMemory):
            return offline_and_remove_memory(m, ev.start, ev.size)
        if isinstance(ev, InjectFailure):
            return self._inject_failure(ev)
        if isinstance(ev, Mark):
            return 0
        if isinstance(ev, ParamWrite):
            return self._param_write(ev)
        if isinstance(ev, GroupRegister):
            return memory_group_register(m, ev.dynamic, ev.node, ev.pages)
        if isinstance(ev, GroupUnregister):
            return memory_group_unregister(m, ev.mgid)
        if isinstance(ev, BootBlocks):
            return self._boot_blocks(ev)
        if isinstance(ev, BootZone):
            return self._boot_zone(ev)
        if isinstance(ev, BootGroup):
            return self._boot_group(ev)
        if isinstance(ev, BootMachine):
            return self._boot_machine(ev)
        if isinstance(ev, BootParams):
            return self._boot_params(ev)
        if isinstance(ev, BootUnknown):
            return self._boot_unknown(ev)
        raise TypeError(f"{type(ev).__name__} is no model input")

    def _booting(self, ev: Event) -> None:
        """Snapshot records come before every request."""
        if self.running:
            raise SnapshotError(self.index, f"{type(ev).__name__} after the first request: the boot snapshot comes first")

    def _check_snapshot(self) -> None:
        """A complete snapshot: every zone holds at least the pages of the online blocks in it, its
        early pages those of its early blocks and its later pages those of its hot-added blocks;
        its present pages lie in its online blocks or in the multi-zone blocks across its span
        (present memory always has memory blocks: a hot-add cannot land on it); and the kernel
        zones of a node follow each other without overlapping."""
        if not any(node.online for node in self.m.nodes.values()):
            raise SnapshotError(self.index, "no boot snapshot: requests come before any boot zone (was the trace's first chunk lost?)")
        held: dict[tuple[int, int], list[int]] = {}
        mixed: dict[int, list[tuple[int, int]]] = {}  # node -> [start, end) pfns of its online multi-zone blocks
        for mem in self.m.blocks.values():
            if mem.state is not MEM_ONLINE:
                continue
            if mem.zone is None:
                mixed.setdefault(mem.nid, []).append((mem.start_pfn, mem.start_pfn + self.m.block_pages))
                continue
            acc = held.setdefault((mem.zone.nid, int(mem.zone.idx)), [0, 0])
            acc[0] += mem.present_pages
            acc[1] += mem.present_pages if mem.early else 0
        for node in self.m.nodes.values():
            kernel = [z for z in node.zones if z.idx is not ZONE_MOVABLE and z.spanned_pages]
            for lower, upper in pairwise(kernel):
                if upper.zone_start_pfn < lower.zone_end_pfn:
                    raise SnapshotError(self.index, f"{upper} starts at {upper.zone_start_pfn}, inside {lower} (which ends at {lower.zone_end_pfn})")
            for z in node.zones:
                pages, early = held.get((node.nid, int(z.idx)), (0, 0))
                if (UnknownFact.PRESENT_PAGES, -1) in self.unknown:
                    continue  # blocks taken as fully present: their pages need not add up to the zone's
                if z.present_pages < pages or z.present_early_pages < early or z.present_pages - z.present_early_pages < pages - early:
                    raise SnapshotError(
                        self.index,
                        f"{z}: present {z.present_pages} (early {z.present_early_pages}) cannot hold its online blocks' {pages} ({pages - early} hot-added)",
                    )
                start, end = z.zone_start_pfn, z.zone_start_pfn + z.spanned_pages
                covered = pages + sum(max(0, min(e, end) - max(s, start)) for s, e in mixed.get(node.nid, ()))
                if z.present_pages > covered:
                    raise SnapshotError(self.index, f"{z}: present {z.present_pages} but its online blocks hold only {covered} pages")

    # --- boot snapshot ----------------------------------------------------------------------------

    def _boot_machine(self, ev: BootMachine) -> int:
        self._booting(ev)
        pages = ev.block_size // 4096
        if ev.block_size % (PAGES_PER_SECTION * 4096) or pages & (pages - 1) or not pages:
            raise SnapshotError(self.index, f"block size {ev.block_size:#x} is not a power of two >= 128 MiB")
        self.m.block_pages = pages
        self.m.possible_nodes = frozenset(n for n in range(64) if ev.possible_nodes >> n & 1)
        self.m.cpu_nodes = frozenset(n for n in range(64) if ev.cpu_nodes >> n & 1)
        return 0

    def _boot_params(self, ev: BootParams) -> int:
        self._booting(ev)
        p = self.m.params
        if ev.memmap_on_memory > (2 if self.profile.memmap_force_mode else 1):
            raise SnapshotError(self.index, f"memmap_on_memory={ev.memmap_on_memory} is not valid on {self.profile.name}")
        p.online_policy = ev.online_policy
        p.auto_movable_ratio = ev.auto_movable_ratio
        p.auto_movable_numa_aware = ev.auto_movable_numa_aware
        p.auto_online_blocks = ev.auto_online_blocks
        p.memmap_on_memory = ev.memmap_on_memory
        p.movable_node = ev.movable_node
        recompute_dynamic_group_terms(self.m)
        return 0

    def _boot_zone(self, ev: BootZone) -> int:
        self._booting(ev)
        if ev.zone is ZONE_NONE:
            raise SnapshotError(self.index, "a boot zone needs a zone type")
        if ev.start_pfn + ev.spanned > 1 << (MAX_PHYSMEM_BITS - 12):
            raise SnapshotError(self.index, f"zone {ev.zone.label} node {ev.node}: span ends beyond the {MAX_PHYSMEM_BITS}-bit physical address space")
        if ev.present > ev.spanned or ev.present_early > ev.present or (ev.managed or 0) > ev.present:
            raise SnapshotError(
                self.index,
                f"zone {ev.zone.label} node {ev.node}: present {ev.present} > spanned {ev.spanned}, or early {ev.present_early}/managed {ev.managed} > present",
            )
        node = self.m.node(ev.node)
        set_node_online(self.m, node, True)
        z = node.zones[ev.zone]
        z.zone_start_pfn = ev.start_pfn if ev.spanned else 0
        z.spanned_pages = ev.spanned
        z.boot_start, z.boot_end = z.zone_start_pfn, z.zone_start_pfn + ev.spanned
        node.node_present_pages += ev.present - z.present_pages
        z.present_pages = ev.present
        z.present_early_pages = ev.present_early
        z.cma_pages = ev.cma if self.profile.cma else 0  # without CONFIG_CMA there is no zone->cma_pages
        if ev.managed is None:  # not recorded: the boot allocations are unknown, present pages an upper bound
            z.managed_pages = z.boot_managed = ev.present
            z.managed_known = not ev.present
        else:
            z.managed_pages = z.boot_managed = ev.managed
            z.managed_known = True
        update_zone_stats(self.m, z)
        update_pgdat_span(node)
        return 0

    def _boot_group(self, ev: BootGroup) -> int:
        self._booting(ev)
        m = self.m
        if ev.mgid < 0 or ev.mgid in m.groups:
            raise SnapshotError(self.index, f"group id {ev.mgid} invalid or defined twice")
        if not ev.pages or (ev.dynamic and (ev.pages & (ev.pages - 1) or ev.pages < m.block_pages)):
            # memory_group_register refuses such a group: no kernel holds one
            raise SnapshotError(self.index, f"group {ev.mgid}: {ev.pages} pages is no {'dynamic unit' if ev.dynamic else 'static size'} a kernel registers")
        g = m.groups[ev.mgid] = MemoryGroup(ev.mgid, ev.node, ev.dynamic, ev.pages)
        if g.is_dynamic:
            update_dynamic_group_term(m, g)
        return 0

    def _boot_blocks(self, ev: BootBlocks) -> int:
        self._booting(ev)
        m = self.m
        node = m.nodes.get(ev.node)
        if node is None or not node.online:
            raise SnapshotError(self.index, f"blocks {ev.first}+{ev.count} on node {ev.node}, which has no boot zones")
        if ev.state not in (MEM_ONLINE, MEM_OFFLINE):
            raise SnapshotError(self.index, f"blocks {ev.first}+{ev.count}: state {ev.state.name} at boot")
        online = ev.state is MEM_ONLINE
        if not online and (ev.zone is not ZONE_NONE or ev.present_pages != m.block_pages):
            raise SnapshotError(self.index, f"offline blocks {ev.first}+{ev.count} must have no zone and no holes")
        if not 0 < ev.present_pages <= m.block_pages or ev.vmemmap_pages >= m.block_pages:
            raise SnapshotError(self.index, f"blocks {ev.first}+{ev.count}: present pages must be 1..block pages, vmemmap pages below the block")
        group = None
        if ev.mgid >= 0:
            group = m.groups.get(ev.mgid)
            if group is None or group.nid != ev.node or ev.early:
                raise SnapshotError(self.index, f"blocks {ev.first}+{ev.count}: group {ev.mgid} undefined, on another node, or given to early memory")
        for b in range(ev.first, ev.first + ev.count):
            if b in m.blocks:
                raise SnapshotError(self.index, f"memory{b} defined twice")
            mem = m.blocks[b] = MemoryBlock(b, b * m.block_pages, ev.node, ev.state, ev.early, ev.present_pages)
            mem.nr_vmemmap_pages = ev.vmemmap_pages
            if online and ev.zone is not ZONE_NONE:
                mem.zone = node.zones[ev.zone]
            if group is not None:
                mem.group = group
                group.blocks.add(b)
                if online:
                    kind = "present_movable_pages" if ev.zone is ZONE_MOVABLE else "present_kernel_pages"
                    setattr(group, kind, getattr(group, kind) + m.block_pages)
        if group is not None and group.is_dynamic:
            update_dynamic_group_term(m, group)
        start = ev.first * m.block_size
        m.resources.append((start, start + ev.count * m.block_size))
        m.resources.sort()
        return 0

    def _boot_unknown(self, ev: BootUnknown) -> int:
        self._booting(ev)
        self.unknown.add((ev.fact, ev.mgid if ev.fact is UnknownFact.GROUP_UNIT else -1))
        return 0

    # --- requests ----------------------------------------------------------------------------------

    def _param_write(self, ev: ParamWrite) -> int:
        rc = write_param(self.m.params, ev.param, ev.value)
        if ev.param is Param.AUTO_MOVABLE_RATIO and not rc:
            recompute_dynamic_group_terms(self.m)
        return rc

    def _inject_failure(self, ev: InjectFailure) -> int:
        if ev.errno:
            self.m.failures[(ev.block, ev.op)] = ev.errno
        else:
            self.m.failures.pop((ev.block, ev.op), None)
        return 0

