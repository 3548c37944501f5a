"""Machine presets against the real kernels: each preset's boot snapshot equals what Debian's 6.1, 6.12 and 7.2
reported when the lab booted it (the guest recorder's boot records in corpus/real, the host's boot sample in
corpus/observed/lab), holes and block size included."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from traces.events import BlockState, BootBlocks, BootMachine, BootZone, Event
from traces.machines import PRESETS, MachinePreset
from traces.reader import TraceReader
from traces.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "corpus" / "real"
OBSERVED = ROOT / "corpus" / "observed" / "lab"
SNAPSHOT = (BootMachine, BootZone, BootBlocks)


def booted_from_start() -> dict[str, list[str]]:
    """Preset name -> the scenarios that use it and record from boot (record_from 0)."""
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "corpus" / "scenarios").glob("*.toml")):
        sc = load_scenario(path)
        if sc.machine.name in PRESETS and sc.record_from == 0:
            out.setdefault(sc.machine.name, []).append(sc.name)
    return out


KERNELS = sorted(p.name for p in REAL.iterdir() if p.is_dir())
USED = booted_from_start()
CASES = [(preset, names[0], k) for preset, names in sorted(USED.items()) for k in KERNELS]
IDS = [f"{k}/{preset}" for preset, _, k in CASES]


def snapshot(events: tuple[Event, ...] | list[Event]) -> Counter[Event]:
    """The boot snapshot as a multiset, managed pages left out (presets do not give them; they differ per kernel)."""
    return Counter(e._replace(managed=None) if isinstance(e, BootZone) else e for e in events if isinstance(e, SNAPSHOT))


def trace_boot(path: Path) -> list[Event]:
    """The boot records at the start of a real trace, up to the first event after them."""
    out: list[Event] = []
    with TraceReader(path) as r:
        for rec in r:
            if out and not isinstance(rec.event, SNAPSHOT) and any(isinstance(e, BootBlocks) for e in out):
                break
            out.append(rec.event)
    return out


def expected_sample(p: MachinePreset) -> tuple[dict[int, tuple[str, str, int]], dict[tuple[int, str], int], int]:
    """Blocks (state, valid_zones, node), present pages per zone and block size the host should read for a preset."""
    blocks = {}
    for e in p.events:
        if isinstance(e, BootBlocks):
            assert e.state is BlockState.ONLINE
            for b in range(e.first, e.first + e.count):
                blocks[b] = ("online", e.zone.label, e.node)
    zones = {(e.node, e.zone.label): e.present for e in p.events if isinstance(e, BootZone)}
    return blocks, zones, p.block_size


def host_sample(obs: dict[str, Any]) -> tuple[dict[int, tuple[str, str, int]], dict[tuple[int, str], int], int]:
    boot = obs["results"][0]
    assert boot["step"] == "boot"
    blocks = {int(b): (v["state"], v["zones"], v["node"]) for b, v in boot["blocks"].items()}
    zones = {(z["node"], z["zone"]): z["present"] for z in boot["zones"] if z["zone"] != "Device"}
    return blocks, zones, int(boot["params"][-1], 16)


def test_every_preset_is_booted_by_a_scenario_on_every_kernel() -> None:
    assert set(USED) == set(PRESETS)
    assert {"6.1", "6.12", "7.2"} <= set(KERNELS)


@pytest.mark.parametrize(("preset", "scenario", "kernel"), CASES, ids=IDS)
def test_preset_snapshot_equals_the_real_boot_records(preset: str, scenario: str, kernel: str) -> None:
    """Zones (start_pfn, spanned, present), block runs (node, zone, present pages) and the block size, as the guest recorded them."""
    real = trace_boot(REAL / kernel / f"{scenario}.mhpt")
    assert snapshot(PRESETS[preset].events) == snapshot(real)


@pytest.mark.parametrize(("preset", "scenario", "kernel"), CASES, ids=IDS)
def test_preset_snapshot_equals_the_hosts_boot_sample(preset: str, scenario: str, kernel: str) -> None:
    """What the host read from sysfs and /proc/zoneinfo right after boot: every block, every zone's present pages, the block size."""
    obs = json.loads((OBSERVED / kernel / f"{scenario}.json").read_text())
    assert obs["scenario"]["machine"] == PRESETS[preset].qemu_args[PRESETS[preset].qemu_args.index("-machine") + 1].split(",")[0]
    assert expected_sample(PRESETS[preset]) == host_sample(obs)


def test_a_large_guest_gets_2_gib_blocks() -> None:
    """x86-64 (probe_memory_block_size, 6.1-7.2): with 64 GiB or more and under a hypervisor, the largest block size up
    to 2 GiB that divides the end of boot memory; q35 with 64 GiB ends at 66 GiB, so 2 GiB. Smaller guests keep 128 MiB."""
    sizes = {p.name: p.block_size for p in PRESETS.values()}
    assert sizes.pop("qemu-q35-64G") == 2 << 30
    assert set(sizes.values()) == {128 << 20}
