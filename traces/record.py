"""``mhp record``: capture memory-hotplug activity on a live Linux host as a .mhpt trace.

The trace starts with a snapshot read from sysfs and procfs (traces/host.py): blocks, zones, parameters and the
memory devices (ACPI DIMMs, virtio-mem devices) with the memory groups their drivers registered. Then the
kernel's uevents (subsystem ``memory``: add, online, offline, remove) become requests, and what sysfs and
``/proc/zoneinfo`` show once the host is quiet becomes observations.

What the recorder deduces instead of observing carries the ``inferred`` record flag (FORMAT.md): the drivers'
calls (an ACPI DIMM's group_register + add_memory, a virtio-mem device's add_memory per unit, removals), user
space's online types (from the zone the block went to: every zone decision comes from the kernel's own sysfs),
parameter writes (the parameter files changed), which boot blocks are early and the groups of the snapshot.
Uevents are handled in batches once none arrived for ``QUIET_S``, so the ACPI driver's block bindings exist
when a DIMM's add is reconstructed; observations are dropped when a uevent arrived while they were read.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import stat
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
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
    BootUnknown,
    BootZone,
    Event,
    GroupRegister,
    GroupUnregister,
    Loss,
    Mark,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    Param,
    ParamWrite,
    Policy,
    RemoveMemory,
    Source,
    StateDigest,
    UnknownFact,
    ZoneObserved,
    ZoneType,
)
from traces.header import Capture, TraceHeader
from traces.host import BlockInfo, Host, HostSnapshot, VirtioMem, ZoneInfo, parse_node_list, parse_zoneinfo
from traces.writer import TraceWriter

__all__ = ["Host", "HostSnapshot", "Recorder", "parse_node_list", "parse_uevent", "parse_zoneinfo", "record", "snapshot_events"]

NETLINK_KOBJECT_UEVENT = 15
PAGE = 4096
QUIET_S = 0.2  # uevents are handled once none arrived for this long
SETTLE_TRIES = 50  # reads of a host that stays busy before an observation is given up
ONLINE_TYPES = {name: t for t, name in ONLINE_TYPE_NAMES.items()}
VMEM_ADD_FLAGS = AddFlags.NID_IS_MGID | AddFlags.DRIVER_MANAGED | AddFlags.MERGE_RESOURCE
RUNTIME_PARAMS = {  # sysfs name -> the parameter a write to it sets (memmap_on_memory is read-only at run time)
    "online_policy": Param.ONLINE_POLICY,
    "auto_movable_ratio": Param.AUTO_MOVABLE_RATIO,
    "auto_movable_numa_aware": Param.AUTO_MOVABLE_NUMA_AWARE,
    "auto_online_blocks": Param.AUTO_ONLINE_BLOCKS,
}


SYSTEMD_UNIT = """\
# mhp-replay: record this host's memory hotplug activity (mhp record --print-systemd-unit > /etc/systemd/system/mhp-record.service)
[Unit]
Description=mhp-replay memory-hotplug recorder
Documentation=https://pypi.org/project/mhp-replay/
After=local-fs.target

[Service]
Type=simple
# Parts of 64 MiB, the newest 16 kept (each starts with a snapshot); SIGTERM closes the open part cleanly.
ExecStart=/usr/bin/env mhp record --fsync --rotate-size 64M --rotate-count 16 -o ${STATE_DIRECTORY}/%H.mhpt --source-detail %H
KillSignal=SIGTERM
Restart=on-failure
RestartSec=5
StateDirectory=mhp-replay
# Root for the addresses in /proc/iomem (CAP_SYS_ADMIN) and the kernel log (CAP_SYSLOG); nothing else.
CapabilityBoundingSet=CAP_SYS_ADMIN CAP_SYSLOG
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
# /dev/kmsg stays readable: no PrivateDevices= and no ProtectKernelLogs= (the virtio-mem unit is read from it).
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_NETLINK AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
MemoryMax=256M

[Install]
WantedBy=multi-user.target
"""


def writer_name() -> str:
    """The header's writer: this recorder and its version."""
    try:
        return f"mhp-replay record {version('mhp-replay')}"
    except PackageNotFoundError:
        return "mhp-replay record"


# --- the drivers ----------------------------------------------------------------------------------------------


