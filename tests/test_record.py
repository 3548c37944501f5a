"""mhp record: snapshots of fake and real hosts replay clean; uevents become events; crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replay.model.profiles import get_profile
from replay.replayer import replay_events, replay_file
from traces.codec import FLAG_INFERRED
from traces.events import AddMemory, BlockObserved, BlockState, OfflineBlock, OnlineBlock, RemoveMemory, ZoneType
from traces.files import verify
from traces.record import Host, Recorder, parse_node_list, parse_uevent, parse_zoneinfo, snapshot_events

ZONEINFO = """Node 0, zone      DMA
  per-node stats
        spanned  4095
        present  3998
        managed  3840
        cma      0
  start_pfn:           1
Node 0, zone    DMA32
        spanned  520192
        present  520159
        managed  503775
        cma      0
  start_pfn:           4096
Node 0, zone   Normal
        spanned  524288
        present  524288
        managed  494168
        cma      0
  start_pfn:           1048576
Node 0, zone  Movable
        spanned  0
        present  0
        managed  0
        cma      0
Node 0, zone   Device
        spanned  0
        present  0
        managed  0
        cma      0
"""
IOMEM = """00001000-0009efff : System RAM
00100000-7ffdefff : System RAM
  01000000-01ffffff : Kernel code
100000000-17fffffff : System RAM
180000000-187ffffff : System RAM
"""


def fake_host(root: Path, extra_blocks: dict[int, tuple[str, str]] | None = None) -> Host:
    """A q35 4 GiB guest as sysfs/procfs show it."""
    mem = root / "sys/devices/system/memory"
    blocks = {0: ("online", "none"), **{b: ("online", "DMA32") for b in range(1, 16)}, **{b: ("online", "Normal") for b in range(32, 48)}}
    blocks.update(extra_blocks or {})
    for b, (state, zones) in blocks.items():
        d = mem / f"memory{b}"
        d.mkdir(parents=True)
        (d / "state").write_text(state + "\n")
        (d / "valid_zones").write_text(zones + "\n")
        (d / "node0").mkdir()
    (mem / "block_size_bytes").write_text("8000000\n")
    (mem / "auto_online_blocks").write_text("online\n")
    params = root / "sys/module/memory_hotplug/parameters"
    params.mkdir(parents=True)
    for k, v in {"online_policy": "auto-movable", "auto_movable_ratio": "301", "auto_movable_numa_aware": "Y", "memmap_on_memory": "N"}.items():
        (params / k).write_text(v + "\n")
    node = root / "sys/devices/system/node"
    node.mkdir(parents=True)
    (node / "possible").write_text("0\n")
    (node / "has_cpu").write_text("0\n")
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text("6.1.0-56-amd64\n")
    (root / "proc/cmdline").write_text("memhp_default_state=online\n")
    (root / "proc/zoneinfo").write_text(ZONEINFO)
    (root / "proc/iomem").write_text(IOMEM)
    return Host(root)


def test_parsers() -> None:
    assert parse_node_list("0-2,5") == [0, 1, 2, 5]
    zones = parse_zoneinfo(ZONEINFO)
    assert [(z.zone, z.present, z.start_pfn) for z in zones] == [
        (ZoneType.DMA, 3998, 1),
        (ZoneType.DMA32, 520159, 4096),
        (ZoneType.NORMAL, 524288, 1048576),
        (ZoneType.MOVABLE, 0, 0),
    ]
    msg = b"online@/devices/system/memory/memory48\0ACTION=online\0DEVPATH=/devices/system/memory/memory48\0SUBSYSTEM=memory\0SEQNUM=1\0"
    assert parse_uevent(msg) == {"ACTION": "online", "DEVPATH": "/devices/system/memory/memory48", "SUBSYSTEM": "memory", "SEQNUM": "1"}
    assert parse_uevent(b"libudev\0junk") is None


def test_fake_host_snapshot_matches_the_preset_and_replays_clean(tmp_path: Path) -> None:
    snap = fake_host(tmp_path, {48: ("offline", "Movable Normal")}).snapshot()
    evs = snapshot_events(snap)
    blocks = {e.first: e for e, _ in evs if type(e).__name__ == "BootBlocks"}
    assert blocks[0].present_pages == 3998 + 28672 and blocks[15].present_pages == 32768 - 33  # holes from /proc/iomem
    assert blocks[48].state is BlockState.OFFLINE and blocks[48].zone is ZoneType.NONE
    r = replay_events([e for e, _ in evs], get_profile("6.1"))
    assert r.divergence_count == 0 and r.matched == len(snap.blocks) + len(snap.zones) + 1


def test_uevents_become_requests_and_observations(tmp_path: Path) -> None:
    host = fake_host(tmp_path)
    snap = host.snapshot()
    written: list[tuple[object, int]] = []

    class W:
        def write(self, ev: object, flags: int = 0) -> None:
            written.append((ev, flags))

    rec = Recorder(host, W(), snap)  # type: ignore[arg-type]
    mem = tmp_path / "sys/devices/system/memory"
    for b in (48, 49):
        d = mem / f"memory{b}"
        d.mkdir()
        (d / "node0").mkdir()
        (d / "state").write_text("online\n")
        (d / "valid_zones").write_text("Movable\n")

    def ue(action: str, b: int) -> dict[str, str]:
        return {"ACTION": action, "SUBSYSTEM": "memory", "DEVPATH": f"/devices/system/memory/memory{b}"}

    for action, b in [("add", 48), ("add", 49), ("online", 48), ("online", 49), ("offline", 49), ("online", 49), ("remove", 49)]:
        rec.uevent(ue(action, b))
    evs = [e for e, _ in written]
    assert evs[0] == AddMemory(48 << 27, 2 << 27, 0, 0) and written[0][1] == FLAG_INFERRED
    assert [type(e).__name__ for e in evs[1:]] == ["BlockObserved"] * 4 + [
        "OfflineBlock",
        "BlockObserved",
        "OnlineBlock",
        "BlockObserved",
        "RemoveMemory",
        "BlockObserved",
    ]
    assert isinstance(evs[5], OfflineBlock) and isinstance(evs[7], OnlineBlock) and isinstance(evs[9], RemoveMemory)
    assert evs[-1] == BlockObserved(49, BlockState.ABSENT, -1, ())


def live_ok() -> bool:
    return Path("/sys/devices/system/memory/block_size_bytes").exists()


def require_live() -> None:
    """Skip without memory hotplug sysfs; under CI that is a failure."""
    if not live_ok():
        if os.environ.get("CI") == "true":
            pytest.fail("this host has no /sys/devices/system/memory")
        pytest.skip("no memory hotplug sysfs on this host")


def mhp(*args: str) -> list[str]:
    return [sys.executable, "-m", "replay.cli", *args]


def test_snapshot_of_this_host_replays_clean(tmp_path: Path) -> None:
    require_live()
    out = tmp_path / "host.mhpt"
    subprocess.run(mhp("record", "--snapshot", "-o", str(out)), check=True, capture_output=True)
    r = replay_file(str(out))
    assert r.error is None and r.divergence_count == 0 and r.matched > 0


def test_killed_recorder_leaves_a_readable_file(tmp_path: Path) -> None:
    require_live()
    out = tmp_path / "live.mhpt"
    proc = subprocess.Popen(mhp("record", "-o", str(out), "--duration", "60", "--zone-interval", "0.2"), stderr=subprocess.PIPE)
    part = tmp_path / "live.mhpt.part"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 4096):
        time.sleep(0.1)
    time.sleep(0.6)  # a few zone samples after the snapshot
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    report = verify(str(part))
    assert report.stats.records > 0 and [p.kind for p in report.problems] in ([], ["truncated"])
    # SIGTERM ends the file cleanly under its final name
    proc = subprocess.Popen(mhp("record", "-o", str(out), "--duration", "60"), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not part.exists():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert verify(str(out)).clean and not part.exists()
