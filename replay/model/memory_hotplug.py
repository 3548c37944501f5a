"""mm/memory_hotplug.c: zone decisions, online/offline of pfn ranges, spans and present counters."""

from __future__ import annotations

import errno
from collections.abc import Iterable

from replay.model.machine import (
    MEM_ONLINE,
    MHP_OFFLINE,
    MHP_ONLINE,
    MMOP_ONLINE_KERNEL,
    MMOP_ONLINE_MOVABLE,
    NUMA_NO_NODE,
    ONLINE_POLICY_AUTO_MOVABLE,
    PAGES_PER_SECTION,
    PAGES_PER_SUBSECTION,
    ZONE_MOVABLE,
    ZONE_NORMAL,
    Machine,
    MemoryBlock,
    MemoryGroup,
    Node,
    Zone,
)
from replay.model.outcome import AutoMovableStats, Unknowable
from replay.model.u64 import MASK, S64_MIN
from traces.events import OnlineType

ZONE_MOVABLE = ZONE_MOVABLE


# --- spans (§2.6) ---------------------------------------------------------------------------------


def zone_intersects(zone: Zone, pfn: int, nr_pages: int) -> bool:
    """include/linux/mmzone.h:zone_intersects (6.1), u64 arithmetic."""
    if not zone.spanned_pages:
        return False
    return not (pfn >= zone.zone_start_pfn + zone.spanned_pages or (pfn + nr_pages) & MASK <= zone.zone_start_pfn)


def resize_zone_range(zone: Zone, start_pfn: int, nr_pages: int) -> None:
    """mm/memory_hotplug.c:resize_zone_range (6.1)."""
    old_end = zone.zone_start_pfn + zone.spanned_pages
    if not zone.spanned_pages or start_pfn < zone.zone_start_pfn:
        zone.zone_start_pfn = start_pfn
    end = start_pfn + nr_pages
    zone.spanned_pages = (end if end > old_end else old_end) - zone.zone_start_pfn


def resize_pgdat_range(node: Node, start_pfn: int, nr_pages: int) -> None:
    """mm/memory_hotplug.c:resize_pgdat_range (6.1)."""
    old_end = node.node_start_pfn + node.node_spanned_pages
    if not node.node_spanned_pages or start_pfn < node.node_start_pfn:
        node.node_start_pfn = start_pfn
    end = start_pfn + nr_pages
    node.node_spanned_pages = (end if end > old_end else old_end) - node.node_start_pfn


def move_pfn_range_to_zone(m: Machine, zone: Zone, start_pfn: int, nr_pages: int) -> None:
    """mm/memory_hotplug.c:move_pfn_range_to_zone (6.1): grow zone and node spans."""
    resize_zone_range(zone, start_pfn, nr_pages)
    resize_pgdat_range(m.nodes[zone.nid], start_pfn, nr_pages)


def page_zone_of(block: MemoryBlock, pfn: int, node: Node) -> Zone | None:
    """page_zone() of an online pfn: the block's zone, or for multi-zone early blocks the boot span."""
    if block.zone is not None:
        return block.zone
    for z in node.zones:
        if z.boot_start <= pfn < z.boot_end:
            return z
    return None


def blocks_between(m: Machine, first: int, end: int, descending: bool = False) -> Iterable[int]:
    """Block ids in [first, end) that may exist, in order: the range itself, or the existing blocks
    in it when there are fewer of those (a zone span can be far wider than its memory)."""
    if end - first <= len(m.blocks):
        return range(end - 1, first - 1, -1) if descending else range(first, end)
    return sorted((b for b in m.blocks if first <= b < end), reverse=descending)


