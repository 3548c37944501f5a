"""Every number of KERNEL-SEMANTICS §7 (worked examples, v6.1 rules) and the §7.4 edge cases."""

from __future__ import annotations

import errno

import pytest

from replay.model.kernel import Kernel
from replay.model.memory import valid_zones
from tests.helpers import AUTO_MOVABLE, BLOCK, BP, OFFLINE_AUTO, block_zone, boot, boot_preset, ideal_events, plug_dimm
from traces.events import (
    AddFlags,
    AddMemory,
    Attr,
    GroupRegister,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    Param,
    ParamWrite,
    Source,
    ZoneType,
)

VMEM = AddFlags.NID_IS_MGID | AddFlags.DRIVER_MANAGED | AddFlags.MERGE_RESOURCE


def first_stats(out, block):  # type: ignore[no-untyped-def]
    return next(d for d in out.decisions if d.block == block).stats[0]


def test_limit_of_idealised_k() -> None:
    k = boot(ideal_events())
    _, out = plug_dimm(k, 48)
    s = first_stats(out, 48)
    assert (s.kernel_early, s.limit, s.movable) == (1_048_576, 3_156_213, 1_048_576)


def test_dimms_one_after_another() -> None:
    """§7.1: DIMMs 0-2 Movable, DIMM 3 and later Normal; the zoneinfo after five DIMMs."""
    k = boot(ideal_events())
    outs = [plug_dimm(k, 48 + 32 * d)[1] for d in range(5)]
    assert first_stats(outs[0], 49).movable == 1_048_576  # 32,768 present + 1,015,808 still needed
    assert first_stats(outs[1], 80).movable == 2_097_152
    s = first_stats(outs[2], 112)
    assert (s.movable, s.limit, s.result) == (3_145_728, 3_156_213, True)
    s = first_stats(outs[3], 144)
    assert (s.movable, s.result) == (4_194_304, False)
    assert next(d for d in outs[3].decisions if d.block == 145).stats == ()  # kernel pages in the group: no ratio test
    assert [block_zone(k, b) for b in (48, 79, 80, 111, 112, 143)] == ["Movable"] * 6
    assert {block_zone(k, b) for b in range(144, 208)} == {"Normal"}
    movable, normal = k.m.nodes[0].zones[ZoneType.MOVABLE], k.m.nodes[0].zones[ZoneType.NORMAL]
    assert (movable.present_pages, movable.spanned_pages, movable.zone_start_pfn) == (3_145_728, 3_145_728, 1_572_864)
    assert (normal.present_pages, normal.zone_start_pfn, normal.spanned_pages) == (2_621_440, 1_048_576, 5_767_168)
    assert normal.zone_start_pfn + normal.spanned_pages == 6_815_744


@pytest.mark.parametrize(("kernel_early", "dimm2"), [(1_045_093, "Movable"), (1_045_092, "Normal")])
def test_k_range_of_the_seed_decisions(kernel_early: int, dimm2: str) -> None:
    """§7: decisions hold for K in [1,045,093, 1,054,345]; below, DIMM 2 no longer fits."""
    k = boot(ideal_events(kernel_early))
    for d in range(4):
        plug_dimm(k, 48 + 32 * d)
    assert block_zone(k, 112) == dimm2
    assert block_zone(k, 144) == "Normal"


def test_ratio_300_exact_limit_is_still_movable() -> None:
    """§6 M4: with ratio 300 and K = 1,048,576, DIMM 2 tests 3,145,728 <= 3,145,728."""
    k = boot(ideal_events(), AUTO_MOVABLE.replace("=301", "=300"))
    outs = [plug_dimm(k, 48 + 32 * d)[1] for d in range(3)]
    s = first_stats(outs[2], 112)
    assert (s.movable, s.limit) == (3_145_728, 3_145_728)
    assert block_zone(k, 143) == "Movable"


