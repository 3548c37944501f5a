"""Kernel state: struct zone, pglist_data, memory_block, memory_group and the hotplug parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from replay.model.outcome import Outcome
from replay.model.profiles import Profile
from replay.model.u64 import Accounting
from traces.events import AddFlags, Attr, BlockState, OnlineType, Op, Policy, ZoneType

PAGE_SIZE = 4096
PAGES_PER_SECTION = 32768  # 128 MiB sections (SECTION_SIZE_BITS = 27)
PAGES_PER_SUBSECTION = 512  # 2 MiB
PAGEBLOCK_PAGES = 512
STRUCT_PAGE_SIZE = 64
MAX_NUMNODES = 1024  # CONFIG_NODES_SHIFT=10 on Debian amd64
NUMA_NO_NODE = -1
MAX_PHYSMEM_BITS = 46  # x86-64 4-level paging
# The kernel's names for the enum members, as module constants (cheaper than enum attribute access).
ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, ZONE_MOVABLE, ZONE_NONE = ZoneType.DMA, ZoneType.DMA32, ZoneType.NORMAL, ZoneType.MOVABLE, ZoneType.NONE
MMOP_OFFLINE, MMOP_ONLINE, MMOP_ONLINE_KERNEL, MMOP_ONLINE_MOVABLE = OnlineType
MEM_ONLINE, MEM_GOING_OFFLINE, MEM_OFFLINE, MEM_ABSENT = BlockState.ONLINE, BlockState.GOING_OFFLINE, BlockState.OFFLINE, BlockState.ABSENT
MHP_ONLINE, MHP_OFFLINE, MHP_REGISTER = Op.ONLINE, Op.OFFLINE, Op.REGISTER
# include/linux/memory_hotplug.h mhp_t flags, as plain ints (IntFlag's & runs Python code)
MHP_NID_IS_MGID, MHP_MEMMAP_ON_MEMORY = int(AddFlags.NID_IS_MGID), int(AddFlags.MEMMAP_ON_MEMORY)
ONLINE_POLICY_CONTIG_ZONES, ONLINE_POLICY_AUTO_MOVABLE = Policy.CONTIG_ZONES, Policy.AUTO_MOVABLE
ATTR_STATE, ATTR_ONLINE = Attr.STATE, Attr.ONLINE
ZONES = (ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, ZONE_MOVABLE)


class Zone:
    """struct zone: span and present counters of one zone of one node (pages)."""

    __slots__ = (
        "boot_end",
        "boot_managed",
        "boot_start",
        "cma_pages",
        "idx",
        "managed_known",
        "managed_pages",
        "nid",
        "present_early_pages",
        "present_pages",
        "share_kernel",
        "share_movable",
        "spanned_pages",
        "zone_start_pfn",
    )

    def __init__(self, nid: int, idx: ZoneType) -> None:
        self.nid = nid
        self.idx = idx
        self.zone_start_pfn = 0
        self.spanned_pages = 0
        self.present_pages = 0
        self.present_early_pages = 0
        self.cma_pages = 0
        self.managed_pages = 0  # pages handed to the buddy allocator (/proc/zoneinfo "managed")
        self.managed_known = True  # False: the snapshot did not say how many boot pages are managed (then an upper bound)
        self.boot_managed = 0  # managed pages when the snapshot was taken (known or bound)
        self.boot_start = 0  # the span laid out at boot, for pages of multi-zone early blocks
        self.boot_end = 0
        self.share_movable = 0  # this zone's current part of Machine.zone_sums (see update_zone_stats)
        self.share_kernel = 0

    @property
    def zone_end_pfn(self) -> int:
        return self.zone_start_pfn + self.spanned_pages

    def __repr__(self) -> str:
        return f"zone {self.idx.label} (node {self.nid})"


class Node:
    """struct pglist_data: a node's zones and its span/present counters."""

    __slots__ = ("nid", "node_present_pages", "node_spanned_pages", "node_start_pfn", "online", "zones")

    def __init__(self, nid: int) -> None:
        self.nid = nid
        self.zones = tuple(Zone(nid, z) for z in ZONES)
        self.node_start_pfn = 0
        self.node_spanned_pages = 0
        self.node_present_pages = 0
        self.online = False

    def __repr__(self) -> str:
        return f"node {self.nid}"


