"""drivers/base/memory.c and the device core: block devices, state/online stores, groups, valid_zones."""

from __future__ import annotations

import errno

from replay.model.machine import (
    MEM_ABSENT,
    MEM_GOING_OFFLINE,
    MEM_OFFLINE,
    MEM_ONLINE,
    MHP_OFFLINE,
    MHP_ONLINE,
    MHP_REGISTER,
    MMOP_OFFLINE,
    MMOP_ONLINE,
    MMOP_ONLINE_KERNEL,
    NUMA_NO_NODE,
    ONLINE_POLICY_AUTO_MOVABLE,
    ZONE_MOVABLE,
    ZONE_NONE,
    Machine,
    MemoryBlock,
    MemoryGroup,
)
from replay.model.memory_hotplug import (
    adjust_present_page_count,
    move_pfn_range_to_zone,
    offline_pages,
    online_pages,
    remove_pfn_range_from_zone,
    update_dynamic_group_term,
    zone_for_pfn_range,
)
from replay.model.outcome import AutoMovableStats, BlockChange, Decision
from traces.events import BlockState, OnlineType, ZoneType

MEM_ONLINE = MEM_ONLINE
MEM_OFFLINE = MEM_OFFLINE


def group_id(mem: MemoryBlock) -> int:
    """The block's group id, -1 without a group."""
    return -1 if mem.group is None else mem.group.mgid


# --- onlining and offlining one block --------------------------------------------------------------


def memory_block_online(m: Machine, mem: MemoryBlock) -> int:
    """drivers/base/memory.c:memory_block_online (6.1)."""
    start_pfn = mem.start_pfn
    nr_pages = m.block_pages
    v = mem.nr_vmemmap_pages
    online_type = mem.online_type
    stats: list[AutoMovableStats] = []
    zone = zone_for_pfn_range(m, online_type, mem.nid, mem.group, start_pfn, nr_pages, stats)
    policy_decided = online_type is MMOP_ONLINE and m.params.online_policy is ONLINE_POLICY_AUTO_MOVABLE
    m.outcome.decisions.append(Decision._make((mem.id, online_type, policy_decided, zone.idx, tuple(stats))))
    if v:
        move_pfn_range_to_zone(m, zone, start_pfn, v)  # mhp_init_memmap_on_memory
    rc = online_pages(m, mem, start_pfn + v, nr_pages - v, zone)
    if rc:
        if v:
            remove_pfn_range_from_zone(m, zone, start_pfn, v)  # mhp_deinit_memmap_on_memory
        return rc
    if v and "M10" not in m.variants:  # M10 (seeded mutation) forgets the vmemmap pages
        adjust_present_page_count(m, zone, mem.early, mem.group, v)
    mem.zone = zone
    return 0


def memory_block_offline(m: Machine, mem: MemoryBlock) -> int:
    """drivers/base/memory.c:memory_block_offline (6.1)."""
    zone = mem.zone
    if zone is None:
        return -errno.EINVAL
    v = mem.nr_vmemmap_pages
    if v:
        adjust_present_page_count(m, zone, mem.early, mem.group, -v)
    rc = offline_pages(m, mem, mem.start_pfn + v, m.block_pages - v, zone)
    if rc:
        if v:
            adjust_present_page_count(m, zone, mem.early, mem.group, v)
        return rc
    mem.zone = None
    return 0


def memory_block_change_state(m: Machine, mem: MemoryBlock, to_state: BlockState, from_state: BlockState) -> int:
    """drivers/base/memory.c:memory_block_change_state (6.1)."""
    if mem.state is not from_state:
        return -errno.EINVAL
    if to_state is MEM_OFFLINE:
        mem.state = MEM_GOING_OFFLINE
        left = mem.zone
        rc = memory_block_offline(m, mem)
    else:
        rc = memory_block_online(m, mem)
        left = mem.zone
    mem.state = from_state if rc else to_state
    if not rc:
        assert left is not None
        pages = m.block_pages if to_state is MEM_ONLINE else -m.block_pages
        m.outcome.changes.append(BlockChange._make((mem.id, mem.nid, -1 if mem.group is None else mem.group.mgid, to_state, left.idx, pages)))
    return rc


def memory_subsys_online(m: Machine, mem: MemoryBlock) -> int:
    """drivers/base/memory.c:memory_subsys_online (6.1)."""
    if mem.state is MEM_ONLINE:
        return 0
    if mem.online_type is MMOP_OFFLINE:
        mem.online_type = MMOP_ONLINE
    rc = memory_block_change_state(m, mem, MEM_ONLINE, MEM_OFFLINE)
    mem.online_type = MMOP_OFFLINE
    return rc


def memory_subsys_offline(m: Machine, mem: MemoryBlock) -> int:
    """drivers/base/memory.c:memory_subsys_offline (6.1)."""
    if mem.state is MEM_OFFLINE:
        return 0
    return memory_block_change_state(m, mem, MEM_OFFLINE, MEM_ONLINE)


def device_online(m: Machine, mem: MemoryBlock) -> int:
    """drivers/base/core.c:device_online (6.1): 1 if already online (dev->offline false)."""
    if mem.state is MEM_ONLINE:
        return 1
    return memory_subsys_online(m, mem)


