"""Every oracle fires on a violation and stays quiet on correct behaviour."""

from __future__ import annotations

import ast
import errno
from pathlib import Path

import pytest

from replay.model.oracles import ORACLE_IDS
from replay.simulate import simulate
from tests.helpers import AUTO_MOVABLE, BLOCK, BP, OFFLINE_AUTO, boot, boot_preset, ideal_events, plug_dimm
from tests.test_observed import SCENARIOS
from traces.events import (
    AddFlags,
    AddMemory,
    Attr,
    BlockState,
    BootBlocks,
    BootMachine,
    BootZone,
    GroupRegister,
    Mark,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    Param,
    ParamWrite,
    Source,
    ZoneType,
)
from traces.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent


def oracles_of(out) -> list[str]:  # type: ignore[no-untyped-def]
    return [f.oracle for f in out.findings]


@pytest.mark.parametrize("name", ["seed-dimm", "seed-vmem"])
@pytest.mark.parametrize("profile", ["6.1", "6.12"])
def test_quiet_on_the_seed_runs(name: str, profile: str) -> None:
    for res in simulate(load_scenario(SCENARIOS / f"{name}.toml"), profile):
        assert res.findings == []


def test_every_oracle_id_is_documented() -> None:
    """The table of replay/model/oracles.py's docstring (read from the source: a compiled module need not keep it)."""
    doc = ast.get_docstring(ast.parse((ROOT / "replay" / "model" / "oracles.py").read_text())) or ""
    for oid in ORACLE_IDS:
        assert f"| {oid} " in doc, oid


def inconsistent_snapshot(present: int) -> list:
    """A snapshot whose Movable zone claims ``present`` pages with one Movable block online."""
    return [
        *ideal_events(),
        BootZone(0, ZoneType.MOVABLE, 48 * BP, BP, present, 0, 0),
        BootBlocks(48, 1, 0, BlockState.ONLINE, ZoneType.MOVABLE, False, -1, 0, BP),
    ]


def test_acct_underflow_fires_and_the_model_continues_wrapped() -> None:
    k = boot(inconsistent_snapshot(BP))
    k.apply(Mark("snapshot complete"))
    k.m.nodes[0].zones[ZoneType.MOVABLE].present_pages = 0  # counters corrupted behind the model's back
    out = k.apply(OfflineBlock(48, Attr.STATE, Source.USER))
    assert out.rc == 0
    assert "ACCT-UNDERFLOW" in oracles_of(out)
    f = next(f for f in out.findings if f.oracle == "ACCT-UNDERFLOW")
    assert f.signature == "ACCT-UNDERFLOW:Zone:present_pages" and f.event_index == k.index
    assert k.m.nodes[0].zones[ZoneType.MOVABLE].present_pages == 2**64 - BP


def test_acct_overflow_fires() -> None:
    """No snapshot holds a counter near 2^64 (the snapshot check refuses it): a model bug would."""
    k = boot(ideal_events(), OFFLINE_AUTO)
    k.apply(AddMemory(48 * BLOCK, BLOCK, 0, AddFlags.NONE))
    k.m.nodes[0].zones[ZoneType.NORMAL].present_pages = 2**64 - 1
    out = k.apply(OnlineBlock(48, OnlineType.ONLINE_KERNEL, Attr.STATE, Source.USER))
    assert "ACCT-OVERFLOW" in oracles_of(out)


def test_snapshot_present_pages_must_lie_in_online_blocks() -> None:
    """A zone present at boot with no memory blocks: a hot-add would land on its memory."""
    from replay.model.kernel import SnapshotError

    events = [e for e in ideal_events() if not (isinstance(e, BootBlocks) and e.first == 32)]
    k = boot(events, OFFLINE_AUTO)
    with pytest.raises(SnapshotError, match="its online blocks hold only 0 pages"):
        k.apply(AddMemory(40 * BLOCK, BLOCK, 0, AddFlags.NONE))


def test_requests_without_a_boot_snapshot_are_refused() -> None:
    """A trace whose first chunk (the snapshot) was lost must not replay against an empty machine."""
    from replay.model.kernel import Kernel, SnapshotError
    from replay.model.profiles import get_profile

    with pytest.raises(SnapshotError, match="no boot snapshot"):
        Kernel(get_profile("6.1")).apply(AddMemory(48 * BLOCK, BLOCK, 0, AddFlags.NONE))


