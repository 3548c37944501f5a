"""Managed pages per zone: boot pages from the snapshot, hot-added memory as each kernel accounts it,
compared with /proc/zoneinfo in replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from replay.replayer import Replayer, replay_events
from replay.simulate import simulate
from tests.helpers import BP, OFFLINE_AUTO, boot_preset
from traces.codec import Record, decode_chunk_fast, decode_payload_construct, encode_record
from traces.errors import TraceFormatError
from traces.events import AddFlags, AddMemory, Attr, BootZone, GroupRegister, OfflineBlock, OnlineBlock, OnlineType, Source, ZoneObserved, ZoneType
from traces.header import TraceHeader
from traces.reader import TraceReader
from traces.scenario import load_scenario
from traces.text import format_record, parse_text

ROOT = Path(__file__).resolve().parent.parent
REAL = sorted((ROOT / "corpus" / "real").glob("*/*.mhpt"))
OBSERVED = ROOT / "corpus" / "observed" / "lab"


def real_steps(path: Path) -> dict[int, dict[tuple[int, str], tuple[int, int]]]:
    """Per scenario step (0 = boot): every zone's (present, managed - managed at boot) as the host sampled the real
    kernel once the step settled (corpus/observed/lab, from the run that recorded the trace)."""
    obs = json.loads((OBSERVED / path.parent.name / f"{path.stem}.json").read_text())
    boot = {(z["node"], z["zone"]): z["managed"] for z in obs["results"][0]["zones"]}
    return {
        i: {(z["node"], z["zone"]): (z["present"], z["managed"] - boot[(z["node"], z["zone"])]) for z in res["zones"] if z["zone"] != "Device"}
        for i, res in enumerate(obs["results"])
    }


@pytest.mark.parametrize("path", REAL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_simulate_accounts_managed_pages_as_the_real_kernel_did(path: Path) -> None:
    """Every scenario on its kernel: after every step up to one whose outcome the model cannot know, each zone's present pages and the change of its
    managed pages since boot (memmap_on_memory vmemmap pages are present, never managed; 6.1 hosts
    the memmap of one-block DIMMs only, 6.12 of every block) equal the real kernel's."""
    real = real_steps(path)
    scenario = load_scenario(ROOT / "corpus" / "scenarios" / f"{path.stem}.toml")
    for res in simulate(scenario, path.parent.name):
        if res.unknowable:
            break  # what follows is the model's assumption (success), not a prediction
        got = {(z["node"], z["zone"]): (z["present"], z["managed_since_boot"]) for z in res.zones}
        assert {k: got.get(k) for k in real[res.index]} == real[res.index], f"step {res.index}: {res.label}"


def events_of(path: Path) -> list[Any]:
    with TraceReader(path) as r:
        return [rec.event for rec in r]


def test_replay_compares_managed_pages_after_learning_the_boot_ones() -> None:
    """The boot snapshot has no managed count: the snapshot's own /proc/zoneinfo gives it; every later
    zone observation is compared, so one page off is an accounting divergence naming ``managed``."""
    events = events_of(ROOT / "corpus" / "real" / "6.12" / "memmap-on-memory.mhpt")
    clean = replay_events(events, _profile("6.12"))
    assert clean.divergence_count == 0
    last = max(i for i, ev in enumerate(events) if isinstance(ev, ZoneObserved) and ev.zone is ZoneType.MOVABLE and ev.present)
    events[last] = events[last]._replace(managed=events[last].managed + 1)
    res = replay_events(events, _profile("6.12"))
    assert res.divergences_by_kind == {"accounting": 1}
    (m,) = res.divergences[0].mismatches
    assert (m.field, m.observed - m.model) == ("managed", 1)
    assert res.divergences[0].zones[0]["managed"] == m.model


def test_a_6_12_memmap_trace_replayed_as_6_1_diverges_in_present_and_managed() -> None:
    """The 1 GiB DIMM of memmap-on-memory: 6.12 hosts 8 x 512 vmemmap pages in the DIMM, 6.1 none."""
    res = replay_events(events_of(ROOT / "corpus" / "real" / "6.12" / "memmap-on-memory.mhpt"), _profile("6.1"))
    fields = {m.field for d in res.divergences for m in d.mismatches}
    assert {"present", "managed"} <= fields


def _profile(name: str) -> Any:
    from replay.model.profiles import get_profile

    return get_profile(name)


def test_managed_follows_online_offline_and_vmemmap_pages() -> None:
    """A one-block DIMM with memmap_on_memory: present 32768, managed 32768 - 512; offline takes both back."""
    k = boot_preset(cmdline=OFFLINE_AUTO + " memory_hotplug.memmap_on_memory=1", profile="6.1")
    movable = k.m.nodes[0].zones[ZoneType.MOVABLE]
    mgid = k.apply(GroupRegister(False, 0, BP)).rc
    assert k.apply(AddMemory(48 * BP * 4096, BP * 4096, mgid, AddFlags.NID_IS_MGID | AddFlags.MEMMAP_ON_MEMORY)).rc == 0
    assert k.apply(OnlineBlock(48, OnlineType.ONLINE_MOVABLE, Attr.STATE, Source.USER)).rc == 0
    assert (movable.present_pages, movable.managed_pages, movable.managed_known) == (BP, BP - 512, True)
    assert k.apply(OfflineBlock(48, Attr.STATE, Source.USER)).rc == 0
    assert (movable.present_pages, movable.managed_pages) == (0, 0)


