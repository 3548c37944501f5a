"""``mhp record``: capture memory-hotplug activity on a live Linux host as a .mhpt trace.

The trace starts with a boot snapshot read from sysfs and procfs (blocks, zones, parameters,
memory devices), followed by events from the kernel's uevent netlink socket (subsystem
``memory``: add, online, offline, remove), each enriched by sysfs reads, and periodic zone
samples. What the recorder deduces instead of observing (hot-added blocks' groups, which blocks
are early, user-space online types) carries the ``inferred`` record flag (FORMAT.md).
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from traces.codec import FLAG_INFERRED
from traces.digest import state_digest
from traces.events import (
    ONLINE_TYPE_NAMES,
    AddFlags,
    AddMemory,
    Attr,
    BlockObserved,
    BlockState,
    BootBlocks,
    BootGroup,
    BootMachine,
    BootParams,
    BootZone,
    Event,
    Loss,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    Policy,
    RemoveMemory,
    Source,
    StateDigest,
    ZoneObserved,
    ZoneType,
)
from traces.header import Capture, TraceHeader
from traces.writer import TraceWriter

NETLINK_KOBJECT_UEVENT = 15
ZONES = {"DMA": ZoneType.DMA, "DMA32": ZoneType.DMA32, "Normal": ZoneType.NORMAL, "Movable": ZoneType.MOVABLE}
STATES = {"online": BlockState.ONLINE, "offline": BlockState.OFFLINE, "going-offline": BlockState.GOING_OFFLINE}
ONLINE_TYPES = {name: t for t, name in ONLINE_TYPE_NAMES.items()}
DRIVER_MANAGED = re.compile(r"System RAM \((.+)\)")


@dataclass(slots=True)
class ZoneInfo:
    """One zone of /proc/zoneinfo."""

    node: int
    zone: ZoneType
    present: int
    spanned: int
    start_pfn: int  # 0 where zoneinfo prints none (unpopulated zones)
    managed: int
    cma: int


@dataclass(slots=True)
class BlockInfo:
    """memoryN as sysfs shows it."""

    state: BlockState
    valid_zones: tuple[ZoneType, ...]  # () for "none"
    node: int


@dataclass(slots=True)
class HostSnapshot:
    """Everything the recorder reads at start."""

    release: str
    cmdline: str
    block_size: int
    possible: list[int]
    cpu_nodes: list[int]
    params: dict[str, str]
    blocks: dict[int, BlockInfo]
    zones: list[ZoneInfo]
    ram: list[tuple[int, int]] | None  # top-level "System RAM" [start, end) in bytes; None if hidden
    driver_managed: list[tuple[int, int, str]] = field(default_factory=list)  # virtio_mem, kmem ... ranges


class Host:
    """Reads a host's sysfs/procfs below ``root`` (``/`` on a live host; a fake tree in tests)."""

    def __init__(self, root: str | Path = "/") -> None:
        self.root = Path(root)

    def read(self, rel: str, default: str | None = None) -> str:
        try:
            return (self.root / rel).read_text().strip()
        except OSError:
            if default is None:
                raise
            return default

    def memory_dir(self) -> Path:
        return self.root / "sys/devices/system/memory"

    def block(self, bid: int) -> BlockInfo | None:
        """One block, or None if it disappeared."""
        d = self.memory_dir() / f"memory{bid}"
        try:
            state = (d / "state").read_text().strip()
            zones = (d / "valid_zones").read_text().split()
            node = next((int(p.name[4:]) for p in d.iterdir() if p.name.startswith("node") and p.name[4:].isdigit()), -1)
        except OSError:
            return None
        return BlockInfo(STATES.get(state, BlockState.GOING_OFFLINE), tuple(ZONES[z] for z in zones if z in ZONES), node)

    def snapshot(self) -> HostSnapshot:
        """Read the whole state (works unprivileged; /proc/iomem addresses need root)."""
        mem = self.memory_dir()
        if not mem.is_dir():
            raise OSError(f"{mem} does not exist: this kernel has no memory hotplug sysfs")
        block_size = int(self.read("sys/devices/system/memory/block_size_bytes"), 16)
        blocks = {}
        for p in mem.iterdir():
            m = re.fullmatch(r"memory(\d+)", p.name)
            if m:
                info = self.block(int(m.group(1)))
                if info is not None:
                    blocks[int(m.group(1))] = info
        params = {
            name: self.read(f"sys/module/memory_hotplug/parameters/{name}", "")
            for name in ("online_policy", "auto_movable_ratio", "auto_movable_numa_aware", "memmap_on_memory")
        }
        params["auto_online_blocks"] = self.read("sys/devices/system/memory/auto_online_blocks", "offline")
        ram, managed = self.iomem()
        return HostSnapshot(
            release=self.read("proc/sys/kernel/osrelease", "unknown"),
            cmdline=self.read("proc/cmdline", ""),
            block_size=block_size,
            possible=parse_node_list(self.read("sys/devices/system/node/possible", "0")),
            cpu_nodes=parse_node_list(self.read("sys/devices/system/node/has_cpu", "0")),
            params=params,
            blocks=blocks,
            zones=parse_zoneinfo(self.read("proc/zoneinfo")),
            ram=ram,
            driver_managed=managed,
        )

    def iomem(self) -> tuple[list[tuple[int, int]] | None, list[tuple[int, int, str]]]:
        """Top-level System RAM ranges and driver-managed ones from /proc/iomem (None if hidden)."""
        ram: list[tuple[int, int]] = []
        managed: list[tuple[int, int, str]] = []
        for line in self.read("proc/iomem", "").splitlines():
            m = re.fullmatch(r"(\s*)([0-9a-f]+)-([0-9a-f]+) : (.*)", line)
            if not m:
                continue
            start, end, name = int(m.group(2), 16), int(m.group(3), 16) + 1, m.group(4)
            dm = DRIVER_MANAGED.fullmatch(name)
            if dm:
                managed.append((start, end, dm.group(1)))
                ram.append((start, end))
            elif name == "System RAM" and not m.group(1):
                ram.append((start, end))
        if ram and all(s == 0 and e == 1 for s, e in ram):
            return None, []  # unprivileged readers see zeros
        return sorted(ram), managed