def grow_vmem(k: Kernel, first: int, last: int, node: int = 0) -> int:
    mgid = k.apply(GroupRegister(True, node, BP)).rc
    for b in range(first, last + 1):
        assert k.apply(AddMemory(b * BLOCK, BLOCK, mgid, VMEM)).rc == 0
    return mgid


def test_virtio_mem_growing() -> None:
    """§7.2: 48-143 Movable, then 1 Normal + 3 Movable with the limits quoted; first 4-run at 413-416."""
    k = boot(ideal_events())
    mgid = k.apply(GroupRegister(True, 0, BP)).rc
    stats = {}
    for b in range(48, 430):
        out = k.apply(AddMemory(b * BLOCK, BLOCK, mgid, VMEM))
        stats[b] = first_stats(out, b)
    assert {block_zone(k, b) for b in range(48, 144)} == {"Movable"}
    assert (stats[143].movable, stats[143].result) == (3_145_728, True)
    assert (stats[144].movable, stats[144].limit, block_zone(k, 144)) == (3_178_496, 3_156_213, "Normal")
    assert (stats[145].kernel_early, stats[145].limit) == (1_081_344, 3_254_845)
    assert [stats[b].movable for b in (145, 146, 147)] == [3_178_496, 3_211_264, 3_244_032]
    assert (stats[148].movable, block_zone(k, 148)) == (3_276_800, "Normal")
    assert (stats[149].kernel_early, stats[149].limit) == (1_114_112, 3_353_477)
    assert (stats[152].movable, block_zone(k, 152)) == (3_375_104, "Normal")
    assert stats[153].limit == 3_452_108
    zones = "".join("N" if block_zone(k, b) == "Normal" else "M" for b in range(144, 430))
    assert zones.startswith("NMMM" * 10)
    first_four = zones.index("MMMM") + 144
    assert first_four == 413 and zones[first_four - 144 : first_four - 140] == "MMMM"


def test_contig_zones_span_example() -> None:
    """§7.3: spans grow, contain each other and shrink only at their edges."""
    k = boot(ideal_events(), "memhp_default_state=offline memory_hotplug.online_policy=contig-zones")
    assert k.apply(AddMemory(48 * BLOCK, 32 * BLOCK, 0, AddFlags.NONE)).rc == 0
    normal, movable = k.m.nodes[0].zones[ZoneType.NORMAL], k.m.nodes[0].zones[ZoneType.MOVABLE]

    def online(b: int, t: OnlineType = OnlineType.ONLINE) -> str:
        assert k.apply(OnlineBlock(b, t, Attr.STATE, Source.USER)).rc == 0
        return block_zone(k, b)

    def span(z) -> tuple[int, int]:  # type: ignore[no-untyped-def]
        return z.zone_start_pfn // BP, (z.zone_start_pfn + z.spanned_pages) // BP

    assert online(60, OnlineType.ONLINE_MOVABLE) == "Movable" and span(movable) == (60, 61)
    assert online(50) == "Normal" and span(normal) == (32, 51)
    assert online(70) == "Normal" and span(normal) == (32, 71)
    assert online(65) == "Normal"
    assert k.apply(OfflineBlock(60, Attr.STATE, Source.USER)).rc == 0
    assert (movable.zone_start_pfn, movable.spanned_pages) == (0, 0)
    assert online(60) == "Normal"
    assert k.apply(OfflineBlock(70, Attr.STATE, Source.USER)).rc == 0
    assert span(normal) == (32, 66)
    assert online(68) == "Normal"


def test_valid_zones_of_offline_dimm_blocks() -> None:
    """§7.4: with auto-online off DIMM 0 block 48 shows "Movable Normal", DIMM 3 block 144 "Normal Movable"."""
    k = boot(ideal_events(), OFFLINE_AUTO)
    plug_dimm(k, 48)
    assert valid_zones(k.m, k.m.blocks[48]) == (ZoneType.MOVABLE, ZoneType.NORMAL)
    for d in range(3):
        if d:
            plug_dimm(k, 48 + 32 * d)
        for b in range(48 + 32 * d, 80 + 32 * d):
            assert k.apply(OnlineBlock(b, OnlineType.ONLINE, Attr.STATE, Source.USER)).rc == 0
    plug_dimm(k, 144)
    assert valid_zones(k.m, k.m.blocks[144]) == (ZoneType.NORMAL, ZoneType.MOVABLE)
    assert valid_zones(k.m, k.m.blocks[48]) == (ZoneType.MOVABLE,)


