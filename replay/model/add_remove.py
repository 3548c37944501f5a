"""mm/memory_hotplug.c add and remove paths: add_memory_resource, try_remove_memory and friends."""

from __future__ import annotations

import bisect
import errno

from replay.model.findings import Finding
from replay.model.machine import (
    MAX_PHYSMEM_BITS,
    MEM_OFFLINE,
    MEM_ONLINE,
    MHP_MEMMAP_ON_MEMORY,
    MHP_NID_IS_MGID,
    MMOP_OFFLINE,
    MMOP_ONLINE_KERNEL,
    MMOP_ONLINE_MOVABLE,
    ZONE_MOVABLE,
    Machine,
)
from replay.model.memory import (
    create_memory_block_devices,
    device_offline,
    device_online,
    remove_memory_block_devices,
)
from replay.model.memory_hotplug import memmap_pages, mhp_supports_memmap_on_memory, set_node_online, update_zone_stats
from replay.model.u64 import MASK
from traces.events import AddFlags, OnlineType

PHYSMEM_END = (1 << MAX_PHYSMEM_BITS) - 1


# --- iomem resources ------------------------------------------------------------------------------


def request_region(m: Machine, start: int, end: int) -> bool:
    """Claim [start, end) of iomem as System RAM; False on overlap (request_resource conflict)."""
    res = m.resources
    i = bisect.bisect_right(res, (start, MASK))
    if i and res[i - 1][1] > start:
        return False
    if i < len(res) and res[i][0] < end:
        return False
    res.insert(i, (start, end))
    return True


def release_region(m: Machine, start: int, end: int) -> None:
    """release_mem_region_adjustable: drop [start, end), splitting resources it cuts."""
    res = m.resources
    lo = max(bisect.bisect_right(res, (start, MASK)) - 1, 0)
    hi = lo
    pieces: list[tuple[int, int]] = []
    while hi < len(res) and res[hi][0] < end:
        s, e = res[hi]
        if e > start:
            if s < start:
                pieces.append((s, start))
            if e > end:
                pieces.append((end, e))
        else:
            pieces.append((s, e))
        hi += 1
    res[lo:hi] = pieces


def api_misuse(m: Machine, what: str) -> int:
    """A request the kernel API does not allow (the kernel would BUG or WARN): record and refuse."""
    m.outcome.findings.append(Finding("API-MISUSE", m.acct.event_index, what, (what.split(":")[0],)))
    return -errno.EINVAL


# --- add (§2.2) --------------------------------------------------------------------------------------


def check_hotplug_memory_range(m: Machine, start: int, size: int) -> bool:
    """mm/memory_hotplug.c:check_hotplug_memory_range (6.1)."""
    bs = m.block_size
    return bool(size) and not start % bs and not size % bs


def add_memory(m: Machine, start: int, size: int, nid: int, flags: AddFlags) -> int:
    """mm/memory_hotplug.c:add_memory(_driver_managed) -> add_memory_resource (6.1); 0 or -errno."""
    end = start + size
    if end > MASK or start >= end or end - 1 > PHYSMEM_END:  # mhp_range_allowed
        return -errno.E2BIG
    if not request_region(m, start, end):
        return -errno.EEXIST
    rc = add_memory_resource(m, start, size, nid, flags)
    if rc and start not in m.broken:
        release_region(m, start, end)
    return rc


def add_memory_resource(m: Machine, start: int, size: int, nid: int, flags: AddFlags) -> int:
    """mm/memory_hotplug.c:add_memory_resource (6.1)."""
    mhp_flags = int(flags)
    if not check_hotplug_memory_range(m, start, size):
        return -errno.EINVAL
    group = None
    if mhp_flags & MHP_NID_IS_MGID:
        group = m.groups.get(nid)
        if group is None:
            return -errno.EINVAL
        nid = group.nid
    if not m.node_possible(nid):
        return -errno.EINVAL
    new_node = try_online_node(m, nid)
    vmemmap = 0
    if mhp_flags & MHP_MEMMAP_ON_MEMORY:
        if mhp_supports_memmap_on_memory(m, size):
            vmemmap = memmap_pages(m)
        elif not m.profile.memmap_per_block:
            return -errno.EINVAL
    start_pfn = start // 4096
    first = start_pfn // m.block_pages
    nr_blocks = size // m.block_size
    rc = create_memory_block_devices(m, start_pfn, nr_blocks, vmemmap, group)
    if rc:
        if new_node:
            set_node_online(m, m.nodes[nid], False)
        if vmemmap and "B6" in m.variants:  # B6: arch_remove_memory without the altmap; the range stays broken
            m.broken.add(start)
        return rc
    for b in range(first, first + nr_blocks):  # register_memory_blocks_under_node
        m.blocks[b].nid = nid
    online_type = m.params.auto_online_blocks
    if online_type is not MMOP_OFFLINE:
        for b in range(first, first + nr_blocks):  # walk_memory_blocks stops at the first error
            mem = m.blocks[b]
            mem.online_type = online_type
            if device_online(m, mem) and "M9" not in m.variants:  # M9 (seeded) walks on
                break
    return 0