def parse_node_list(text: str) -> list[int]:
    """'0-2,4' -> [0, 1, 2, 4]."""
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def parse_zoneinfo(text: str) -> list[ZoneInfo]:
    """Zones of /proc/zoneinfo (ZONE_DEVICE skipped)."""
    zones: list[ZoneInfo] = []
    cur: dict[str, Any] | None = None

    def flush() -> None:
        if cur is not None and cur["zone"] in ZONES:
            zones.append(
                ZoneInfo(
                    cur["node"],
                    ZONES[cur["zone"]],
                    cur.get("present", 0),
                    cur.get("spanned", 0),
                    cur.get("start_pfn", 0),
                    cur.get("managed", 0),
                    cur.get("cma", 0),
                )
            )

    for line in text.splitlines():
        m = re.match(r"Node (\d+), zone\s+(\S+)", line)
        if m:
            flush()
            cur = {"node": int(m.group(1)), "zone": m.group(2)}
            continue
        if cur is None:
            continue
        m = re.match(r"\s+(present|spanned|managed|cma)\s+(\d+)$", line) or re.match(r"\s+(start_pfn):\s+(\d+)$", line)
        if m:
            cur[m.group(1)] = int(m.group(2))
    flush()
    return zones


# --- snapshot -> events -------------------------------------------------------------------------------


