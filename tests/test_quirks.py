"""Quirks Q1 and Q3 and the u64/s32 arithmetic of the auto-movable ratio."""

from __future__ import annotations

import errno

from tests.helpers import AUTO_MOVABLE, BLOCK, BP, block_zone, boot, ideal_events
from traces.events import (
    AddFlags,
    AddMemory,
    Attr,
    BlockState,
    BootBlocks,
    BootMachine,
    BootZone,
    GroupRegister,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    Param,
    ParamWrite,
    Source,
    ZoneType,
)


def test_q1_stale_online_type_is_used_by_a_later_online_store() -> None:
    """Q1: "online_movable" to an online block fails but leaves online_type set; "1" > online uses it."""
    k = boot(ideal_events(), AUTO_MOVABLE.replace("=301", "=0"))
    k.apply(AddMemory(48 * BLOCK, BLOCK, 0, AddFlags.NONE))
    assert block_zone(k, 48) == "Normal"  # ratio 0: the policy says kernel zone
    assert k.apply(OnlineBlock(48, OnlineType.ONLINE_MOVABLE, Attr.STATE, Source.USER)).rc == -errno.EINVAL
    assert k.apply(OfflineBlock(48, Attr.STATE, Source.USER)).rc == 0
    assert k.apply(OnlineBlock(48, OnlineType.ONLINE, Attr.ONLINE, Source.USER)).rc == 0
    assert block_zone(k, 48) == "Movable"
    # the type is one-shot: after this online it is reset, so the next "1" follows the policy
    k.apply(OfflineBlock(48, Attr.STATE, Source.USER))
    k.apply(OnlineBlock(48, OnlineType.ONLINE, Attr.ONLINE, Source.USER))
    assert block_zone(k, 48) == "Normal"


def q3_machine() -> list:
    """DMA32's span reaches block 20 but only blocks 0-15 are RAM: hotplug lands inside the span."""
    return [
        BootMachine(BLOCK, 1, 1),
        BootZone(0, ZoneType.DMA, 0, 4096, 4096, 4096, 0),
        BootZone(0, ZoneType.DMA32, 4096, 20 * BP - 4096, 16 * BP - 4096, 16 * BP - 4096, 0),
        BootZone(0, ZoneType.NORMAL, 32 * BP, 16 * BP, 16 * BP, 16 * BP, 0),
        BootZone(0, ZoneType.MOVABLE, 0, 0, 0, 0, 0),
        BootBlocks(0, 1, 0, BlockState.ONLINE, ZoneType.NONE, True, -1, 0, BP),
        BootBlocks(1, 15, 0, BlockState.ONLINE, ZoneType.DMA32, True, -1, 0, BP),
        BootBlocks(32, 16, 0, BlockState.ONLINE, ZoneType.NORMAL, True, -1, 0, BP),
    ]


def test_q3_kernel_zone_uses_the_moved_pfn_and_the_need() -> None:
    """Q3: in a BBM unit the kernel zone is chosen for the unit's end / the first kernel section."""
    k = boot(q3_machine(), AUTO_MOVABLE.replace("=301", "=1"))
    mgid = k.apply(GroupRegister(True, 0, 8 * BP)).rc
    assert k.apply(AddMemory(16 * BLOCK, 8 * BLOCK, mgid, AddFlags.NID_IS_MGID | AddFlags.DRIVER_MANAGED)).rc == 0
    # block 16: ratio check fails after the loop moved pfn to the unit's end -> Normal, not DMA32
    assert block_zone(k, 16) == "Normal"
    # later blocks: the loop stops at block 16 (kernel) with pfn = block 16 -> DMA32 intersects
    assert [block_zone(k, b) for b in range(17, 24)] == ["DMA32"] * 7


def test_ratio_above_s32_max_zeroes_the_group_term() -> None:
    """§1.1: a ratio > 2^31-1 is negative as s32; the division by 2^64-|r| makes the group term 0."""
    k = boot(ideal_events())
    mgid = k.apply(GroupRegister(True, 0, BP)).rc
    for b in range(48, 52):
        k.apply(AddMemory(b * BLOCK, BLOCK, mgid, AddFlags.NID_IS_MGID))
    g = k.m.groups[mgid]
    assert g.term_req > 0
    assert k.apply(ParamWrite(Param.AUTO_MOVABLE_RATIO, str(2**31))).rc == 0
    assert (g.term_req, g.term_gmov) == (0, 4 * BP)