def release_at_least(release: str, major: int, minor: int) -> bool:
    """True if a ``uname -r`` string is at least major.minor (False when it names no version)."""
    parts = release.split(".")
    try:
        return (int(parts[0]), int("".join(c for c in parts[1][:3] if c.isdigit()) or 0)) >= (major, minor)
    except (ValueError, IndexError):
        return False


def acpi_memmap_flag(release: str, params: dict[str, str], size: int, block_size: int) -> AddFlags:
    """acpi_memory_enable_device's MHP_MEMMAP_ON_MEMORY: 6.6+ always (the core decides); before, one block with the parameter on."""
    if release_at_least(release, 6, 6) or (size == block_size and params.get("memmap_on_memory", "") in ("Y", "1")):
        return AddFlags.MEMMAP_ON_MEMORY
    return AddFlags.NONE


@dataclass(slots=True)
class Device:
    """A memory device the recorder tracks: an ACPI DIMM or a virtio-mem device, with the group its driver registered."""

    kind: str  # "dimm" or "vmem"
    name: str  # PNP0C80:NN or virtioN
    node: int
    mgid: int
    start: int = 0  # DIMM: its range (from the blocks it bound); virtio-mem: the device region
    size: int = 0
    unit: int = 0  # virtio-mem: bytes per add_memory / remove_memory call
    blocks: set[int] = field(default_factory=set)
    unit_known: bool = True  # virtio-mem: False when the kernel log no longer showed it

    def unit_of(self, addr: int) -> int:
        """The start address of the add/remove unit holding ``addr`` (a DIMM is added and removed whole)."""
        return self.start if self.kind == "dimm" else self.start + (addr - self.start) // self.unit * self.unit


class Devices:
    """The memory devices and groups the recorder knows of; group ids allocated lowest-free (xa_alloc)."""

    def __init__(self) -> None:
        self.by_name: dict[str, Device] = {}
        self.block_owner: dict[int, Device] = {}

    def alloc(self) -> int:
        used = {d.mgid for d in self.by_name.values()}
        mgid = 0
        while mgid in used:
            mgid += 1
        return mgid

    def add(self, dev: Device) -> Device:
        self.by_name[dev.name] = dev
        for b in dev.blocks:
            self.block_owner[b] = dev
        return dev

    def drop(self, dev: Device) -> None:
        self.by_name.pop(dev.name, None)
        for b in dev.blocks:
            if self.block_owner.get(b) is dev:
                del self.block_owner[b]

    def vmem_at(self, addr: int) -> Device | None:
        return next((d for d in self.by_name.values() if d.kind == "vmem" and d.start <= addr < d.start + d.size), None)


# --- snapshot -> events -------------------------------------------------------------------------------