def present_pages(snap: HostSnapshot, bid: int) -> int:
    """Pages of System RAM inside a block (whole pages); the whole block if /proc/iomem is hidden."""
    pages = snap.block_size // 4096
    if snap.ram is None:
        return pages
    lo, hi = bid * snap.block_size, (bid + 1) * snap.block_size
    n = 0
    for s, e in snap.ram:
        s, e = max(s, lo), min(e, hi)
        if e > s:
            n += (e // 4096) - (-(-s // 4096))
    return n


def driver_range(snap: HostSnapshot, bid: int) -> tuple[int, int, str] | None:
    addr = bid * snap.block_size
    return next((r for r in snap.driver_managed if r[0] <= addr < r[1]), None)


def boot_params(snap: HostSnapshot) -> BootParams:
    p = snap.params
    memmap = {"force": 2, "Y": 1, "1": 1}.get(p.get("memmap_on_memory", ""), 0)
    return BootParams(
        Policy.AUTO_MOVABLE if p.get("online_policy") == "auto-movable" else Policy.CONTIG_ZONES,
        int(p.get("auto_movable_ratio") or 301),
        p.get("auto_movable_numa_aware", "Y") != "N",
        ONLINE_TYPES.get(p.get("auto_online_blocks", "offline"), OnlineType.OFFLINE),
        memmap,
        "movable_node" in snap.cmdline.split(),
    )


def snapshot_events(snap: HostSnapshot) -> list[tuple[Event, int]]:
    """The boot snapshot (with flags) followed by observations of the same moment."""
    bp = snap.block_size // 4096
    out: list[tuple[Event, int]] = [
        (BootMachine(snap.block_size, sum(1 << n for n in snap.possible), sum(1 << n for n in snap.cpu_nodes)), 0),
        (boot_params(snap), 0),
    ]
    # groups: one dynamic group per driver-managed device range (inferred: ids and unit are not visible)
    groups: dict[tuple[int, int, str], int] = {}
    for r in snap.driver_managed:
        node = next((snap.blocks[b].node for b in range(r[0] // snap.block_size, r[1] // snap.block_size) if b in snap.blocks), 0)
        groups[r] = len(groups)
        out.append((BootGroup(groups[r], max(node, 0), True, bp), FLAG_INFERRED))
    hot = {b for b in snap.blocks if driver_range(snap, b) is not None}
    for z in snap.zones:
        hot_pages = sum(
            bp for b in hot if snap.blocks[b].state is BlockState.ONLINE and snap.blocks[b].valid_zones == (z.zone,) and snap.blocks[b].node == z.node
        )
        early = max(z.present - hot_pages, 0)
        out.append((BootZone(z.node, z.zone, z.start_pfn if z.spanned else 0, z.spanned, z.present, early, z.cma), FLAG_INFERRED if hot_pages else 0))
    runs: list[list[Any]] = []
    for b in sorted(snap.blocks):
        info = snap.blocks[b]
        online = info.state is BlockState.ONLINE
        zone = (info.valid_zones[0] if len(info.valid_zones) == 1 else ZoneType.NONE) if online else ZoneType.NONE
        r = driver_range(snap, b)
        key = (
            info.node,
            info.state if info.state is not BlockState.GOING_OFFLINE else BlockState.ONLINE,
            zone,
            r is None,
            groups[r] if r else -1,
            present_pages(snap, b),
        )
        if runs and runs[-1][1] == b - runs[-1][0] and runs[-1][2] == key:
            runs[-1][1] += 1
        else:
            runs.append([b, 1, key])
    for first, count, (node, state, zone, early, mgid, pages) in runs:
        flags = FLAG_INFERRED if (mgid >= 0 or snap.ram is None) else 0
        out.append((BootBlocks(first, count, max(node, 0), state, zone, early, mgid, 0, pages), flags))
    out += [(BlockObserved(b, i.state, i.node, i.valid_zones), 0) for b, i in sorted(snap.blocks.items())]
    out += [(ZoneObserved(z.node, z.zone, z.present, z.spanned, z.start_pfn, z.managed), 0) for z in snap.zones]
    out.append((digest_of(snap), 0))
    return out


def digest_of(snap: HostSnapshot) -> StateDigest:
    """traces.digest.state_digest of what the host shows."""
    blocks = [(b, int(i.state), int(i.valid_zones[0]) if i.state is BlockState.ONLINE and len(i.valid_zones) == 1 else 255) for b, i in snap.blocks.items()]
    zones = [(z.node, int(z.zone), z.present) for z in snap.zones]
    return StateDigest(state_digest(blocks, zones))


def header_for(snap: HostSnapshot, detail: str = "") -> TraceHeader:
    params = " ".join(f"{k}={v}" for k, v in snap.params.items() if v)
    return TraceHeader(
        writer="mhp-replay record",
        kernel_release=snap.release,
        cmdline=snap.cmdline,
        block_size=snap.block_size,
        params=params,
        source=Capture.LIVE,
        source_detail=detail or os.uname().nodename,
        wall_ns=time.time_ns(),
    )


# --- uevents -> events ----------------------------------------------------------------------------


def parse_uevent(data: bytes) -> dict[str, str] | None:
    """A kernel uevent message as a dict (None for udev's re-broadcasts and garbage)."""
    if data.startswith(b"libudev"):
        return None
    parts = data.split(b"\0")
    env = {}
    for p in parts[1:]:
        k, sep, v = p.partition(b"=")
        if sep:
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env or None


class Recorder:
    """Turns a host's uevents into trace events; see the module doc for what is inferred."""

    def __init__(self, host: Host, writer: TraceWriter, snap: HostSnapshot) -> None:
        self.host = host
        self.w = writer
        self.block_size = snap.block_size
        self.pending_adds: list[int] = []
        self.just_added: set[int] = set()
        self.nodes = {b: i.node for b, i in snap.blocks.items()}

    def write(self, ev: Event, flags: int = 0) -> None:
        self.w.write(ev, flags=flags)

    def uevent(self, env: dict[str, str]) -> None:
        """One kernel uevent."""
        if env.get("SUBSYSTEM") != "memory":
            return
        m = re.fullmatch(r"/devices/system/memory/memory(\d+)", env.get("DEVPATH", ""))
        if not m:
            return
        bid, action = int(m.group(1)), env.get("ACTION", "")
        if action == "add":
            if self.pending_adds and self.pending_adds[-1] != bid - 1:
                self.flush_adds()
            self.pending_adds.append(bid)
            return
        self.flush_adds()
        if action == "online":
            if bid not in self.just_added:  # not the kernel's auto-online of a new block: user space did it
                self.write(OnlineBlock(bid, OnlineType.ONLINE, Attr.STATE, Source.USER), FLAG_INFERRED)
            self.just_added.discard(bid)
            self.observe(bid)
        elif action == "offline":
            self.write(OfflineBlock(bid, Attr.STATE, Source.USER), FLAG_INFERRED)
            self.observe(bid)
        elif action == "remove":
            self.write(RemoveMemory(bid * self.block_size, self.block_size), FLAG_INFERRED)
            self.write(BlockObserved(bid, BlockState.ABSENT, -1, ()))

    def flush_adds(self) -> None:
        """Coalesced add uevents of consecutive blocks become one add_memory request."""
        if not self.pending_adds:
            return
        first, n = self.pending_adds[0], len(self.pending_adds)
        infos = [self.host.block(b) for b in self.pending_adds]
        node = next((i.node for i in infos if i is not None and i.node >= 0), 0)
        self.write(AddMemory(first * self.block_size, n * self.block_size, node, AddFlags.NONE), FLAG_INFERRED)
        self.just_added.update(self.pending_adds)
        for b, info in zip(self.pending_adds, infos, strict=True):
            if info is not None:
                self.write(BlockObserved(b, info.state, info.node, info.valid_zones))
        self.pending_adds = []

    def observe(self, bid: int) -> None:
        info = self.host.block(bid)
        self.write(BlockObserved(bid, BlockState.ABSENT, -1, ()) if info is None else BlockObserved(bid, info.state, info.node, info.valid_zones))

    def sample_zones(self) -> None:
        for z in parse_zoneinfo(self.host.read("proc/zoneinfo")):
            self.write(ZoneObserved(z.node, z.zone, z.present, z.spanned, z.start_pfn, z.managed))


def open_uevent_socket() -> socket.socket:
    """The kernel uevent multicast group (no privileges needed to listen)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((0, 1))
    return s


def record(
    output: str, *, snapshot_only: bool = False, duration: float | None = None, fsync: bool = False, zone_interval: float = 10.0, root: str = "/"
) -> int:
    """Record until SIGINT/SIGTERM or ``duration``; returns the number of records written."""
    host = Host(root)
    sock = None if snapshot_only else open_uevent_socket()  # open before the snapshot: no event slips between
    snap = host.snapshot()
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with TraceWriter(output, header_for(snap), chunk_records=256, fsync=fsync) as w:
            for ev, flags in snapshot_events(snap):
                w.write(ev, flags=flags)
            w.flush()
            if sock is not None:
                rec = Recorder(host, w, snap)
                end = None if duration is None else time.monotonic() + duration
                next_zones = time.monotonic() + zone_interval
                while not stop and (end is None or time.monotonic() < end):
                    ready, _, _ = select.select([sock], [], [], 0.2)
                    if ready:
                        try:
                            env = parse_uevent(sock.recv(65536))
                        except OSError as e:  # ENOBUFS: the kernel dropped uevents
                            rec.flush_adds()
                            w.write(Loss(0, f"uevent socket: {e.strerror}"))
                            continue
                        if env:
                            rec.uevent(env)
                        continue
                    rec.flush_adds()
                    if time.monotonic() >= next_zones:
                        rec.sample_zones()
                        next_zones = time.monotonic() + zone_interval
                    w.flush()
                rec.flush_adds()
                rec.sample_zones()
            return w.seq
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if sock is not None:
            sock.close()