def test_snapshot_kernel_zones_do_not_overlap() -> None:
    from replay.model.kernel import SnapshotError

    events = [e for e in ideal_events() if not (isinstance(e, BootZone) and e.zone is ZoneType.DMA32)]
    events.insert(2, BootZone(0, ZoneType.DMA32, 0, 16 * BP, 16 * BP - 4096, 16 * BP - 4096, 0))
    k = boot(events, OFFLINE_AUTO)
    with pytest.raises(SnapshotError, match="inside zone DMA"):
        k.apply(AddMemory(40 * BLOCK, BLOCK, 0, AddFlags.NONE))


def test_zone_and_node_present_fire_on_a_forgotten_vmemmap_adjustment() -> None:
    """M10: forgetting +v after online leaves present 512 short per block."""
    k = boot_preset(cmdline=AUTO_MOVABLE + " memory_hotplug.memmap_on_memory=1", variants=frozenset({"M10"}))
    out = k.apply(AddMemory(48 * BLOCK, BLOCK, 0, AddFlags.MEMMAP_ON_MEMORY))
    assert "ACCT-ZONE-PRESENT" in oracles_of(out)
    k.m.nodes[0].node_present_pages += 1
    out = k.apply(OfflineBlock(48, Attr.STATE, Source.USER))
    assert "ACCT-NODE-PRESENT" in oracles_of(out)


def test_acct_group_fires() -> None:
    k = boot_preset()
    mgid, out = plug_dimm(k, 48, 2 * BLOCK)
    assert oracles_of(out) == []
    k.m.groups[mgid].present_movable_pages += 1
    assert "ACCT-GROUP" in oracles_of(k.apply(OfflineBlock(48, Attr.STATE, Source.USER)))


def test_acct_early_fires() -> None:
    k = boot_preset()
    k.apply(Mark("snapshot complete"))
    k.m.nodes[0].zones[ZoneType.NORMAL].present_early_pages += 10**7  # corrupted behind the model's back
    assert "ACCT-EARLY" in oracles_of(k.apply(OfflineBlock(40, Attr.STATE, Source.USER)))
    assert oracles_of(boot_preset().apply(OfflineBlock(40, Attr.STATE, Source.USER))) == []


def test_zone_span_fires() -> None:
    k = boot_preset()
    k.apply(Mark("snapshot complete"))
    movable = k.m.nodes[0].zones[ZoneType.MOVABLE]
    movable.zone_start_pfn, movable.spanned_pages = 100 * BP, 1  # corrupted behind the model's back: onlining grows it past its node
    _, out = plug_dimm(k, 48, BLOCK)
    assert "ZONE-SPAN" in oracles_of(out)


def test_am_ratio_fires_after_a_run_time_ratio_cut() -> None:
    """Real kernel behaviour: lowering the ratio does not re-zone; the next decision sees the excess."""
    k = boot(ideal_events())
    for d in range(3):
        assert oracles_of(plug_dimm(k, 48 + 32 * d)[1]) == []
    k.apply(ParamWrite(Param.AUTO_MOVABLE_RATIO, "100"))
    _, out = plug_dimm(k, 144)
    sigs = {f.signature for f in out.findings}
    assert sigs == {"AM-RATIO:state", "AM-RATIO-NODE:state"}


def test_am_ratio_node_fires_only_per_node() -> None:
    """Node 1 (2 GiB early Normal) is over its ratio after its early memory is offlined; globally fine."""
    k = boot_preset("qemu-q35-4G-2node", OFFLINE_AUTO)
    mgid = k.apply(GroupRegister(False, 1, 16 * BP)).rc
    k.apply(AddMemory(48 * BLOCK, 16 * BLOCK, mgid, AddFlags.NID_IS_MGID))
    for b in range(48, 64):
        assert oracles_of(k.apply(OnlineBlock(b, OnlineType.ONLINE, Attr.STATE, Source.USER))) == []
    for b in range(32, 44):
        assert k.apply(OfflineBlock(b, Attr.STATE, Source.USER)).rc == 0
    k.apply(AddMemory(64 * BLOCK, BLOCK, 1, AddFlags.NONE))
    out = k.apply(OnlineBlock(64, OnlineType.ONLINE, Attr.STATE, Source.USER))
    assert {f.signature for f in out.findings} == {"AM-RATIO-NODE:state"}