def try_online_node(m: Machine, nid: int) -> bool:
    """mm/memory_hotplug.c:__try_online_node + hotadd_init_pgdat (6.1); True if newly onlined."""
    node = m.node(nid)
    if node.online:
        return False
    for z in node.zones:  # present_early_pages is not reset (KERNEL-SEMANTICS §2.2 step 5)
        z.present_pages = z.managed_pages = z.boot_managed = 0
        z.managed_known = True
        z.zone_start_pfn = z.spanned_pages = 0
        update_zone_stats(m, z)
    node.node_present_pages = 0
    set_node_online(m, node, True)
    return True


# --- remove (§2.7, §2.8) --------------------------------------------------------------------------


def try_remove_memory(m: Machine, start: int, size: int) -> int:
    """mm/memory_hotplug.c:try_remove_memory (6.1); 0 or -errno."""
    if not check_hotplug_memory_range(m, start, size):
        return api_misuse(m, "remove: unaligned range (the kernel BUG()s)")
    first = start // m.block_size
    ids = range(first, first + size // m.block_size)
    blocks = [m.blocks.get(b) for b in ids]
    present = [b for b in blocks if b is not None]
    if len(present) != len(blocks):
        return api_misuse(m, "remove: range not fully added (arch_remove_memory of absent memory)")
    if any(b.state is not MEM_OFFLINE for b in present):
        return -errno.EBUSY
    nid = present[-1].nid
    with_altmap = [b for b in present if b.nr_vmemmap_pages]
    if m.profile.memmap_per_block:
        if with_altmap and len(with_altmap) != len(present):
            return -errno.EINVAL
    elif m.params.memmap_on_memory and with_altmap and size != m.block_size:
        return -errno.EINVAL  # "wrong granularity"
    remove_memory_block_devices(m, first, len(present))
    release_region(m, start, start + size)
    try_offline_node(m, nid)
    return 0


def try_offline_node(m: Machine, nid: int) -> None:
    """mm/memory_hotplug.c:try_offline_node (6.1): a node with nothing left goes offline."""
    node = m.nodes.get(nid)
    if node is None or node.node_spanned_pages or nid in m.cpu_nodes:
        return
    if any(b.nid == nid for b in m.blocks.values()):
        return
    set_node_online(m, node, False)


def offline_and_remove_memory(m: Machine, start: int, size: int) -> int:
    """mm/memory_hotplug.c:offline_and_remove_memory (6.1); re-onlines with explicit types on error."""
    bs = m.block_size
    if not size or start % bs or size % bs:
        return -errno.EINVAL
    first = start // bs
    touched: list[tuple[int, OnlineType]] = []
    rc = 0
    for b in range(first, first + size // bs):
        mem = m.blocks.get(b)
        if mem is None:
            continue
        zone = mem.zone if mem.state is MEM_ONLINE else None
        online_type = MMOP_ONLINE_MOVABLE if zone is not None and zone.idx is ZONE_MOVABLE else MMOP_ONLINE_KERNEL
        rc = device_offline(m, mem)
        if rc < 0:
            break
        touched.append((b, MMOP_OFFLINE if rc == 1 else online_type))
        rc = 0
    if not rc:
        rc = try_remove_memory(m, start, size)
    if rc:
        for b, online_type in touched:  # try_reonline_memory_block
            mem = m.blocks.get(b)
            if mem is not None and online_type is not MMOP_OFFLINE:
                mem.online_type = online_type
                device_online(m, mem)
    return rc
