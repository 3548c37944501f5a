"""mhp record: snapshots of fake and real hosts replay clean; uevents become events; crash safety."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replay.model.profiles import get_profile
from replay.replayer import replay_events, replay_file
from tests.helpers import unavailable
from traces.codec import FLAG_INFERRED
from traces.errors import TraceFormatError
from traces.events import (
    AddFlags,
    AddMemory,
    Attr,
    BlockObserved,
    BlockState,
    BootBlocks,
    BootGroup,
    BootUnknown,
    GroupRegister,
    GroupUnregister,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    Param,
    ParamWrite,
    RemoveMemory,
    Source,
    UnknownFact,
    ZoneType,
)
from traces.files import cat, verify
from traces.host import Host, parse_node_list, parse_zoneinfo
from traces.reader import TraceReader
from traces.record import Recorder, acpi_memmap_flag, parse_uevent, snapshot_events

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


def add_block(root: Path, b: int, state: str, zones: str, dimm: str = "") -> None:
    """A new memoryN directory; with ``dimm``, bound to that ACPI memory device like acpi_bind_memory_blocks does."""
    d = root / f"sys/devices/system/memory/memory{b}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "node0").mkdir(exist_ok=True)
    (d / "state").write_text(state + "\n")
    (d / "valid_zones").write_text(zones + "\n")
    if dimm:
        acpi = root / "sys/bus/acpi/devices" / dimm
        acpi.mkdir(parents=True, exist_ok=True)
        n = len(list(acpi.glob("physical_node*")))
        (acpi / ("physical_node" + (str(n) if n else ""))).symlink_to(f"../../../../system/memory/memory{b}")


def ue(action: str, b: int) -> dict[str, str]:
    return {"ACTION": action, "SUBSYSTEM": "memory", "DEVPATH": f"/devices/system/memory/memory{b}"}


class Collect:
    """A TraceWriter stand-in that keeps what is written."""

    def __init__(self) -> None:
        self.written: list[tuple[object, int]] = []

    def write(self, ev: object, flags: int = 0) -> None:
        self.written.append((ev, flags))

    def events(self, kind: str = "") -> list[object]:
        return [e for e, _ in self.written if not kind or getattr(e, "KIND", "") == kind]


def test_dimm_uevents_become_the_acpi_drivers_calls_and_user_onlines(tmp_path: Path) -> None:
    host = fake_host(tmp_path)
    w = Collect()
    rec = Recorder(host, w, host.snapshot())  # type: ignore[arg-type]
    for b in (48, 49):
        add_block(tmp_path, b, "online", "Movable", dimm="PNP0C80:00")
    rec.handle([ue("add", 48), ue("add", 49), ue("online", 48), ue("online", 49)])  # auto-online: no user request
    assert w.events("request") == [GroupRegister(False, 0, 65536), AddMemory(48 << 27, 2 << 27, 0, AddFlags.NID_IS_MGID)]
    assert all(f == FLAG_INFERRED for _, f in w.written)
    assert rec.decisions == rec.decisions_observed == 2
    w.written.clear()
    add_block(tmp_path, 49, "offline", "Movable Normal")
    rec.handle([ue("offline", 49)])
    add_block(tmp_path, 49, "online", "Normal")
    rec.handle([ue("online", 49)])  # user space onlined it: the type follows from the zone it went to
    add_block(tmp_path, 49, "offline", "Normal Movable")
    rec.handle([ue("offline", 49)])
    assert BlockObserved(49, BlockState.OFFLINE, 0, (ZoneType.NORMAL, ZoneType.MOVABLE)) in rec.observations(full=False)
    add_block(tmp_path, 49, "online", "Normal")
    rec.handle([ue("online", 49)])  # into the zone valid_zones named first: the policy's choice, "online"
    (tmp_path / "sys/module/memory_hotplug/parameters/auto_movable_ratio").write_text("100\n")
    rec.handle([ue("offline", 48), ue("offline", 49), ue("remove", 48), ue("remove", 49)])
    assert w.events("request") == [
        OfflineBlock(49, Attr.STATE, Source.USER),
        OnlineBlock(49, OnlineType.ONLINE_KERNEL, Attr.STATE, Source.USER),
        OfflineBlock(49, Attr.STATE, Source.USER),
        OnlineBlock(49, OnlineType.ONLINE, Attr.STATE, Source.USER),
        ParamWrite(Param.AUTO_MOVABLE_RATIO, "100"),
        OfflineBlock(48, Attr.STATE, Source.USER),
        OfflineBlock(49, Attr.STATE, Source.USER),
        RemoveMemory(48 << 27, 2 << 27),
        GroupUnregister(0),
    ]


def test_virtio_mem_devices_from_iomem_and_the_kernel_log(tmp_path: Path) -> None:
    host = fake_host(tmp_path)
    (tmp_path / "proc/iomem").write_text(IOMEM + "200000000-9ffffffff : virtio1\n  200000000-207ffffff : System RAM (virtio_mem)\n")
    (tmp_path / "dev").mkdir()
    log = ("6,512,3128707,-;virtio_mem virtio1: start address: 0x200000000", "6,513,3128931,-;virtio_mem virtio1: big block size: 0x40000000")
    (tmp_path / "dev/kmsg").write_text("\n".join(log) + "\n")
    drv = tmp_path / "sys/bus/virtio/devices/virtio1"
    drv.mkdir(parents=True)
    (tmp_path / "sys/bus/virtio/drivers/virtio_mem").mkdir(parents=True)
    (drv / "driver").symlink_to("../../../../bus/virtio/drivers/virtio_mem")
    add_block(tmp_path, 64, "online", "Movable")
    snap = host.snapshot()
    assert [(v.name, v.start, v.size, v.unit, v.unit_known) for v in snap.vmems] == [("virtio1", 0x200000000, 0x800000000, 1 << 30, True)]
    evs = [e for e, _ in snapshot_events(snap)]
    assert BootGroup(0, 0, True, (1 << 30) // 4096) in evs
    assert [e for e in evs if isinstance(e, BootBlocks) and e.first == 64] == [BootBlocks(64, 1, 0, BlockState.ONLINE, ZoneType.MOVABLE, False, 0, 0, 32768)]
    w = Collect()
    rec = Recorder(host, w, snap)  # type: ignore[arg-type]
    for b in range(72, 80):
        add_block(tmp_path, b, "online", "Movable")
    rec.handle([ue("add", b) for b in range(72, 80)] + [ue("online", b) for b in range(72, 80)])
    assert w.events("request") == [AddMemory(72 << 27, 1 << 30, 0, AddFlags.NID_IS_MGID | AddFlags.DRIVER_MANAGED | AddFlags.MERGE_RESOURCE)]
    rec.handle([ue("offline", 72), ue("remove", 72)] + [ue("remove", b) for b in range(73, 80)])
    assert w.events("request")[-2:] == [OfflineBlock(72, Attr.STATE, Source.USER), RemoveMemory(72 << 27, 1 << 30)]


def test_acpi_memmap_on_memory_flag_by_kernel() -> None:
    on, off = {"memmap_on_memory": "Y"}, {"memmap_on_memory": "N"}
    assert acpi_memmap_flag("6.12.117+deb12-amd64", off, 4 << 30, 1 << 27) is AddFlags.MEMMAP_ON_MEMORY  # the core decides
    assert acpi_memmap_flag("6.1.0-56-amd64", on, 1 << 27, 1 << 27) is AddFlags.MEMMAP_ON_MEMORY
    assert acpi_memmap_flag("6.1.0-56-amd64", on, 2 << 27, 1 << 27) is AddFlags.NONE
    assert acpi_memmap_flag("6.1.0-56-amd64", off, 1 << 27, 1 << 27) is AddFlags.NONE


def live_ok() -> bool:
    return Path("/sys/devices/system/memory/block_size_bytes").exists()


def require_live() -> None:
    """Skip without memory hotplug sysfs (a failure under CI)."""
    if not live_ok():
        unavailable("no memory hotplug sysfs on this host (/sys/devices/system/memory)")


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
    # SIGTERM ends the file cleanly under its final name (once the new run has kept the crashed part aside and started its own)
    proc = subprocess.Popen(mhp("record", "-o", str(out), "--duration", "60"), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (len(list(tmp_path.glob("live.mhpt.*.part"))) == 1 and part.exists()):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert verify(str(out)).clean and not part.exists()


def test_decisions_observed_directly() -> None:
    from traces.codec import Record
    from traces.decisions import DecisionCount
    from traces.events import BootMachine, BootParams, OnlineType, Policy

    evs = [
        BootMachine(1 << 27, 1, 1),
        BootParams(Policy.AUTO_MOVABLE, 301, True, OnlineType.ONLINE, 0, False),
        AddMemory(48 << 27, 2 << 27, 0, AddFlags.NONE),  # two decisions by the kernel
        BlockObserved(48, BlockState.ONLINE, 0, (ZoneType.MOVABLE,)),
        BlockObserved(49, BlockState.OFFLINE, 0, (ZoneType.MOVABLE,)),  # its zone was never seen
        ParamWrite(Param.AUTO_ONLINE_BLOCKS, "offline"),
        AddMemory(50 << 27, 1 << 27, 0, AddFlags.NONE),  # no decision: stays offline
        OnlineBlock(50, OnlineType.ONLINE_KERNEL, Attr.STATE, Source.USER),
        BlockObserved(50, BlockState.ONLINE, 0, (ZoneType.NORMAL,)),
    ]
    count = DecisionCount()
    for i, ev in enumerate(evs):
        count.feed(Record(i, i, 0, ev))
    assert count.to_json() == {"total": 3, "observed": 2, "share": 0.6667}


def test_rotated_parts_each_replay_on_their_own(tmp_path: Path) -> None:
    require_live()
    out = tmp_path / "host.mhpt"
    cmd = mhp("record", "-o", str(out), "--rotate-size", "4K", "--rotate-count", "2", "--duration", "4", "--zone-interval", "0.05")
    subprocess.run(cmd, check=True, capture_output=True)
    parts = sorted(tmp_path.glob("host_*.mhpt"))
    numbers = [int(p.stem.split("_")[1]) for p in parts]
    assert len(parts) == 2 and numbers[1] == numbers[0] + 1 and numbers[0] > 1  # a ring: the oldest were removed
    assert not list(tmp_path.glob("*.part")) and not out.exists()
    for p in parts:
        assert verify(str(p)).clean
        r = replay_file(str(p))
        assert r.error is None and r.divergence_count == 0 and r.matched > 0  # each part starts with a snapshot
    joined = tmp_path / "joined.mhpt"
    n = cat([str(p) for p in parts], str(joined))  # the second part's checkpoint is dropped: one recording
    assert verify(str(joined)).clean and replay_file(str(joined)).divergence_count == 0
    with TraceReader(str(parts[0])) as a, TraceReader(str(parts[1])) as b:
        second = list(b)
        assert n == len(list(a)) + sum(rec.event.KIND != "boot" for rec in second)
    other = tmp_path / "other.mhpt"
    subprocess.run(mhp("record", "--snapshot", "-o", str(other)), check=True, capture_output=True)
    with pytest.raises(TraceFormatError, match="a new recording"):
        cat([str(parts[0]), str(other)], str(tmp_path / "no.mhpt"))


def test_systemd_unit_is_hardened_and_verifies(tmp_path: Path) -> None:
    unit = subprocess.run(mhp("record", "--print-systemd-unit"), check=True, capture_output=True, text=True).stdout
    path = tmp_path / "mhp-record.service"
    path.write_text(unit)
    check = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)  # Debian's systemd package
    assert check.returncode == 0 and not check.stderr.strip(), check.stderr
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=mhp-replay", "CapabilityBoundingSet=CAP_SYS_ADMIN CAP_SYSLOG"):
        assert line in unit.splitlines()
    assert "--rotate-size" in unit and "${STATE_DIRECTORY}" in unit
    bad = tmp_path / "bad.service"
    bad.write_text(unit.replace("NoNewPrivileges=yes", "NoNewPrivileges=perhaps"))
    assert "Failed to parse" in subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True).stderr


def test_what_the_snapshot_cannot_know_is_said_and_its_checks_skipped(tmp_path: Path) -> None:
    """Without root /proc/iomem shows zeros; a virtio-mem device whose start-up lines left the log has no known unit."""
    host = fake_host(tmp_path)
    zeros = "".join(f"{'  ' if line.startswith(' ') else ''}00000000-00000000 : {line.split(' : ', 1)[1]}\n" for line in IOMEM.splitlines())
    (tmp_path / "proc/iomem").write_text(zeros)
    snap = host.snapshot()
    evs = [e for e, _ in snapshot_events(snap)]
    assert BootUnknown(UnknownFact.PRESENT_PAGES, -1) in evs
    assert all(e.present_pages == 32768 for e in evs if isinstance(e, BootBlocks))  # block 0's holes are invisible
    r = replay_events(evs, get_profile("6.1"))
    assert r.error is None and r.divergence_count == 0 and r.skipped and "present pages unknown" in r.skipped[0]
    (tmp_path / "proc/iomem").write_text(IOMEM + "200000000-9ffffffff : virtio1\n")
    drv = tmp_path / "sys/bus/virtio/devices/virtio1"
    drv.mkdir(parents=True)
    (drv / "driver").symlink_to("../../../../bus/virtio/drivers/virtio_mem")
    snap = host.snapshot()  # no /dev/kmsg lines: the unit is not known
    assert [(v.unit, v.unit_known) for v in snap.vmems] == [(1 << 27, False)]
    evs = [e for e, _ in snapshot_events(snap)]
    assert BootUnknown(UnknownFact.GROUP_UNIT, 0) in evs and BootUnknown(UnknownFact.PRESENT_PAGES, -1) not in evs
    assert "group 0's unit unknown" in replay_events(evs, get_profile("6.1")).skipped[0]