def present_pages(snap: HostSnapshot, bid: int) -> int:
    """Pages of System RAM inside a block (whole pages); the whole block if /proc/iomem is hidden."""
    pages = snap.block_size // PAGE
    if snap.ram is None:
        return pages
    lo, hi = bid * snap.block_size, (bid + 1) * snap.block_size
    n = 0
    for s, e in snap.ram:
        s, e = max(s, lo), min(e, hi)
        if e > s:
            n += (e // PAGE) - (-(-s // PAGE))
    return n


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


def snapshot_devices(snap: HostSnapshot) -> Devices:
    """The snapshot's memory devices: virtio-mem devices (address order), then the DIMMs bound to blocks."""
    devs = Devices()
    bs = snap.block_size
    for v in sorted(snap.vmems, key=lambda v: v.start):
        blocks = {b for b in snap.blocks if v.holds(b * bs)}
        devs.add(Device("vmem", v.name, v.node, devs.alloc(), v.start, v.size, v.unit, blocks, v.unit_known))
    by_dimm: dict[str, set[int]] = {}
    for b, name in snap.dimms.items():
        if b in snap.blocks:
            by_dimm.setdefault(name, set()).add(b)
    for name, blocks in sorted(by_dimm.items(), key=lambda kv: min(kv[1])):
        node = max(snap.blocks[min(blocks)].node, 0)
        devs.add(Device("dimm", name, node, devs.alloc(), min(blocks) * bs, len(blocks) * bs, 0, blocks))
    return devs


def vmemmap_pages(snap: HostSnapshot, dev: Device | None) -> int:
    """The memmap pages a hot-added block hosts: memmap_on_memory on, a DIMM's blocks (as the ACPI driver adds them)."""
    if dev is None or dev.kind != "dimm" or not acpi_memmap_flag(snap.release, snap.params, dev.size, snap.block_size):
        return 0
    if snap.params.get("memmap_on_memory", "") not in ("Y", "1", "force"):
        return 0
    return -(-(snap.block_size // PAGE) * 64 // PAGE)  # PFN_UP(pages * sizeof(struct page))


def snapshot_events(snap: HostSnapshot, devs: Devices | None = None) -> list[tuple[Event, int]]:
    """The boot snapshot (with flags) followed by observations of the same moment."""
    devs = devs or snapshot_devices(snap)
    bp = snap.block_size // PAGE
    out: list[tuple[Event, int]] = [
        (BootMachine(snap.block_size, sum(1 << n for n in snap.possible), sum(1 << n for n in snap.cpu_nodes)), 0),
        (boot_params(snap), 0),
    ]
    for d in sorted(devs.by_name.values(), key=lambda d: d.mgid):
        pages = (d.unit if d.kind == "vmem" else d.size) // PAGE
        out.append((BootGroup(d.mgid, d.node, d.kind == "vmem", pages), FLAG_INFERRED))
    hot = set(devs.block_owner)
    for z in snap.zones:
        hot_pages = sum(
            bp for b in hot if snap.blocks[b].state is BlockState.ONLINE and snap.blocks[b].valid_zones == (z.zone,) and snap.blocks[b].node == z.node
        )
        early = max(z.present - hot_pages, 0)
        boot_zone = BootZone(z.node, z.zone, z.start_pfn if z.spanned else 0, z.spanned, z.present, early, z.cma, z.managed)
        out.append((boot_zone, FLAG_INFERRED if hot_pages else 0))
    runs: list[list[Any]] = []
    for b in sorted(snap.blocks):
        info = snap.blocks[b]
        online = info.state is BlockState.ONLINE
        zone = (info.valid_zones[0] if len(info.valid_zones) == 1 else ZoneType.NONE) if online else ZoneType.NONE
        dev = devs.block_owner.get(b)
        key = (
            info.node,
            info.state if info.state is not BlockState.GOING_OFFLINE else BlockState.ONLINE,
            zone,
            dev is None,
            dev.mgid if dev else -1,
            vmemmap_pages(snap, dev) if online else 0,
            present_pages(snap, b) if online or dev is None else bp,
        )
        if runs and runs[-1][1] == b - runs[-1][0] and runs[-1][2] == key:
            runs[-1][1] += 1
        else:
            runs.append([b, 1, key])
    for first, count, (node, state, zone, early, mgid, vmemmap, pages) in runs:
        flags = FLAG_INFERRED if (mgid >= 0 or snap.ram is None) else 0
        out.append((BootBlocks(first, count, max(node, 0), state, zone, early, mgid, vmemmap, pages), flags))
    if snap.ram is None:
        out.append((BootUnknown(UnknownFact.PRESENT_PAGES, -1), 0))
    for d in sorted(devs.by_name.values(), key=lambda d: d.mgid):
        if d.kind == "vmem" and not d.unit_known:
            out.append((BootUnknown(UnknownFact.GROUP_UNIT, d.mgid), 0))
    out += [(ev, 0) for ev in observe_all(snap.blocks, snap.zones)]
    return out


def observe_all(blocks: dict[int, BlockInfo], zones: list[ZoneInfo], gone: set[int] | None = None) -> list[Event]:
    """Every block (and those in ``gone`` as absent), every zone, and the state digest."""
    out: list[Event] = []
    for b in sorted(set(blocks) | (gone or set())):
        i = blocks.get(b)
        out.append(BlockObserved(b, BlockState.ABSENT, -1, ()) if i is None else BlockObserved(b, i.state, i.node, i.valid_zones))
    out += [ZoneObserved(z.node, z.zone, z.present, z.spanned, z.start_pfn, z.managed) for z in zones]
    out.append(digest_of(blocks, zones))
    return out


def digest_of(blocks: dict[int, BlockInfo], zones: list[ZoneInfo]) -> StateDigest:
    """traces.digest.state_digest of what the host shows."""
    bl = [(b, int(i.state), int(i.valid_zones[0]) if i.state is BlockState.ONLINE and len(i.valid_zones) == 1 else 255) for b, i in blocks.items()]
    return StateDigest(state_digest(bl, [(z.node, int(z.zone), z.present) for z in zones]))


def header_for(snap: HostSnapshot, detail: str = "", source: Capture = Capture.LIVE) -> TraceHeader:
    params = " ".join(f"{k}={v}" for k, v in snap.params.items() if v)
    return TraceHeader(
        writer=writer_name(),
        kernel_release=snap.release,
        cmdline=snap.cmdline,
        block_size=snap.block_size,
        params=params,
        source=source,
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


def memory_uevent(env: dict[str, str]) -> tuple[str, int] | None:
    """(action, block) of a memory block uevent, else None."""
    if env.get("SUBSYSTEM") != "memory":
        return None
    path = env.get("DEVPATH", "")
    prefix = "/devices/system/memory/memory"
    if not path.startswith(prefix) or not path[len(prefix) :].isdigit():
        return None
    return env.get("ACTION", ""), int(path[len(prefix) :])


class Recorder:
    """Turns a host's uevents into trace events; see the module doc for what is inferred."""

    def __init__(self, host: Host, writer: TraceWriter, snap: HostSnapshot, devs: Devices | None = None) -> None:
        self.host = host
        self.w = writer
        self.snap = snap
        self.bs = snap.block_size
        self.devs = devs or snapshot_devices(snap)
        self.params = {k: v for k, v in snap.params.items() if k in RUNTIME_PARAMS}
        self.auto_onlining: set[int] = set()  # added while auto_online_blocks was not offline: the kernel onlines them
        self.pending_adds: list[int] = []
        self.pending_removes: list[int] = []
        self.touched: set[int] = set()  # blocks to observe at the next quiet point
        self.default_zone: dict[int, ZoneType] = {}  # offline block -> the zone its valid_zones named first when last read
        self.remember(snap.blocks)
        self.decisions = 0  # online transitions seen
        self.decisions_observed = 0  # ... whose zone was read from sysfs while the block was online

    def write(self, ev: Event, flags: int = 0) -> None:
        self.w.write(ev, flags=flags)

    def handle(self, batch: list[dict[str, str]]) -> None:
        """A batch of uevents, received with no gap of ``QUIET_S``: requests in arrival order."""
        for env in batch:
            ue = memory_uevent(env)
            if ue is None:
                continue
            action, bid = ue
            if action == "add":
                self.flush_removes()
                if self.pending_adds and self.pending_adds[-1] != bid - 1:
                    self.flush_adds()
                self.pending_adds.append(bid)
                continue
            if action == "remove":
                self.flush_adds()
                self.pending_removes.append(bid)
                continue
            self.flush_adds()
            self.flush_removes()
            self.sync_params()
            self.touched.add(bid)
            if action == "online":
                self.online(bid)
            elif action == "offline":
                self.auto_onlining.discard(bid)
                self.write(OfflineBlock(bid, Attr.STATE, Source.USER), FLAG_INFERRED)
        self.flush_adds()
        self.flush_removes()

    def online(self, bid: int) -> None:
        """An online uevent: the kernel's own onlining of a block it just added, or user space's. User space's type:
        ``online`` (the policy's choice) when the block went to the zone its offline valid_zones named first when
        last read, else the type that forces the zone it went to (online_movable, online_kernel)."""
        info = self.host.block(bid)
        default = self.default_zone.pop(bid, None)
        self.decisions += 1
        observed = info is not None and info.state is BlockState.ONLINE and len(info.valid_zones) == 1
        self.decisions_observed += observed
        if bid in self.auto_onlining:
            self.auto_onlining.discard(bid)
            return
        if not observed:
            kind = OnlineType.ONLINE  # the block left its zone before it was read: the policy's choice is assumed
        else:
            assert info is not None
            zone = info.valid_zones[0]
            forced = OnlineType.ONLINE_MOVABLE if zone is ZoneType.MOVABLE else OnlineType.ONLINE_KERNEL
            kind = OnlineType.ONLINE if zone is default else forced
        self.write(OnlineBlock(bid, kind, Attr.STATE, Source.USER), FLAG_INFERRED)

    def remember(self, blocks: dict[int, BlockInfo]) -> None:
        """Keep each offline block's first valid zone: the zone the policy would give it (valid_zones_show)."""
        self.default_zone.update({b: i.valid_zones[0] for b, i in blocks.items() if i.state is BlockState.OFFLINE and i.valid_zones})

    def read_block(self, bid: int) -> BlockInfo | None:
        """One block as sysfs shows it now (remembered as the policy's default if offline)."""
        info = self.host.block(bid)
        if info is not None:
            self.remember({bid: info})
        return info

    def sync_params(self) -> None:
        """Parameter files that changed since the last look: a write happened (inferred)."""
        now = self.host.params()
        for name, param in RUNTIME_PARAMS.items():
            value = now.get(name, "")
            if value and value != self.params.get(name):
                self.params[name] = value
                self.write(ParamWrite(param, value), FLAG_INFERRED)

    def owner(self, bid: int, dimms: dict[int, str], fresh: dict[str, Device]) -> Device | None:
        """The device a new block belongs to: the ACPI DIMM that bound it (new ones kept in ``fresh`` until their group is
        registered), the virtio-mem region holding it, or none."""
        dev = self.devs.block_owner.get(bid)
        if dev is not None:
            return dev
        name = dimms.get(bid)
        if name is not None:
            dev = self.devs.by_name.get(name) or fresh.get(name)
            if dev is None:
                info = self.host.block(bid)
                dev = fresh[name] = Device("dimm", name, max(info.node if info else 0, 0), -1)
            return dev
        addr = bid * self.bs
        dev = self.devs.vmem_at(addr)
        if dev is None:  # a device that appeared after the snapshot
            for v in self.host.virtio_mems(self.bs, {}):
                if v.holds(addr) and v.name not in self.devs.by_name:
                    dev = self.register_vmem(v)
        return dev

    def register_vmem(self, v: VirtioMem) -> Device:
        """A virtio-mem device probed while recording: memory_group_register_dynamic(node, unit pages)."""
        dev = Device("vmem", v.name, v.node, self.devs.alloc(), v.start, v.size, v.unit)
        self.write(GroupRegister(True, v.node, v.unit // PAGE), FLAG_INFERRED)
        return self.devs.add(dev)

    def flush_adds(self) -> None:
        """Consecutive add uevents -> the drivers' calls: per DIMM group_register + add_memory, per virtio-mem unit add_memory."""
        if not self.pending_adds:
            return
        self.sync_params()
        dimms = self.host.acpi_dimms()
        auto = self.params.get("auto_online_blocks", "offline") != "offline"
        runs: list[tuple[Device | None, int, list[int]]] = []  # (device, unit start, blocks)
        fresh: dict[str, Device] = {}
        for b in self.pending_adds:
            dev = self.owner(b, dimms, fresh)
            unit = dev.unit_of(b * self.bs) if dev is not None else -1
            if runs and runs[-1][0] is dev and (dev is None or dev.kind == "dimm" or runs[-1][1] == unit) and runs[-1][2][-1] == b - 1:
                runs[-1][2].append(b)
            else:
                runs.append((dev, unit, [b]))
        for dev, _unit, blocks in runs:
            start, size = blocks[0] * self.bs, len(blocks) * self.bs
            if dev is None:
                info = self.host.block(blocks[0])
                self.write(AddMemory(start, size, max(info.node if info else 0, 0), AddFlags.NONE), FLAG_INFERRED)
            elif dev.kind == "dimm":
                if dev.mgid < 0:  # acpi_memory_enable_device: the group spans every block the device bound
                    bound = sorted(b for b, n in dimms.items() if n == dev.name) or blocks
                    dev.start, dev.size, dev.mgid = bound[0] * self.bs, len(bound) * self.bs, self.devs.alloc()
                    self.devs.add(dev)
                    self.write(GroupRegister(False, dev.node, dev.size // PAGE), FLAG_INFERRED)
                flags = AddFlags.NID_IS_MGID | acpi_memmap_flag(self.snap.release, self.snap.params, size, self.bs)
                self.write(AddMemory(start, size, dev.mgid, flags), FLAG_INFERRED)
            else:
                self.write(AddMemory(start, size, dev.mgid, VMEM_ADD_FLAGS), FLAG_INFERRED)
            for b in blocks:
                if dev is not None:
                    dev.blocks.add(b)
                    self.devs.block_owner[b] = dev
            if auto:
                self.auto_onlining.update(blocks)
            self.touched.update(blocks)
        self.pending_adds = []

    def flush_removes(self) -> None:
        """Remove uevents -> remove_memory of the DIMM (then its group_unregister), of each virtio-mem unit, or of each block."""
        if not self.pending_removes:
            return
        done: set[int] = set()  # unit starts already removed in this batch
        owners = [(b, self.devs.block_owner.get(b)) for b in self.pending_removes]  # before any device is dropped
        for b, dev in owners:
            self.touched.add(b)
            self.auto_onlining.discard(b)
            if dev is None:
                self.write(RemoveMemory(b * self.bs, self.bs), FLAG_INFERRED)
                continue
            unit = dev.unit_of(b * self.bs)
            if unit in done:
                continue
            done.add(unit)
            if dev.kind == "dimm":
                self.write(RemoveMemory(dev.start, dev.size), FLAG_INFERRED)
                self.write(GroupUnregister(dev.mgid), FLAG_INFERRED)
                self.devs.drop(dev)
            else:
                self.write(RemoveMemory(unit, dev.unit), FLAG_INFERRED)
                for ub in range(unit // self.bs, (unit + dev.unit) // self.bs):
                    dev.blocks.discard(ub)
                    self.devs.block_owner.pop(ub, None)
        self.pending_removes = []

    def observations(self, full: bool) -> list[Event]:
        """What sysfs and /proc/zoneinfo show now: the touched blocks (``full``: every block, and a digest) and every zone."""
        if full:
            blocks = self.host.blocks()
            self.remember(blocks)
            return observe_all(blocks, self.host.zones(), gone=self.touched - set(blocks))
        out: list[Event] = []
        for b in sorted(self.touched):
            i = self.read_block(b)
            out.append(BlockObserved(b, BlockState.ABSENT, -1, ()) if i is None else BlockObserved(b, i.state, i.node, i.valid_zones))
        out += [ZoneObserved(z.node, z.zone, z.present, z.spanned, z.start_pfn, z.managed) for z in self.host.zones()]
        return out


def open_uevent_socket() -> socket.socket:
    """The kernel uevent multicast group (no privileges needed to listen)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((0, 1))
    s.setblocking(False)
    return s


class Control:
    """``--control PATH``: a FIFO whose lines become marks; ``PATH.done`` holds how many were handled."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        if self.path.exists() and not stat.S_ISFIFO(self.path.stat().st_mode):
            raise FileExistsError(f"{path}: exists and is not a FIFO")
        if not self.path.exists():
            os.mkfifo(self.path, 0o600)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.keep = os.open(self.path, os.O_WRONLY)  # never EOF while no writer has it open
        self.buf = b""
        self.handled = 0
        self.ack()

    def lines(self) -> list[str]:
        with contextlib.suppress(BlockingIOError):
            self.buf += os.read(self.fd, 65536)
        *done, self.buf = self.buf.split(b"\n")
        return [line.decode(errors="replace").strip() for line in done]

    def ack(self) -> None:
        tmp = self.path.with_name(self.path.name + ".done.tmp")
        tmp.write_text(f"{self.handled}\n")
        tmp.replace(self.path.with_name(self.path.name + ".done"))

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.keep)
        with contextlib.suppress(OSError):
            self.path.unlink()


def receive(sock: socket.socket, into: list[dict[str, str]]) -> str | None:
    """Every uevent waiting on the socket into ``into``; the error text when the kernel dropped some (ENOBUFS)."""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError as e:
            return e.strerror or str(e)
        env = parse_uevent(data)
        if env:
            into.append(env)


@dataclass(slots=True)
class Rotation:
    """``--rotate-size``/``--rotate-count`` (dumpcap's ring buffer): parts NAME_00001.mhpt, NAME_00002.mhpt, ...

    A part is closed once it holds ``size`` bytes (at a quiet moment); the next one is a trace of its own on the same
    clock (records numbered from 0, timestamps going on) that starts with a snapshot of the host (a checkpoint),
    so every part replays on its own, and ``mhp cat`` joins them (keeping the first part's snapshot). With
    ``count``, only the newest ``count`` parts are kept.
    """

    output: str
    size: int
    count: int | None = None
    part: int = 1
    header: TraceHeader | None = None  # every part's (the first one's: one clock)

    def name(self, k: int) -> str:
        p = Path(self.output)
        return str(p.with_name(f"{p.stem}_{k:05d}{p.suffix or '.mhpt'}"))

    def next(self, rec: Recorder, sock: socket.socket) -> None:
        """Close the current part and open the next with a checkpoint, if the host is quiet (else try later)."""
        snap = rec.host.snapshot()
        if select.select([sock], [], [], 0)[0]:
            return
        old = rec.w
        self.part += 1
        assert self.header is not None
        new = TraceWriter(self.name(self.part), self.header, chunk_records=old.chunk_records, fsync=old.fsync)
        new.t0 = old.t0  # one clock for all parts (the header's wall time is its zero); records number from 0 in each
        old.close()
        for ev, flags in snapshot_events(snap, rec.devs):
            new.write(ev, flags=flags)
        new.flush()
        rec.w = new
        if self.count is not None and self.part > self.count:
            Path(self.name(self.part - self.count)).unlink(missing_ok=True)


def record(
    output: str,
    *,
    snapshot_only: bool = False,
    duration: float | None = None,
    fsync: bool = False,
    zone_interval: float = 10.0,
    root: str = "/",
    control: str | None = None,
    detail: str = "",
    rotation: Rotation | None = None,
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
    ctl: Control | None = None
    header = header_for(snap, detail)
    if rotation is not None:
        rotation.header = header
    rec = Recorder(host, TraceWriter(rotation.name(1) if rotation else output, header, chunk_records=256, fsync=fsync), snap)
    try:
        for ev, flags in snapshot_events(snap, rec.devs):
            rec.w.write(ev, flags=flags)
        rec.w.flush()
        if sock is not None:
            ctl = Control(control) if control else None
            loop(rec, sock, ctl, lambda: stop, duration, zone_interval, rotation)
        rec.w.close()
        return rec.w.seq
    except BaseException:
        rec.w.abort()
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if sock is not None:
            sock.close()
        if ctl is not None:
            ctl.close()


def loop(
    rec: Recorder, sock: socket.socket, ctl: Control | None, stopped: Any, duration: float | None, zone_interval: float, rotation: Rotation | None = None
) -> None:
    """The recorder's main loop: batches of uevents once quiet, marks from the control FIFO, periodic zone samples."""
    end = None if duration is None else time.monotonic() + duration
    next_zones = time.monotonic() + zone_interval
    batch: list[dict[str, str]] = []
    while not stopped() and (end is None or time.monotonic() < end):
        waits: list[Any] = [sock] + ([ctl.fd] if ctl and not batch else [])  # a mark waits until the batch is quiet
        ready, _, _ = select.select(waits, [], [], QUIET_S if batch or rec.touched else 1.0)
        if sock in ready:
            lost = receive(sock, batch)
            if lost:
                rec.handle(batch)
                batch = []
                rec.write(Loss(0, f"uevent socket: {lost}"))
            continue
        if batch:  # quiet: handle what arrived
            rec.handle(batch)
            batch = []
        if ctl is not None and ctl.fd in ready:
            for text in ctl.lines():
                settle(rec, sock, batch, full=True, mark=text)
                ctl.handled += 1
            ctl.ack()
            continue
        if rec.touched or time.monotonic() >= next_zones:
            settle(rec, sock, batch, full=False)
            next_zones = time.monotonic() + zone_interval
        rec.w.flush()
        if rotation is not None and rec.w.offset >= rotation.size and not batch:
            rotation.next(rec, sock)
    rec.handle(batch)
    settle(rec, sock, [], full=True)
def settle(rec: Recorder, sock: socket.socket, batch: list[dict[str, str]], full: bool, mark: str | None = None) -> None:
    """Observe the quiet host: what was read counts only if no uevent arrived while it was read or within ``QUIET_S``
    after (the kernel changes its counters a moment before it sends the uevent that says so); else the uevents are
    handled and the host read again. A host that never stays quiet that long gets no partial observation (a mark's
    full one is written all the same: the mark asked for it)."""
    for _ in range(SETTLE_TRIES):
        rec.sync_params()
        obs = rec.observations(full)
        ready, _, _ = select.select([sock], [], [], QUIET_S)
        if not ready:
            break
        receive(sock, batch)
        time.sleep(QUIET_S)
        receive(sock, batch)
        rec.handle(batch)
        batch.clear()
    else:
        if not full:
            return  # still busy: the touched blocks are observed at the next quiet moment
    if mark is not None:
        rec.write(Mark(mark))
    for ev in obs:
        rec.write(ev)
    rec.touched.clear()
    rec.w.flush()