class MemoryGroup:
    """struct memory_group: a static (DIMM) or dynamic (virtio-mem) group of blocks."""

    __slots__ = ("blocks", "is_dynamic", "mgid", "nid", "pages", "present_kernel_pages", "present_movable_pages", "term_gmov", "term_req")

    def __init__(self, mgid: int, nid: int, is_dynamic: bool, pages: int) -> None:
        self.mgid = mgid
        self.nid = nid
        self.is_dynamic = is_dynamic
        self.pages = pages  # s.max_pages (static) or d.unit_pages (dynamic)
        self.present_kernel_pages = 0
        self.present_movable_pages = 0
        self.blocks: set[int] = set()
        self.term_req = 0  # this dynamic group's current auto-movable terms (see update_dynamic_group_term)
        self.term_gmov = 0

    def __repr__(self) -> str:
        return f"group {self.mgid}"


class MemoryBlock:
    """struct memory_block: one memory block device."""

    __slots__ = ("boot_pages", "early", "group", "id", "nid", "nr_vmemmap_pages", "online_type", "present_pages", "start_pfn", "state", "zone")

    def __init__(self, bid: int, start_pfn: int, nid: int, state: BlockState, early: bool, present_pages: int) -> None:
        self.id = bid
        self.start_pfn = start_pfn
        self.nid = nid
        self.state = state
        self.zone: Zone | None = None
        self.early = early
        self.present_pages = present_pages  # < block pages when firmware holes are inside
        self.group: MemoryGroup | None = None
        self.nr_vmemmap_pages = 0
        self.online_type = OnlineType.OFFLINE
        self.boot_pages = early and state is BlockState.ONLINE  # online since boot: may hold memblock allocations

    def __repr__(self) -> str:
        return f"memory{self.id}"


@dataclass(slots=True)
class Params:
    """Hotplug parameters (module parameters, auto_online_blocks and boot-only switches)."""

    online_policy: Policy = Policy.CONTIG_ZONES
    auto_movable_ratio: int = 301  # u32
    auto_movable_numa_aware: bool = True
    auto_online_blocks: OnlineType = OnlineType.OFFLINE
    memmap_on_memory: int = 0  # 0 off, 1 on, 2 force (6.6+)
    movable_node: bool = False


@dataclass(slots=True)
class Machine:
    """All model state of one kernel instance."""

    profile: Profile
    block_pages: int = PAGES_PER_SECTION
    possible_nodes: frozenset[int] = frozenset({0})
    cpu_nodes: frozenset[int] = frozenset({0})  # nodes with CPUs never go offline
    nodes: dict[int, Node] = field(default_factory=dict)
    blocks: dict[int, MemoryBlock] = field(default_factory=dict)
    groups: dict[int, MemoryGroup] = field(default_factory=dict)
    params: Params = field(default_factory=Params)
    resources: list[tuple[int, int]] = field(default_factory=list)  # sorted disjoint [start, end) of RAM, bytes
    acct: Accounting = field(default_factory=Accounting)
    failures: dict[tuple[int, Op], int] = field(default_factory=dict)  # (block, op) -> errno of its next attempt
    # Sums of the auto-movable zone stats per scope (-1 = all online nodes): [movable, kernel_early]
    zone_sums: dict[int, list[int]] = field(default_factory=dict)
    # Sums over dynamic groups of the auto-movable group terms per scope (-1 = all nodes): [req, gmov]
    dyn_sums: dict[int, list[int]] = field(default_factory=dict)
    next_mgid: int = 0
    outcome: Outcome = field(default_factory=Outcome)  # effects of the event being applied
    variants: frozenset[str] = frozenset()  # seeded bugs switched on (replay/model/variants.py)
    broken: set[int] = field(default_factory=set)  # B6: start addresses of ranges left claimed

    @property
    def block_size(self) -> int:
        return self.block_pages * PAGE_SIZE

    def node(self, nid: int) -> Node:
        """NODE_DATA(nid): the node's pgdat, created on first use (preallocated in 6.1)."""
        n = self.nodes.get(nid)
        if n is None:
            n = self.nodes[nid] = Node(nid)
        return n

    def node_possible(self, nid: int) -> bool:
        return nid in self.possible_nodes