def test_am_static_mixed_fires_when_the_ratio_changes_inside_a_dimm() -> None:
    k = boot(ideal_events(), OFFLINE_AUTO)
    plug_dimm(k, 48)
    for b in range(48, 56):
        assert oracles_of(k.apply(OnlineBlock(b, OnlineType.ONLINE, Attr.STATE, Source.USER))) == []
    k.apply(ParamWrite(Param.AUTO_MOVABLE_RATIO, "0"))
    out = k.apply(OnlineBlock(56, OnlineType.ONLINE, Attr.STATE, Source.USER))
    assert "AM-STATIC-MIXED" in oracles_of(out)


def test_am_static_mixed_is_quiet_when_the_user_chose_the_zones() -> None:
    """§6 M1: online_kernel on the first block, then the policy keeps the rest Normal (no mix)."""
    k = boot(ideal_events(), OFFLINE_AUTO.replace("=301", "=1000"))
    plug_dimm(k, 48)
    k.apply(OnlineBlock(48, OnlineType.ONLINE_KERNEL, Attr.STATE, Source.USER))
    outs = [k.apply(OnlineBlock(b, OnlineType.ONLINE, Attr.STATE, Source.USER)) for b in range(49, 80)]
    assert all(oracles_of(o) == [] for o in outs)
    assert {k.m.blocks[b].zone.idx for b in range(48, 80)} == {ZoneType.NORMAL}  # type: ignore[union-attr]


def test_state_errno_fires_on_success_without_change() -> None:
    """M7: state_store mapping device_online's 1 (already online) to success."""
    assert oracles_of(boot_preset().apply(OnlineBlock(40, OnlineType.ONLINE, Attr.STATE, Source.USER))) == []
    k = boot_preset(variants=frozenset({"M7"}))
    assert "STATE-ERRNO" in oracles_of(k.apply(OnlineBlock(40, OnlineType.ONLINE, Attr.STATE, Source.USER)))


def test_state_errno_quiet_on_failed_offline() -> None:
    k = boot_preset()
    out = k.apply(OfflineBlock(15, Attr.STATE, Source.USER))
    assert out.rc == -errno.EINVAL and oracles_of(out) == []


def test_snapshot_machine_geometry_is_checked() -> None:
    from replay.model.kernel import Kernel, SnapshotError
    from replay.model.profiles import get_profile

    with pytest.raises(SnapshotError, match="block size"):
        Kernel(get_profile("6.1")).apply(BootMachine(3 << 27, 1, 1))


def test_snapshot_whose_zones_cannot_hold_their_blocks_is_refused() -> None:
    from replay.model.kernel import SnapshotError

    k = boot(inconsistent_snapshot(0))
    with pytest.raises(SnapshotError, match="online blocks"):
        k.apply(Mark("snapshot complete"))


def test_snapshot_counting_a_hot_added_block_as_early_memory_is_refused() -> None:
    """Found by mhp fuzz (ACCT-EARLY:DMA32 from 3 events): a zone whose pages are all early cannot
    hold an online hot-added block; offlining it would leave present_early > present."""
    from replay.model.kernel import SnapshotError

    k = boot([*ideal_events(), BootBlocks(20, 1, 0, BlockState.ONLINE, ZoneType.DMA32, False, -1, 0, BP)])
    with pytest.raises(SnapshotError, match="32768 hot-added"):
        k.apply(Mark("snapshot complete"))


@pytest.mark.parametrize(("dynamic", "pages"), [(True, 0), (True, 3 * 32768), (True, 16384), (False, 0)])
def test_a_snapshot_group_no_kernel_registers_is_refused(dynamic: bool, pages: int) -> None:
    """A dynamic unit that is no power of two of at least a block, or an empty group (the fuzzer found a zero unit
    dividing the decision's pfn)."""
    from replay.model.kernel import Kernel, SnapshotError
    from replay.model.profiles import get_profile
    from traces.events import BootGroup, BootMachine

    k = Kernel(get_profile("6.1"))
    k.apply(BootMachine(1 << 27, 1, 1))
    with pytest.raises(SnapshotError, match=r"no .* a kernel registers"):
        k.apply(BootGroup(0, 0, dynamic, pages))