@pytest.mark.parametrize(("aware", "zone"), [("Y", "Normal"), ("N", "Movable")])
def test_virtio_mem_on_a_memoryless_node(aware: str, zone: str) -> None:
    """§7.4: per-node K = 0 makes every block Normal when NUMA-aware; the global test otherwise."""
    k = boot_preset("qemu-q35-4G-memless1", AUTO_MOVABLE + f" memory_hotplug.auto_movable_numa_aware={aware}")
    grow_vmem(k, 48, 51, node=1)
    assert {block_zone(k, b) for b in range(48, 52)} == {zone}
    assert {k.m.blocks[b].nid for b in range(48, 52)} == {1}


def test_ratio_zero_means_kernel_zone_and_no_group_terms() -> None:
    k = boot(ideal_events(), AUTO_MOVABLE.replace("=301", "=0"))
    grow_vmem(k, 48, 49)
    plug_dimm(k, 80)
    assert {block_zone(k, b) for b in [48, 49, *range(80, 112)]} == {"Normal"}
    assert {(g.term_req, g.term_gmov) for g in k.m.groups.values() if g.is_dynamic} == {(0, 0)}


def test_online_an_online_block() -> None:
    """§7.4: "online" to state of an online block is -EINVAL; "1" to online succeeds with no event."""
    k = boot_preset()
    assert k.apply(OnlineBlock(32, OnlineType.ONLINE, Attr.STATE, Source.USER)).rc == -errno.EINVAL
    out = k.apply(OnlineBlock(32, OnlineType.ONLINE, Attr.ONLINE, Source.USER))
    assert (out.rc, out.changes, out.findings) == (0, [], [])


def test_offline_early_blocks() -> None:
    """§7.4: block 0 spans DMA and DMA32 (-EINVAL); a full early Normal block lowers K by 32,768."""
    k = boot(ideal_events(), OFFLINE_AUTO)
    assert k.apply(OfflineBlock(0, Attr.STATE, Source.USER)).rc == -errno.EINVAL
    plug_dimm(k, 48)
    before = first_stats(k.apply(OnlineBlock(48, OnlineType.ONLINE, Attr.STATE, Source.USER)), 48)
    assert k.apply(OfflineBlock(48, Attr.STATE, Source.USER)).rc == 0
    assert k.apply(OfflineBlock(40, Attr.STATE, Source.USER)).rc == 0
    after = first_stats(k.apply(OnlineBlock(48, OnlineType.ONLINE, Attr.STATE, Source.USER)), 48)
    assert before.kernel_early - after.kernel_early == 32_768
    assert before.limit - after.limit == 98_631


def test_early_block_with_firmware_holes_cannot_offline() -> None:
    """q35: block 15 holds the 33 reserved pages below 2 GiB (walk_system_ram_range: memory holes)."""
    k = boot_preset()
    assert k.apply(OfflineBlock(15, Attr.STATE, Source.USER)).rc == -errno.EINVAL
    assert k.apply(OfflineBlock(14, Attr.STATE, Source.USER)).rc == 0


def test_ratio_write_at_run_time_applies_to_later_decisions() -> None:
    k = boot(ideal_events())
    plug_dimm(k, 48)
    assert k.apply(ParamWrite(Param.AUTO_MOVABLE_RATIO, "0x64\n")).rc == 0  # 100 %
    assert k.m.params.auto_movable_ratio == 100
    plug_dimm(k, 80)  # 2,097,152 > 1,048,576
    assert block_zone(k, 48) == "Movable" and block_zone(k, 80) == "Normal"