def device_offline(m: Machine, mem: MemoryBlock) -> int:
    """drivers/base/core.c:device_offline (6.1): 1 if already offline."""
    if mem.state is not MEM_ONLINE:
        return 1
    return memory_subsys_offline(m, mem)


def state_store(m: Machine, block: int, online_type: OnlineType) -> int:
    """drivers/base/memory.c:state_store (6.1); 0 (the byte count) or -errno."""
    mem = m.blocks.get(block)
    if mem is None:
        return -errno.ENOENT  # no such sysfs file
    if online_type is MMOP_OFFLINE:
        rc = device_offline(m, mem)
    else:
        mem.online_type = online_type  # stored before device_online: quirk Q1
        rc = device_online(m, mem)
    if rc > 0 and "M7" in m.variants:  # seeded mutation: "already online" reported as success
        return 0
    return rc if rc < 0 else (-errno.EINVAL if rc > 0 else 0)


def online_store(m: Machine, block: int, value: bool) -> int:
    """drivers/base/core.c:online_store (6.1): "already so" is success."""
    mem = m.blocks.get(block)
    if mem is None:
        return -errno.ENOENT
    rc = device_online(m, mem) if value else device_offline(m, mem)
    return min(rc, 0)


def valid_zones(m: Machine, mem: MemoryBlock) -> tuple[ZoneType, ...]:
    """drivers/base/memory.c:valid_zones_show (6.1): online: its zone; offline: default first."""
    if mem.state is MEM_ONLINE:
        return (mem.zone.idx if mem.zone is not None else ZONE_NONE,)
    args = (mem.nid, mem.group, mem.start_pfn, m.block_pages)
    default = zone_for_pfn_range(m, MMOP_ONLINE, *args).idx
    kernel = zone_for_pfn_range(m, MMOP_ONLINE_KERNEL, *args).idx
    zones = [default]
    if kernel != default:
        zones.append(kernel)
    if default is not ZONE_MOVABLE:
        zones.append(ZONE_MOVABLE)
    return tuple(zones)


# --- block devices ----------------------------------------------------------------------------------


def create_memory_block_devices(m: Machine, start_pfn: int, nr_blocks: int, nr_vmemmap_pages: int, group: MemoryGroup | None) -> int:
    """drivers/base/memory.c:create_memory_block_devices (6.1): blocks in ascending order; on the
    first failure the blocks this call created are removed again."""
    first = start_pfn // m.block_pages
    for b in range(first, first + nr_blocks):
        rc = -errno.EEXIST if b in m.blocks else -m.failures.pop((b, MHP_REGISTER), 0) if m.failures else 0
        if rc:
            if group is not None and "B1" in m.variants:  # B1: linked into the group before registering
                group.blocks.add(b)
            remove_memory_block_devices(m, first, b - first)
            return rc
        mem = MemoryBlock(b, b * m.block_pages, NUMA_NO_NODE, MEM_OFFLINE, False, m.block_pages)
        mem.nr_vmemmap_pages = nr_vmemmap_pages
        m.blocks[b] = mem
        if group is not None:
            mem.group = group
            group.blocks.add(b)
        m.outcome.changes.append(BlockChange._make((b, mem.nid, group_id(mem), MEM_OFFLINE, ZONE_NONE, 0)))
    return 0


def remove_memory_block_devices(m: Machine, first: int, nr_blocks: int) -> None:
    """drivers/base/memory.c:remove_memory_block_devices (6.1): blocks leave their groups."""
    for b in range(first, first + nr_blocks):
        mem = m.blocks.pop(b, None)
        if mem is None:
            continue
        if mem.group is not None:
            mem.group.blocks.discard(b)
        m.failures.pop((b, MHP_ONLINE), None)
        m.failures.pop((b, MHP_OFFLINE), None)
        m.outcome.changes.append(BlockChange._make((b, mem.nid, group_id(mem), MEM_ABSENT, ZONE_NONE, 0)))


# --- memory groups (§2.9) ------------------------------------------------------------------------


def memory_group_register(m: Machine, dynamic: bool, nid: int, pages: int) -> int:
    """drivers/base/memory.c:memory_group_register_static/_dynamic (6.1); mgid or -errno."""
    if dynamic:
        if not pages or pages & (pages - 1) or pages < m.block_pages:
            return -errno.EINVAL
    elif not pages:
        return -errno.EINVAL
    elif "B2" in m.variants:  # B2: dax/kmem passed the size in bytes
        pages *= 4096
    if not m.node_possible(nid):
        return -errno.EINVAL
    mgid = m.next_mgid  # xa_alloc: lowest free id in [0, 2^31 - 1]
    while mgid in m.groups:
        mgid += 1
    if mgid > 2**31 - 1:
        return -errno.EBUSY
    m.next_mgid = mgid + 1
    group = m.groups[mgid] = MemoryGroup(mgid, nid, dynamic, pages)
    if dynamic:
        update_dynamic_group_term(m, group)
    return mgid


def memory_group_unregister(m: Machine, mgid: int) -> int:
    """drivers/base/memory.c:memory_group_unregister (6.1)."""
    group = m.groups.get(mgid) if mgid >= 0 else None
    if group is None:
        return -errno.EINVAL
    if group.blocks:
        return -errno.EBUSY
    del m.groups[mgid]
    m.next_mgid = min(m.next_mgid, mgid)
    if group.is_dynamic:
        update_dynamic_group_term(m, group, remove=True)
    return 0
