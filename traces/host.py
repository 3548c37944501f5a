"""What a running Linux host shows about its memory: sysfs, procfs and the kernel log, read as ``mhp record`` reads them.

Only what a production host exposes is read: memory blocks and parameters in sysfs, ``/proc/zoneinfo``,
``/proc/iomem`` (addresses need root), ACPI memory devices (``PNP0C80``) and the memory blocks they bind
(``physical_node*`` links), virtio-mem devices (their ``virtioN`` region in ``/proc/iomem``, the driver link in
``/sys/bus/virtio``, their unit from the driver's start-up lines in ``/dev/kmsg``, if the log still has them).
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traces.events import BlockState, ZoneType

ZONES = {"DMA": ZoneType.DMA, "DMA32": ZoneType.DMA32, "Normal": ZoneType.NORMAL, "Movable": ZoneType.MOVABLE}
STATES = {"online": BlockState.ONLINE, "offline": BlockState.OFFLINE, "going-offline": BlockState.GOING_OFFLINE}
DRIVER_MANAGED = re.compile(r"System RAM \((.+)\)")
PARAMS = ("online_policy", "auto_movable_ratio", "auto_movable_numa_aware", "memmap_on_memory")
ACPI_MEMORY = "sys/bus/acpi/devices"
ACPI_MEMORY_HID = "PNP0C80"
VMEM_LOG = re.compile(r"virtio_mem (virtio\d+): (start address|region size|device block size|memory block size|subblock size|big block size|nid): (\S+)")


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


@dataclass(frozen=True, slots=True)
class VirtioMem:
    """A virtio-mem device as the guest shows it: its region, node and the unit it adds and removes memory in."""

    name: str  # the virtio device, e.g. virtio1
    start: int
    size: int
    node: int
    unit: int  # bytes: a memory block (SBM) or a big block (BBM); the memory block size when the log lacks it
    unit_known: bool  # False: the kernel log no longer holds the driver's start-up lines

    def holds(self, addr: int) -> bool:
        return self.start <= addr < self.start + self.size


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
    dimms: dict[int, str] = field(default_factory=dict)  # block -> the ACPI memory device (PNP0C80:NN) that bound it
    vmems: list[VirtioMem] = field(default_factory=list)


class Host:
    """Reads a host's sysfs/procfs below ``root`` (``/`` on a live host; a fake tree in tests)."""

    def __init__(self, root: str | Path = "/") -> None:
        self.root = Path(root)
        self.kmsg_lines: list[str] = []  # virtio-mem start-up lines seen so far (the log is read once, at start)

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

    def blocks(self) -> dict[int, BlockInfo]:
        """Every memory block present now."""
        out = {}
        for p in self.memory_dir().iterdir():
            m = re.fullmatch(r"memory(\d+)", p.name)
            if m:
                info = self.block(int(m.group(1)))
                if info is not None:
                    out[int(m.group(1))] = info
        return out

    def params(self) -> dict[str, str]:
        """The memory_hotplug module parameters and auto_online_blocks."""
        out = {name: self.read(f"sys/module/memory_hotplug/parameters/{name}", "") for name in PARAMS}
        out["auto_online_blocks"] = self.read("sys/devices/system/memory/auto_online_blocks", "offline")
        return out

    def zones(self) -> list[ZoneInfo]:
        return parse_zoneinfo(self.read("proc/zoneinfo"))

    def snapshot(self) -> HostSnapshot:
        """Read the whole state (works unprivileged; /proc/iomem addresses need root)."""
        mem = self.memory_dir()
        if not mem.is_dir():
            raise OSError(f"{mem} does not exist: this kernel has no memory hotplug sysfs")
        block_size = int(self.read("sys/devices/system/memory/block_size_bytes"), 16)
        blocks = self.blocks()
        ram, managed = self.iomem()
        self.kmsg_lines = self.kmsg_lines or read_kmsg(self.root / "dev/kmsg")
        return HostSnapshot(
            release=self.read("proc/sys/kernel/osrelease", "unknown"),
            cmdline=self.read("proc/cmdline", ""),
            block_size=block_size,
            possible=parse_node_list(self.read("sys/devices/system/node/possible", "0")),
            cpu_nodes=parse_node_list(self.read("sys/devices/system/node/has_cpu", "0")),
            params=self.params(),
            blocks=blocks,
            zones=self.zones(),
            ram=ram,
            driver_managed=managed,
            dimms=self.acpi_dimms(),
            vmems=self.virtio_mems(block_size, blocks),
        )

    def iomem(self) -> tuple[list[tuple[int, int]] | None, list[tuple[int, int, str]]]:
        """Top-level System RAM ranges and driver-managed ones from /proc/iomem (None if hidden)."""
        ram: list[tuple[int, int]] = []
        managed: list[tuple[int, int, str]] = []
        for start, end, name, nested in parse_iomem(self.read("proc/iomem", "")):
            dm = DRIVER_MANAGED.fullmatch(name)
            if dm:
                managed.append((start, end, dm.group(1)))
                ram.append((start, end))
            elif name == "System RAM" and not nested:
                ram.append((start, end))
        if ram and all(s == 0 and e == 1 for s, e in ram):
            return None, []  # unprivileged readers see zeros
        return sorted(ram), managed

    def acpi_dimms(self) -> dict[int, str]:
        """Memory block -> the ACPI memory device (PNP0C80) whose ``physical_node*`` links bind it."""
        out: dict[int, str] = {}
        base = self.root / ACPI_MEMORY
        try:
            devices = sorted(p for p in base.iterdir() if p.name.startswith(ACPI_MEMORY_HID))
        except OSError:
            return out
        for dev in devices:
            try:
                links = [p for p in dev.iterdir() if p.name.startswith("physical_node")]
            except OSError:
                continue
            for link in links:
                m = re.search(r"memory(\d+)$", os.readlink(link)) if link.is_symlink() else None
                if m:
                    out[int(m.group(1))] = dev.name
        return out

    def virtio_mems(self, block_size: int, blocks: dict[int, BlockInfo]) -> list[VirtioMem]:
        """virtio-mem devices: their ``virtioN`` region in /proc/iomem (root only) and their unit from the kernel log."""
        log: dict[str, dict[str, str]] = {}
        for line in self.kmsg_lines:
            m = VMEM_LOG.search(line)
            if m:
                log.setdefault(m.group(1), {})[m.group(2)] = m.group(3)
        out = []
        for start, end, name, nested in parse_iomem(self.read("proc/iomem", "")):
            if nested or not re.fullmatch(r"virtio\d+", name) or not self.is_virtio_mem(name):
                continue
            info = log.get(name, {})
            big = info.get("big block size")
            unit = max(int(big, 16), block_size) if big else block_size
            first = next((blocks[b].node for b in range(start // block_size, end // block_size) if b in blocks), -1)
            node = int(info["nid"]) if "nid" in info else max(first, 0)
            out.append(VirtioMem(name, start, end - start, node, unit, "subblock size" in info or big is not None))
        return out

    def is_virtio_mem(self, name: str) -> bool:
        """Whether /sys/bus/virtio/devices/NAME is bound to the virtio_mem driver."""
        link = self.root / "sys/bus/virtio/devices" / name / "driver"
        try:
            return os.path.basename(os.readlink(link)) == "virtio_mem"
        except OSError:
            return False


def parse_iomem(text: str) -> list[tuple[int, int, str, bool]]:
    """/proc/iomem lines as (start, end exclusive, name, nested)."""
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r"(\s*)([0-9a-f]+)-([0-9a-f]+) : (.*)", line)
        if m:
            out.append((int(m.group(2), 16), int(m.group(3), 16) + 1, m.group(4), bool(m.group(1))))
    return out


def read_kmsg(path: Path) -> list[str]:
    """The virtio-mem lines of the kernel log (/dev/kmsg, read without blocking; [] where it cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return []
    out = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten while reading: go on with the next record
                    continue
                break  # EAGAIN: the end of the log
            if not rec:
                break
            out += [line.split(";", 1)[-1].strip() for line in rec.decode(errors="replace").splitlines() if "virtio_mem" in line]
    finally:
        os.close(fd)
    return out


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