def test_boot_zones_without_a_managed_count_are_an_upper_bound_until_observed() -> None:
    """Presets carry no managed count: populated boot zones are not known, empty ones are (0). A trace
    whose snapshot lacks /proc/zoneinfo compares managed only where it is known (the Movable zone)."""
    k = boot_preset()
    assert [(z.managed_known, z.managed_pages) for z in k.m.nodes[0].zones] == [(False, 3998), (False, 520159), (False, 524288), (True, 0)]
    events = events_of(ROOT / "corpus" / "real" / "6.1" / "seed-dimm.mhpt")
    first_request = next(i for i, ev in enumerate(events) if ev.KIND == "request")
    rp = Replayer(_profile("6.1"))
    for i, ev in enumerate(events):
        if i >= first_request or not isinstance(ev, ZoneObserved):
            rp.feed(i, 0, ev._replace(managed=None) if isinstance(ev, BootZone) else ev)  # a 1.0 snapshot: no managed
    zones = rp.kernel.m.nodes[0].zones
    assert rp.result.divergence_count == 0 and not zones[ZoneType.NORMAL].managed_known
    assert zones[ZoneType.MOVABLE].managed_known and zones[ZoneType.MOVABLE].managed_pages == 3 * 4 * 262144  # DIMMs 0-2 Movable


# --- boot_zone.managed, appended in format 1.1 ---------------------------------------------------------

OLD = BootZone(0, ZoneType.DMA, 1, 4095, 3998, 3998, 0)


def test_a_format_1_0_boot_zone_reads_as_not_recorded_and_writes_back_unchanged() -> None:
    raw = encode_record(Record(5, 7, 0, OLD))
    assert len(raw) == 20 + 2 + 1 + 5 * 8  # the 1.0 body: managed is not written
    for decode in (decode_chunk_fast, lambda b: decode_payload_construct(b, 1)):
        (ev,) = decode(raw).events
        assert ev == OLD and ev.managed is None
    line = format_record(Record(5, 7, 0, OLD))
    assert "managed" not in line and line.endswith("cma=0")
    assert parse_text(f"%mhpt 1.0\n{line}\n")[1][0].event == OLD  # strict text: an appended field may be absent


def test_a_recorded_managed_count_round_trips_and_must_fit_its_wire_type() -> None:
    ev = OLD._replace(managed=3840)
    raw = encode_record(Record(0, 0, 0, ev))
    assert len(raw) == 20 + 2 + 1 + 6 * 8
    assert decode_chunk_fast(raw).events == [ev] == decode_payload_construct(raw, 1).events
    assert parse_text(f"%mhpt 1.1\n{format_record(Record(0, 0, 0, ev))}\n")[1][0].event == ev
    with pytest.raises(ValueError, match=r"BootZone\.managed"):
        encode_record(Record(0, 0, 0, OLD._replace(managed=-1)))
    with pytest.raises(TraceFormatError, match="managed"):
        parse_text("%mhpt 1.1\nboot_zone node=0 zone=DMA start_pfn=1 spanned=1 present=1 present_early=1 cma=0 managed=x\n")


def test_new_traces_are_format_1_1() -> None:
    assert TraceHeader(writer="t").minor == 1


def test_a_snapshot_with_managed_counts_is_compared_from_the_start() -> None:
    """boot_zone.managed given: the model knows the boot pages; a snapshot zoneinfo that disagrees diverges;
    managed above present is no snapshot a kernel can be in."""
    events = events_of(ROOT / "corpus" / "real" / "6.1" / "seed-dimm.mhpt")
    observed = {(ev.node, ev.zone): ev.managed for ev in events if isinstance(ev, ZoneObserved)}  # the last ones
    first = {}
    for ev in events:
        if isinstance(ev, ZoneObserved):
            first.setdefault((ev.node, ev.zone), ev.managed)
    with_counts = [ev._replace(managed=first[(ev.node, ev.zone)]) if isinstance(ev, BootZone) else ev for ev in events]
    res = replay_events(with_counts, _profile("6.1"))
    assert res.divergence_count == 0 and observed[(0, ZoneType.MOVABLE)] == 96 * BP
    off = [ev._replace(managed=ev.managed - 1) if isinstance(ev, BootZone) and ev.zone is ZoneType.NORMAL else ev for ev in with_counts]
    res = replay_events(off, _profile("6.1"))
    assert res.divergence_count >= 1 and {m.field for d in res.divergences for m in d.mismatches} == {"managed"}
    too_many = [ev._replace(managed=ev.present + 1) if isinstance(ev, BootZone) and ev.zone is ZoneType.NORMAL else ev for ev in with_counts]
    assert "managed" in str(replay_events_error(too_many))


def replay_events_error(events: list[Any]) -> Exception:
    with pytest.raises(TraceFormatError) as e:
        replay_events(events, _profile("6.1"))
    return e.value