def find_smallest_section_pfn(m: Machine, zone: Zone, start_pfn: int, end_pfn: int) -> int:
    """mm/memory_hotplug.c:find_smallest_section_pfn (6.1), walked block by block; -1 if none."""
    bp = m.block_pages
    node = m.nodes[zone.nid]
    for bid in blocks_between(m, start_pfn // bp, (end_pfn + bp - 1) // bp):
        b = m.blocks.get(bid)
        if b is None or b.state is not MEM_ONLINE or b.nid != zone.nid:
            continue
        lo = max(start_pfn, b.start_pfn)
        if b.zone is None:  # several zones in one early block: step in subsections from ``lo``
            for pfn in range(lo, min(end_pfn, b.start_pfn + bp), PAGES_PER_SUBSECTION):
                if page_zone_of(b, pfn, node) is zone:
                    return pfn
        elif b.zone is zone:
            return lo
    return -1


def find_biggest_section_pfn(m: Machine, zone: Zone, start_pfn: int, end_pfn: int) -> int:
    """mm/memory_hotplug.c:find_biggest_section_pfn (6.1), walked block by block; -1 if none."""
    bp = m.block_pages
    node = m.nodes[zone.nid]
    for bid in blocks_between(m, start_pfn // bp, (end_pfn - 1) // bp + 1, descending=True):
        b = m.blocks.get(bid)
        if b is None or b.state is not MEM_ONLINE or b.nid != zone.nid:
            continue
        hi = min(end_pfn, b.start_pfn + bp) - 1
        if b.zone is None:
            for pfn in range(hi, max(start_pfn, b.start_pfn) - 1, -PAGES_PER_SUBSECTION):
                if page_zone_of(b, pfn, node) is zone:
                    return pfn
        elif b.zone is zone and hi >= start_pfn:
            return hi
    return -1


def shrink_zone_span(m: Machine, zone: Zone, start_pfn: int, end_pfn: int) -> bool:
    """mm/memory_hotplug.c:shrink_zone_span (6.1): only edges shrink, interior holes stay.

    Returns whether the span changed (the kernel does not need to know).
    """
    zone_end = zone.zone_start_pfn + zone.spanned_pages
    if zone.zone_start_pfn == start_pfn:
        pfn = find_smallest_section_pfn(m, zone, end_pfn, zone_end)
        if pfn >= 0:
            zone.spanned_pages = zone_end - pfn
            zone.zone_start_pfn = pfn
        else:
            zone.zone_start_pfn = zone.spanned_pages = 0
    elif zone_end == end_pfn:
        pfn = find_biggest_section_pfn(m, zone, zone.zone_start_pfn, start_pfn)
        if pfn >= 0:
            zone.spanned_pages = pfn - zone.zone_start_pfn + 1
        else:
            zone.zone_start_pfn = zone.spanned_pages = 0
    else:
        return False
    return True


def update_pgdat_span(node: Node) -> None:
    """mm/memory_hotplug.c:update_pgdat_span (6.1): node span = hull of non-empty zones."""
    start, end = 0, 0
    for z in node.zones:
        if not z.spanned_pages:
            continue
        if not end:
            start, end = z.zone_start_pfn, z.zone_start_pfn + z.spanned_pages
        else:
            start = min(start, z.zone_start_pfn)
            end = max(end, z.zone_start_pfn + z.spanned_pages)
    node.node_start_pfn = start
    node.node_spanned_pages = end - start


def remove_pfn_range_from_zone(m: Machine, zone: Zone, start_pfn: int, nr_pages: int) -> None:
    """mm/memory_hotplug.c:remove_pfn_range_from_zone (6.1); the node hull only moves with a zone edge."""
    if "M8" in m.variants:  # seeded mutation: the span becomes the hull of the zone's online blocks
        online = [b for b in m.blocks.values() if b.zone is zone and b.state is MEM_ONLINE]
        zone.zone_start_pfn = min((b.start_pfn for b in online), default=0)
        zone.spanned_pages = max((b.start_pfn + m.block_pages for b in online), default=0) - zone.zone_start_pfn
        update_pgdat_span(m.nodes[zone.nid])
    elif shrink_zone_span(m, zone, start_pfn, start_pfn + nr_pages):
        update_pgdat_span(m.nodes[zone.nid])


# --- present counters and the auto-movable group terms -----------------------------------------------


def adjust_present_page_count(m: Machine, zone: Zone, early: bool, group: MemoryGroup | None, nr_pages: int) -> None:
    """mm/memory_hotplug.c:adjust_present_page_count (6.1, unchanged to 7.1.3)."""
    add = m.acct.add
    if early:
        zone.present_early_pages = add(zone.present_early_pages, nr_pages, zone, "present_early_pages")
    zone.present_pages = add(zone.present_pages, nr_pages, zone, "present_pages")
    node = m.nodes[zone.nid]
    node.node_present_pages = add(node.node_present_pages, nr_pages, node, "node_present_pages")
    update_zone_stats(m, zone)
    if group is not None:
        if zone.idx is ZONE_MOVABLE:
            group.present_movable_pages = add(group.present_movable_pages, nr_pages, group, "present_movable_pages")
        else:
            group.present_kernel_pages = add(group.present_kernel_pages, nr_pages, group, "present_kernel_pages")
        if group.is_dynamic:
            update_dynamic_group_term(m, group)


def adjust_managed_page_count(zone: Zone, nr_pages: int) -> None:
    """mm/page_alloc.c:adjust_managed_page_count (6.1, 6.12, 7.2): the zone's managed pages.

    Onlining hands the block to the buddy allocator except its memmap_on_memory vmemmap pages, which
    are present but never managed; offlining takes back what it removed from the buddy (6.1: the
    range, 6.11+: the range less PageOffline pages; equal here, fake-offline pages are not modelled).
    """
    zone.managed_pages += nr_pages


def update_zone_stats(m: Machine, zone: Zone) -> None:
    """Keep per-scope sums of the zone stats of auto_movable_can_online_movable (6.1) current.

    The kernel sums, over populated zones (all online nodes, or one node), ZONE_MOVABLE's present
    pages plus CMA pages as movable and the other zones' early pages minus CMA pages as kernel;
    the model keeps each zone's share and adjusts the sums by its change (modulo 2^64).
    """
    if not zone.present_pages:
        mov = kern = 0
    elif zone.idx is ZONE_MOVABLE:
        mov, kern = zone.present_pages, 0
    else:
        cma = 0 if "C1" in m.variants else zone.cma_pages  # C1 (seeded mutation): CMA pages stay kernel memory
        mov, kern = cma, zone.present_early_pages - cma
    d_mov, d_kern = mov - zone.share_movable, kern - zone.share_kernel
    if not (d_mov or d_kern):
        return
    zone.share_movable, zone.share_kernel = mov, kern
    sums = m.zone_sums.setdefault(zone.nid, [0, 0])
    sums[0] = (sums[0] + d_mov) & MASK
    sums[1] = (sums[1] + d_kern) & MASK
    if m.nodes[zone.nid].online:
        sums = m.zone_sums.setdefault(NUMA_NO_NODE, [0, 0])
        sums[0] = (sums[0] + d_mov) & MASK
        sums[1] = (sums[1] + d_kern) & MASK


def set_node_online(m: Machine, node: Node, online: bool) -> None:
    """node_set_online/offline: the system-wide zone sums cover online nodes only."""
    if node.online == online:
        return
    node.online = online
    sums = m.zone_sums.setdefault(NUMA_NO_NODE, [0, 0])
    sign = 1 if online else -1
    for z in node.zones:
        sums[0] = (sums[0] + sign * z.share_movable) & MASK
        sums[1] = (sums[1] + sign * z.share_kernel) & MASK


def update_dynamic_group_term(m: Machine, group: MemoryGroup, remove: bool = False) -> None:
    """Keep the sums of all dynamic groups' terms (global and per node) equal to a fresh walk.

    mm/memory_hotplug.c:auto_movable_stats_account_group (6.1) computes each dynamic group's
    (req, gmov) terms during walk_dynamic_memory_groups; sums modulo 2^64 let the model subtract
    the excluded group instead of walking, with the identical result.
    """
    req = gmov = 0
    ratio = m.params.auto_movable_ratio
    if not remove and ratio:
        if ratio >= 1 << 31 and "M5" not in m.variants:  # read into an s32 local: negative, then back to u64
            ratio += MASK + 1 - (1 << 32)
        gmov = group.present_movable_pages
        pages = (((gmov * 100) & MASK) // ratio - group.present_kernel_pages) & MASK
        if pages and not pages & S64_MIN:
            req = pages
    d_req, d_gmov = req - group.term_req, gmov - group.term_gmov
    if not (d_req or d_gmov):
        return
    group.term_req, group.term_gmov = req, gmov
    for sums in (m.dyn_sums.setdefault(NUMA_NO_NODE, [0, 0]), m.dyn_sums.setdefault(group.nid, [0, 0])):
        sums[0] = (sums[0] + d_req) & MASK
        sums[1] = (sums[1] + d_gmov) & MASK


def recompute_dynamic_group_terms(m: Machine) -> None:
    """After a ratio change every group's term changes."""
    for g in m.groups.values():
        if g.is_dynamic:
            update_dynamic_group_term(m, g)


# --- zone decisions (§3) ------------------------------------------------------------------------------


def auto_movable_can_online_movable(m: Machine, nid: int, group: MemoryGroup | None, nr_pages: int, trace: list[AutoMovableStats] | None) -> bool:
    """mm/memory_hotplug.c:auto_movable_can_online_movable (6.1), exact u64 arithmetic.

    The zone and dynamic-group walks are read from sums kept current by update_zone_stats and
    update_dynamic_group_term (tests/test_model_caches.py proves them equal to the walks).
    """
    movable, kernel_early = m.zone_sums.get(nid, (0, 0))
    variants = m.variants
    if variants and "M3" in variants:  # seeded mutation: all present pages count as kernel memory
        nodes = [n for n in m.nodes.values() if n.online and nid in (NUMA_NO_NODE, n.nid)]
        kernel_early = sum(z.present_pages for n in nodes for z in n.zones[:3]) & MASK
    req, gmov = m.dyn_sums.get(nid, (0, 0))
    if group is not None and group.is_dynamic and (nid == NUMA_NO_NODE or group.nid == nid):
        req = (req - group.term_req) & MASK
        gmov = (gmov - group.term_gmov) & MASK
    group_kernel = 0
    if variants and "M6" in variants and group is not None and group.is_dynamic:  # seeded: guard after the credit
        kernel_early = (kernel_early + group.present_kernel_pages) & MASK
    if kernel_early <= req:
        result, limit = False, 0
    else:
        kernel_early -= req
        movable = (movable - gmov) & MASK
        if group is not None and group.is_dynamic and not (variants and ("M2" in variants or "M6" in variants)):
            group_kernel = group.present_kernel_pages
            kernel_early = (kernel_early + group_kernel) & MASK
        movable = (movable + nr_pages) & MASK
        limit = ((m.params.auto_movable_ratio * kernel_early) & MASK) // 100
        result = movable < limit if variants and "M4" in variants else movable <= limit
    if trace is not None:
        trace.append(AutoMovableStats._make((nid, movable, kernel_early, req, gmov, group_kernel, nr_pages, limit, result)))
    return result


def default_kernel_zone_for_pfn(m: Machine, nid: int, start_pfn: int, nr_pages: int) -> Zone:
    """mm/memory_hotplug.c:default_kernel_zone_for_pfn (6.1): first of DMA, DMA32 hit, else Normal."""
    zones = m.nodes[nid].zones
    for z in zones[:2]:
        if zone_intersects(z, start_pfn, nr_pages):
            return z
    return zones[ZONE_NORMAL]


def auto_movable_zone_for_pfn(m: Machine, nid: int, group: MemoryGroup | None, pfn: int, nr_pages: int, trace: list[AutoMovableStats] | None) -> Zone:
    """mm/memory_hotplug.c:auto_movable_zone_for_pfn (6.1), including quirk Q3."""
    online_pages = 0
    if m.params.auto_movable_ratio == 0:
        return default_kernel_zone_for_pfn(m, nid, pfn, nr_pages)
    if group is not None and not group.is_dynamic:
        max_pages = group.pages
        online_pages = group.present_movable_pages
        if group.present_kernel_pages and "M1" not in m.variants:
            return default_kernel_zone_for_pfn(m, nid, pfn, nr_pages)
    elif group is None or group.pages == nr_pages:
        max_pages = nr_pages
    else:  # dynamic group whose unit spans several blocks (virtio-mem BBM)
        max_pages = group.pages
        pfn -= pfn % max_pages
        end = pfn + max_pages
        while pfn < end:
            zone = section_online_zone(m, pfn)
            if zone is not None:
                if zone.idx is not ZONE_MOVABLE:
                    return default_kernel_zone_for_pfn(m, nid, pfn, nr_pages)
                online_pages += PAGES_PER_SECTION
            pfn += PAGES_PER_SECTION
    nr_pages = (max_pages - online_pages) & MASK
    if not auto_movable_can_online_movable(m, NUMA_NO_NODE, group, nr_pages, trace):
        return default_kernel_zone_for_pfn(m, nid, pfn, nr_pages)
    if m.params.auto_movable_numa_aware and not auto_movable_can_online_movable(m, nid, group, nr_pages, trace):
        return default_kernel_zone_for_pfn(m, nid, pfn, nr_pages)
    return m.nodes[nid].zones[ZONE_MOVABLE]


def section_online_zone(m: Machine, pfn: int) -> Zone | None:
    """page_zone(pfn_to_online_page(pfn)) for a section start, None if the section is not online."""
    b = m.blocks.get(pfn // m.block_pages)
    if b is None or b.state is not MEM_ONLINE:
        return None
    return page_zone_of(b, pfn, m.nodes[b.nid])


def default_zone_for_pfn(m: Machine, nid: int, start_pfn: int, nr_pages: int) -> Zone:
    """mm/memory_hotplug.c:default_zone_for_pfn (6.1), the contig-zones policy."""
    kernel_zone = default_kernel_zone_for_pfn(m, nid, start_pfn, nr_pages)
    movable_zone = m.nodes[nid].zones[ZONE_MOVABLE]
    in_kernel = zone_intersects(kernel_zone, start_pfn, nr_pages)
    in_movable = zone_intersects(movable_zone, start_pfn, nr_pages)
    if in_kernel != in_movable:
        return kernel_zone if in_kernel else movable_zone
    return movable_zone if m.params.movable_node else kernel_zone


def zone_for_pfn_range(
    m: Machine, online_type: OnlineType, nid: int, group: MemoryGroup | None, start_pfn: int, nr_pages: int, trace: list[AutoMovableStats] | None = None
) -> Zone:
    """mm/memory_hotplug.c:zone_for_pfn_range (6.1)."""
    if online_type is MMOP_ONLINE_KERNEL:
        return default_kernel_zone_for_pfn(m, nid, start_pfn, nr_pages)
    if online_type is MMOP_ONLINE_MOVABLE:
        return m.nodes[nid].zones[ZONE_MOVABLE]
    if m.params.online_policy is ONLINE_POLICY_AUTO_MOVABLE:
        return auto_movable_zone_for_pfn(m, nid, group, start_pfn, nr_pages, trace)
    return default_zone_for_pfn(m, nid, start_pfn, nr_pages)


# --- online / offline of pfn ranges (§2.4, §2.5) -------------------------------------------------------


def check_pfn_range(start_pfn: int, nr_pages: int) -> bool:
    """The alignment sanity check shared by online_pages and offline_pages (6.1)."""
    return bool(nr_pages) and not start_pfn % PAGES_PER_SUBSECTION and not (start_pfn + nr_pages) % PAGES_PER_SECTION


def online_pages(m: Machine, block: MemoryBlock, start_pfn: int, nr_pages: int, zone: Zone) -> int:
    """mm/memory_hotplug.c:online_pages (6.1); 0 or -errno (an injected notifier failure)."""
    if not check_pfn_range(start_pfn, nr_pages):
        return -errno.EINVAL
    move_pfn_range_to_zone(m, zone, start_pfn, nr_pages)
    failure = m.failures.pop((block.id, MHP_ONLINE), 0) if m.failures else 0
    if failure:  # MEM_GOING_ONLINE notifier NACK: undo the span growth
        remove_pfn_range_from_zone(m, zone, start_pfn, nr_pages)
        return -failure
    adjust_present_page_count(m, zone, block.early, block.group, nr_pages)
    adjust_managed_page_count(zone, nr_pages)  # online_pages_range -> generic_online_page -> __free_pages_core
    return 0


def offline_pages(m: Machine, block: MemoryBlock, start_pfn: int, nr_pages: int, zone: Zone) -> int:
    """mm/memory_hotplug.c:offline_pages (6.1); 0 or -errno.

    Whether isolation and migration succeed is not knowable to a model: an ``InjectFailure``
    input fact supplies the real kernel's answer for the next offline of the block.
    """
    if not check_pfn_range(start_pfn, nr_pages):
        return -errno.EINVAL
    if block.present_pages != m.block_pages:  # walk_system_ram_range: memory holes
        return -errno.EINVAL
    failure = m.failures.pop((block.id, MHP_OFFLINE), 0) if m.failures else 0
    why = offline_unknowable(block, zone)
    if why:
        m.outcome.unknowable = (*m.outcome.unknowable, Unknowable(block.id, "offline", why, -failure))
    if failure:  # isolation or migration failed (unmovable page, signal ...)
        return -failure
    block.boot_pages = False  # every page was free or migrated: nothing of boot time is left
    adjust_managed_page_count(zone, -nr_pages)  # 6.11+: what __offline_isolated_pages took from the buddy (no PageOffline pages here)
    adjust_present_page_count(m, zone, block.early, block.group, -nr_pages)
    # The kernel shrinks [start_pfn, end) here and the vmemmap head in mhp_deinit_memmap_on_memory;
    # both searches skip the now-offline block, so one shrink over the whole block is identical.
    block_start = block.start_pfn
    remove_pfn_range_from_zone(m, zone, block_start, start_pfn + nr_pages - block_start)
    return 0


def offline_unknowable(block: MemoryBlock, zone: Zone) -> str:
    """Why isolating and migrating a block's pages may fail where no model can tell ('' if it cannot).

    mm/memory_hotplug.c:offline_pages (6.1 to 7.2) fails with -EBUSY when start_isolate_page_range
    meets an unmovable page, and retries migration until a signal (-EINTR). Kernel zones (DMA, DMA32,
    Normal) take unmovable allocations (slab, page tables, the memmap of other blocks); memory online
    since boot may hold memblock allocations (the boot memmap, the kernel image) even in ZONE_MOVABLE
    (kernelcore=/movablecore=). ZONE_MOVABLE memory hot-added or onlined again takes movable
    allocations only and long-term pins migrate out of it first: its offlining is taken to succeed.
    """
    if zone.idx is not ZONE_MOVABLE:
        return f"{zone.idx.label}: unmovable kernel allocations may hold the block"
    if block.boot_pages:
        return "online since boot: memblock allocations may hold the block"
    return ""


def offline_outcome_unknowable(m: Machine, block: int) -> str:
    """offline_unknowable for an offline request of ``block`` that would reach offline_pages' isolation:
    an online block of one zone without holes ('' otherwise: its outcome follows from the model)."""
    mem = m.blocks.get(block)
    if mem is None or mem.state is not MEM_ONLINE or mem.zone is None or mem.present_pages != m.block_pages:
        return ""
    return offline_unknowable(mem, mem.zone)


def mhp_supports_memmap_on_memory(m: Machine, size: int) -> bool:
    """mm/memory_hotplug.c:mhp_supports_memmap_on_memory (6.1 by size; 6.6+ per block)."""
    if not m.params.memmap_on_memory:
        return False
    vmemmap = memmap_pages(m) * 4096
    if m.profile.memmap_per_block:
        return vmemmap < m.block_size
    nr_bytes = size
    return nr_bytes == m.block_size and not vmemmap % (PAGES_PER_SUBSECTION * 4096) and not (nr_bytes - vmemmap) % (PAGES_PER_SUBSECTION * 4096)


def memmap_pages(m: Machine) -> int:
    """Pages of a block's own memmap: block pages x 64 bytes; "force" rounds up to a pageblock."""
    pages = -(-m.block_pages * 64 // 4096)
    if m.params.memmap_on_memory == 2:
        pages = -(-pages // 512) * 512
    return pages
