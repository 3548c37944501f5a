"""Groups, add, remove, offline_and_remove and auto-online with the kernel's return codes (§2)."""

from __future__ import annotations

import errno

from tests.helpers import AUTO_MOVABLE, BLOCK, BP, GIB, OFFLINE_AUTO, block_zone, boot, boot_preset, ideal_events, plug_dimm, zones_of
from traces.events import (
    AddFlags,
    AddMemory,
    Attr,
    BlockState,
    GroupRegister,
    GroupUnregister,
    InjectFailure,
    OfflineAndRemoveMemory,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    Op,
    RemoveMemory,
    Source,
)


def test_group_registration_rules_and_lowest_free_id() -> None:
    k = boot_preset()
    assert k.apply(GroupRegister(False, 0, 0)).rc == -errno.EINVAL
    assert k.apply(GroupRegister(True, 0, 3 * BP)).rc == -errno.EINVAL  # not a power of two
    assert k.apply(GroupRegister(True, 0, BP // 2)).rc == -errno.EINVAL  # below the block size
    assert k.apply(GroupRegister(False, 1, BP)).rc == -errno.EINVAL  # node not possible
    assert [k.apply(GroupRegister(False, 0, BP)).rc for _ in range(3)] == [0, 1, 2]
    assert k.apply(GroupUnregister(1)).rc == 0
    assert k.apply(GroupUnregister(1)).rc == -errno.EINVAL
    assert k.apply(GroupUnregister(-3)).rc == -errno.EINVAL
    assert k.apply(GroupRegister(True, 0, BP)).rc == 1  # the lowest free id is reused
    assert k.apply(GroupRegister(True, 0, BP)).rc == 3


def test_group_with_blocks_cannot_unregister() -> None:
    k = boot_preset()
    mgid, _ = plug_dimm(k, 48, BLOCK)
    assert k.apply(GroupUnregister(mgid)).rc == -errno.EBUSY
    assert k.apply(OfflineBlock(48, Attr.STATE, Source.USER)).rc == 0
    assert k.apply(RemoveMemory(48 * BLOCK, BLOCK)).rc == 0
    assert k.apply(GroupUnregister(mgid)).rc == 0


def test_add_memory_errors() -> None:
    k = boot_preset()
    assert k.apply(AddMemory(2**64 - BLOCK, BLOCK, 0, AddFlags.NONE)).rc == -errno.E2BIG
    assert k.apply(AddMemory(2**46, BLOCK, 0, AddFlags.NONE)).rc == -errno.E2BIG
    assert k.apply(AddMemory(40 * BLOCK, BLOCK, 0, AddFlags.NONE)).rc == -errno.EEXIST  # boot RAM
    assert k.apply(AddMemory(48 * BLOCK + 4096, BLOCK, 0, AddFlags.NONE)).rc == -errno.EINVAL
    assert k.apply(AddMemory(48 * BLOCK, 0, 0, AddFlags.NONE)).rc == -errno.E2BIG  # start >= end
    assert k.apply(AddMemory(48 * BLOCK, BLOCK, 7, AddFlags.NID_IS_MGID)).rc == -errno.EINVAL
    assert k.apply(AddMemory(48 * BLOCK, BLOCK, 3, AddFlags.NONE)).rc == -errno.EINVAL  # node not possible
    assert k.apply(AddMemory(48 * BLOCK, BLOCK, 0, AddFlags.NONE)).rc == 0
    assert k.apply(AddMemory(48 * BLOCK, BLOCK, 0, AddFlags.NONE)).rc == -errno.EEXIST
    assert k.m.resources[-1] == (48 * BLOCK, 49 * BLOCK)


def test_auto_online_stops_at_the_first_failing_block() -> None:
    """§2.2 step 13: walk_memory_blocks stops; add still returns 0 and later blocks stay offline."""
    k = boot_preset()
    k.apply(InjectFailure(50, Op.ONLINE, errno.ENOMEM))
    _, out = plug_dimm(k, 48, 4 * BLOCK)
    assert out.rc == 0
    assert [block_zone(k, b) for b in range(48, 52)] == ["Movable", "Movable", "offline", "offline"]
    movable = k.m.nodes[0].zones[3]
    assert (movable.zone_start_pfn, movable.spanned_pages) == (48 * BP, 2 * BP)  # the failed online's span growth undone


def test_remove_requires_offline_blocks_and_misuse_is_reported() -> None:
    k = boot_preset()
    plug_dimm(k, 48, 2 * BLOCK)
    assert k.apply(RemoveMemory(48 * BLOCK, 2 * BLOCK)).rc == -errno.EBUSY
    out = k.apply(RemoveMemory(48 * BLOCK + 4096, BLOCK))
    assert out.rc == -errno.EINVAL and [f.oracle for f in out.findings] == ["API-MISUSE"]
    out = k.apply(RemoveMemory(60 * BLOCK, BLOCK))
    assert [f.oracle for f in out.findings] == ["API-MISUSE"]


def test_offline_and_remove_rolls_back_with_explicit_types() -> None:
    """§2.8: on failure every block this call offlined is re-onlined with online_kernel/online_movable."""
    k = boot(ideal_events(), OFFLINE_AUTO)
    k.apply(AddMemory(48 * BLOCK, 4 * BLOCK, 0, AddFlags.NONE))
    k.apply(OnlineBlock(48, OnlineType.ONLINE_KERNEL, Attr.STATE, Source.USER))
    k.apply(OnlineBlock(49, OnlineType.ONLINE_MOVABLE, Attr.STATE, Source.USER))
    k.apply(OnlineBlock(51, OnlineType.ONLINE_KERNEL, Attr.STATE, Source.USER))
    k.apply(InjectFailure(51, Op.OFFLINE, errno.EBUSY))
    before = zones_of(k)
    assert k.apply(OfflineAndRemoveMemory(48 * BLOCK, 4 * BLOCK)).rc == -errno.EBUSY
    assert [block_zone(k, b) for b in range(48, 52)] == ["Normal", "Movable", "offline", "Normal"]
    assert zones_of(k) == before
    assert k.apply(OfflineAndRemoveMemory(48 * BLOCK, 4 * BLOCK)).rc == 0
    assert not any(b in k.m.blocks for b in range(48, 52))
    assert k.apply(OfflineAndRemoveMemory(48 * BLOCK + 1, BLOCK)).rc == -errno.EINVAL


def test_online_type_is_one_shot_and_offline_twice_fails() -> None:
    k = boot_preset()
    plug_dimm(k, 48, BLOCK)
    assert k.apply(OfflineBlock(48, Attr.STATE, Source.USER)).rc == 0
    assert k.apply(OfflineBlock(48, Attr.STATE, Source.USER)).rc == -errno.EINVAL
    assert k.apply(OfflineBlock(48, Attr.ONLINE, Source.USER)).rc == 0  # "0" > online: already so
    assert k.apply(OnlineBlock(99, OnlineType.ONLINE, Attr.STATE, Source.USER)).rc == -errno.ENOENT


def test_memmap_on_memory_6_1_single_block_only() -> None:
    cmd = AUTO_MOVABLE + " memory_hotplug.memmap_on_memory=1"
    k = boot_preset(cmdline=cmd)
    assert k.apply(AddMemory(48 * BLOCK, 2 * BLOCK, 0, AddFlags.MEMMAP_ON_MEMORY)).rc == -errno.EINVAL
    assert k.apply(AddMemory(48 * BLOCK, BLOCK, 0, AddFlags.MEMMAP_ON_MEMORY)).rc == 0
    mem = k.m.blocks[48]
    assert mem.nr_vmemmap_pages == 512 and mem.state is BlockState.ONLINE
    assert k.m.nodes[0].zones[3].present_pages == BP  # vmemmap pages count as present
    assert k.apply(OfflineBlock(48, Attr.STATE, Source.USER)).rc == 0
    assert k.m.nodes[0].zones[3].present_pages == 0
    assert k.apply(RemoveMemory(48 * BLOCK, BLOCK)).rc == 0


def test_memmap_on_memory_6_12_per_block() -> None:
    k = boot_preset(cmdline=AUTO_MOVABLE + " memory_hotplug.memmap_on_memory=1", profile="6.12")
    assert k.apply(AddMemory(48 * BLOCK, 2 * BLOCK, 0, AddFlags.MEMMAP_ON_MEMORY)).rc == 0
    assert [k.m.blocks[b].nr_vmemmap_pages for b in (48, 49)] == [512, 512]
    k2 = boot_preset(profile="6.12")  # feature off: the request is silently ignored from 6.6
    assert k2.apply(AddMemory(48 * BLOCK, 2 * BLOCK, 0, AddFlags.MEMMAP_ON_MEMORY)).rc == 0
    assert k2.m.blocks[48].nr_vmemmap_pages == 0


def test_profile_default_online_type() -> None:
    assert boot_preset(cmdline="", profile="6.1").m.params.auto_online_blocks is OnlineType.OFFLINE
    assert boot_preset(cmdline="", profile="6.12").m.params.auto_online_blocks is OnlineType.ONLINE


def test_node_hot_add_and_offline() -> None:
    """A hot-added memory-only node goes online with its first add and offline after its last remove."""
    k = boot_preset("qemu-q35-4G-2node")
    k.m.cpu_nodes = frozenset({0})
    k.m.possible_nodes = frozenset({0, 1, 2})
    assert k.apply(AddMemory(64 * GIB, BLOCK, 2, AddFlags.NONE)).rc == 0
    assert k.m.nodes[2].online and k.m.blocks[64 * 8].nid == 2
    assert k.apply(OfflineBlock(512, Attr.STATE, Source.USER)).rc == 0
    assert k.apply(RemoveMemory(64 * GIB, BLOCK)).rc == 0
    assert not k.m.nodes[2].online


def test_span_walks_visit_existing_blocks_only() -> None:
    """A zone span far wider than its memory is walked over its blocks, not its block-sized steps."""
    from replay.model.memory_hotplug import blocks_between, find_biggest_section_pfn, find_smallest_section_pfn

    k = boot_preset()
    m = k.m
    normal = m.nodes[0].zones[2]  # ZONE_NORMAL
    huge = 1 << 40
    assert find_smallest_section_pfn(m, normal, 0, huge) == find_smallest_section_pfn(m, normal, 0, 64 * 32768) == 32 * 32768
    assert find_biggest_section_pfn(m, normal, 0, huge) == find_biggest_section_pfn(m, normal, 0, 64 * 32768) == 48 * 32768 - 1
    assert list(blocks_between(m, 30, 34)) == [30, 31, 32, 33]
    assert list(blocks_between(m, 0, 1 << 30, descending=True))[:2] == [max(m.blocks), max(m.blocks) - 1]
