"""Lab traces: a scenario run on a real kernel under QEMU, as a .mhpt trace the replayer checks against the model.

Boot: the guest's sysfs/procfs files that ``mhp record`` reads are copied through the agent (``snap``) into a
temporary tree laid out like the real root and read by the recorder's own code (``traces.record.Host``,
``snapshot_events``): boot records, then block/zone observations and a state digest.

Each step is a ``mark``, its requests, then what the guest showed once the step settled: every block present
now or gone in this step, every zone of /proc/zoneinfo, a state digest. Guest sysfs writes are requests exactly
as issued, each followed by its real ``result``. The drivers' calls are inferred (flag ``inferred``, no results):
an ACPI DIMM plug is group_register + add_memory at the address QMP reports, an unplug is the eject path
(offline every block, remove, unregister); virtio-mem registers one dynamic group per device at boot, and a
resize adds the blocks (SBM) or units (BBM) that appeared, ascending, and removes those that went, descending.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from traces.codec import FLAG_INFERRED
from traces.events import (
    AddFlags,
    AddMemory,
    Attr,
    BlockObserved,
    BlockState,
    DeviceObserved,
    Event,
    GroupRegister,
    GroupUnregister,
    OfflineAndRemoveMemory,
    OfflineBlock,
    OnlineBlock,
    Param,
    ParamWrite,
    RemoveMemory,
    Result,
    Source,
    ZoneObserved,
)
from traces.header import Capture, TraceHeader
from traces.record import Host, HostSnapshot, digest_of, header_for
from traces.scenario import Scenario, Step

PAGE = 4096
GUEST_ROOTS = ("/sys/", "/proc/")
# strerror text -> errno; busybox's "sh: write error: Invalid argument" ends with the C library's strerror.
ERRNO_BY_TEXT = {os.strerror(n): n for n in sorted(errno.errorcode, reverse=True)}
VMEM_ADD_FLAGS = AddFlags.NID_IS_MGID | AddFlags.DRIVER_MANAGED | AddFlags.MERGE_RESOURCE

Timed = tuple[Event, int, int]  # (event, record flags, time.monotonic_ns() it belongs to)


class SnapshotDumpError(ValueError):
    """The agent's ``snap`` output cannot be turned into a file tree."""


# --- guest files -> HostSnapshot ------------------------------------------------------------------------


def parse_dump(text: str) -> tuple[dict[str, str], list[str]]:
    """The agent's ``snap`` output -> ({guest path: content}, [guest directories]) (paths absolute, /sys or /proc)."""
    files: dict[str, list[str]] = {}
    dirs: list[str] = []
    cur: list[str] | None = None
    for line in text.split("\n"):
        if line.startswith(("@@F ", "@@D ")):
            path = line[4:]
            p = PurePosixPath(path)
            if not path.startswith(GUEST_ROOTS) or ".." in p.parts:
                raise SnapshotDumpError(f"guest snapshot: path {path!r} is not below /sys or /proc")
            if line.startswith("@@D "):
                dirs.append(path)
                cur = None
            else:
                cur = files[path] = []
        elif cur is not None:
            cur.append(line)
        elif line.strip():
            raise SnapshotDumpError(f"guest snapshot: text outside any file: {line[:200]!r}")
    if not files:
        raise SnapshotDumpError(f"guest snapshot: no files in the agent's output: {text[-300:]!r}")
    return {p: "\n".join(lines).rstrip("\n") + "\n" for p, lines in files.items()}, dirs


def write_tree(files: dict[str, str], dirs: Iterable[str], root: Path) -> None:
    """Lay the guest's files and directories out below ``root`` like the real root file system."""
    for d in dirs:
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)


def snapshot_from_dump(text: str) -> HostSnapshot:
    """``Host(tree).snapshot()`` of the files in a ``snap`` output (the code path of ``mhp record``)."""
    files, dirs = parse_dump(text)
    with tempfile.TemporaryDirectory(prefix="mhp-lab-snap-") as tmp:
        write_tree(files, dirs, Path(tmp))
        try:
            return Host(tmp).snapshot()
        except (OSError, ValueError) as e:
            raise SnapshotDumpError(f"guest snapshot unreadable by traces.record.Host: {e}") from None


def write_rc(status: int, message: str) -> int:
    """A sysfs write's return code from the shell: 0, or -errno from the message's strerror text."""
    if status == 0:
        return 0
    text = message.strip().splitlines()[-1].rsplit(": ", 1)[-1] if message.strip() else ""
    n = ERRNO_BY_TEXT.get(text)
    if n is None:
        raise ValueError(f"sysfs write failed (exit status {status}) with a message naming no errno: {message!r}")
    return -n


# --- the trace header and observations -------------------------------------------------------------------


def lab_header(snap: HostSnapshot, scenario: str, package: str) -> TraceHeader:
    """The recorder's header for a lab trace: source lab, detail = scenario and kernel package."""
    h = header_for(snap, f"{scenario} on {package}")
    h.source = Capture.LAB
    return h


def observations(before: HostSnapshot, after: HostSnapshot) -> list[Event]:
    """Every block present now or gone since ``before`` (absent), every zone, and the state digest."""
    gone = set(before.blocks) - set(after.blocks)
    out: list[Event] = []
    for b in sorted(set(after.blocks) | gone):
        i = after.blocks.get(b)
        out.append(BlockObserved(b, BlockState.ABSENT, -1, ()) if i is None else BlockObserved(b, i.state, i.node, i.valid_zones))
    out += [ZoneObserved(z.node, z.zone, z.present, z.spanned, z.start_pfn, z.managed) for z in after.zones]
    out.append(digest_of(after))
    return out


# --- the drivers' calls ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Performed:
    """What doing a step gave: ``rc`` (0, a shell status or QEMU's text); guest steps: each write and when it returned."""

    rc: int | str
    writes: list[list[Any]] | None = None  # [block or None, exit status, shell message] per sysfs write
    times: list[int] = field(default_factory=list)  # time.monotonic_ns() after each write
    device: str = ""  # host steps: the DIMM or virtio-mem device id


@dataclass(frozen=True, slots=True)
class VmemDevice:
    """A virtio-mem device as the guest driver sees it: its region and its add/remove unit."""

    id: str
    node: int
    start: int
    max_size: int
    unit: int  # bytes: one memory block (SBM: device block < memory block), else max(device block, memory block)

    def blocks(self, snap: HostSnapshot) -> set[int]:
        """The memory blocks of the device's region present in ``snap``."""
        bs = snap.block_size
        return {b for b in snap.blocks if self.start <= b * bs < self.start + self.max_size}


@dataclass(slots=True)
class Dimm:
    """A plugged DIMM: where QEMU put it and the static group the ACPI driver registered for it."""

    id: str
    node: int
    start: int
    size: int
    mgid: int


def memory_devices(qmp_answer: Any) -> dict[str, dict[str, Any]]:
    """QMP query-memory-devices -> {device id: data + {"type": ...}}."""
    out = {}
    for dev in qmp_answer or []:
        data = dict(dev.get("data", {}))
        if "id" in data:
            out[data["id"]] = {**data, "type": dev.get("type", "")}
    return out


def release_at_least(release: str, major: int, minor: int) -> bool:
    """True if a ``uname -r`` string is at least major.minor."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise ValueError(f"cannot read a kernel version from {release!r}")
    return (int(m.group(1)), int(m.group(2))) >= (major, minor)


@dataclass(slots=True)
class TraceBuilder:
    """Infers the drivers' calls of a lab run and turns each step into trace events."""

    scenario: Scenario
    boot: HostSnapshot
    vmems: list[VmemDevice]
    groups: set[int] = field(default_factory=set)  # group ids in use (the kernel's memory_groups xarray)
    dimms: dict[str, Dimm] = field(default_factory=dict)
    vmem_groups: dict[str, int] = field(default_factory=dict)  # virtio-mem device id -> its group id (from boot_requests)

    @classmethod
    def for_guest(cls, scenario: Scenario, boot: HostSnapshot, qmp_devices: Any) -> TraceBuilder:
        """A builder for a booted guest; virtio-mem regions come from QMP query-memory-devices."""
        devs = memory_devices(qmp_devices)
        bs = boot.block_size
        vmems = []
        for spec in scenario.devices:
            d = devs.get(spec.id)
            if d is None or "memaddr" not in d:
                raise ValueError(f"virtio-mem device {spec.id!r} is not in QMP query-memory-devices: {sorted(devs)}")
            unit = bs if spec.block_size < bs else max(spec.block_size, bs)
            vmems.append(VmemDevice(spec.id, spec.node, int(d["memaddr"]), int(d.get("max-size", spec.max_size)), unit))
        return cls(scenario, boot, vmems)

    def alloc_group(self) -> int:
        """xa_alloc in memory_group_register: the lowest free id."""
        mgid = 0
        while mgid in self.groups:
            mgid += 1
        self.groups.add(mgid)
        return mgid

    def boot_requests(self) -> list[tuple[Event, int]]:
        """virtio_mem probe: memory_group_register_dynamic(node, unit pages) per device, in declaration order."""
        out: list[tuple[Event, int]] = []
        for v in self.vmems:
            self.vmem_groups[v.id] = self.alloc_group()
            out.append((GroupRegister(True, v.node, v.unit // PAGE), FLAG_INFERRED))
        return out

    def memmap_on_memory(self, size: int) -> bool:
        """Whether acpi_memhotplug passes MHP_MEMMAP_ON_MEMORY: 6.6+ always; before, one block with the parameter on."""
        if release_at_least(self.boot.release, 6, 6):
            return True
        return size == self.boot.block_size and self.boot.params.get("memmap_on_memory", "") in ("Y", "1")

    def step_events(self, step: Step, done: Performed, before: HostSnapshot, after: HostSnapshot, qmp_devices: Any, start: int, settled: int) -> list[Timed]:
        """Requests of one step (inferred ones at ``start``, guest writes when they returned) and the observations at ``settled``."""
        out: list[Timed] = []
        if step.action in ("online", "offline", "param", "auto_online"):
            out += guest_requests(step, done.writes or [], done.times)
        else:
            devs = memory_devices(qmp_devices)
            reqs: list[Event] = []
            if step.action == "dimm" and done.rc == 0:
                reqs = self.dimm_plug(done.device, devs)
            elif step.action == "unplug" and done.rc == 0:
                reqs = self.dimm_unplug(done.device, before)
            elif step.action == "vmem":
                reqs = self.vmem_resize(done.device, before, after)
            out += [(ev, FLAG_INFERRED, start) for ev in reqs]
            out += [(ev, 0, settled) for ev in device_observations(step.action, done.device, devs)]
        out += [(ev, 0, settled) for ev in observations(before, after)]
        return out

    def dimm_plug(self, name: str, devs: dict[str, dict[str, Any]]) -> list[Event]:
        """acpi_memory_enable_device: memory_group_register_static(node, pages), add_memory(mgid, start, size, flags)."""
        d = devs.get(name)
        if d is None or d.get("type") != "dimm":
            raise ValueError(f"DIMM {name!r} is not in QMP query-memory-devices: {sorted(devs)}")
        dimm = Dimm(name, int(d["node"]), int(d["addr"]), int(d["size"]), self.alloc_group())
        self.dimms[name] = dimm
        flags = AddFlags.NID_IS_MGID | (AddFlags.MEMMAP_ON_MEMORY if self.memmap_on_memory(dimm.size) else AddFlags.NONE)
        return [GroupRegister(False, dimm.node, dimm.size // PAGE), AddMemory(dimm.start, dimm.size, dimm.mgid, flags)]

    def dimm_unplug(self, name: str, before: HostSnapshot) -> list[Event]:
        """ACPI eject: offline every block of the DIMM (device_offline, ascending), __remove_memory, memory_group_unregister."""
        dimm = self.dimms.pop(name, None)
        if dimm is None:
            raise ValueError(f"unplug of {name!r}: no such DIMM was plugged")
        bs = before.block_size
        blocks = sorted(b for b in before.blocks if dimm.start <= b * bs < dimm.start + dimm.size)
        self.groups.discard(dimm.mgid)
        return [
            *(OfflineBlock(b, Attr.ONLINE, Source.DRIVER) for b in blocks),
            RemoveMemory(dimm.start, dimm.size),
            GroupUnregister(dimm.mgid),
        ]

    def vmem_resize(self, name: str, before: HostSnapshot, after: HostSnapshot) -> list[Event]:
        """The blocks (SBM) or units (BBM) that appeared: add_memory ascending; that went: removed descending."""
        v = next((d for d in self.vmems if d.id == name), None)
        if v is None or name not in self.vmem_groups:
            raise ValueError(f"no virtio-mem device {name!r} registered at boot")
        mgid = self.vmem_groups[name]
        bs = before.block_size
        old, new = v.blocks(before), v.blocks(after)

        def units(blocks: set[int]) -> list[int]:
            return sorted({(b * bs - v.start) // v.unit for b in blocks})

        out: list[Event] = []
        for u in units(new - old):
            out.append(AddMemory(v.start + u * v.unit, v.unit, mgid, VMEM_ADD_FLAGS))
        for u in reversed(units(old - new)):
            start = v.start + u * v.unit
            unit_blocks = [b for b in range(start // bs, (start + v.unit) // bs) if b in before.blocks]
            offline = all(before.blocks[b].state is BlockState.OFFLINE for b in unit_blocks)
            out.append(RemoveMemory(start, v.unit) if offline else OfflineAndRemoveMemory(start, v.unit))
        return out


def guest_requests(step: Step, writes: list[list[Any]], times: list[int]) -> list[Timed]:
    """One request per sysfs write as issued, each followed by its real result."""
    a = step.args
    attr = Attr.ONLINE if a.get("attr") == "online" else Attr.STATE
    out: list[Timed] = []
    for (block, status, message), t in zip(writes, times, strict=True):
        ev: Event
        if step.action == "online":
            ev = OnlineBlock(block, a["type"], attr, Source.USER)
        elif step.action == "offline":
            ev = OfflineBlock(block, attr, Source.USER)
        elif step.action == "param":
            ev = ParamWrite(Param[a["param"].upper()], a["value"])
        else:
            ev = ParamWrite(Param.AUTO_ONLINE_BLOCKS, a["auto_online"].label)
        out += [(ev, 0, t), (Result(write_rc(status, message)), 0, t)]
    return out


def device_observations(action: str, name: str, devs: dict[str, dict[str, Any]]) -> list[Event]:
    """The device a host step acted on as QEMU reports it: virtio-mem requested and plugged size, a DIMM's size (0 once gone)."""
    d = devs.get(name)
    if action == "vmem" and d is not None:
        return [DeviceObserved(name, int(d.get("requested-size", 0)), int(d.get("size", 0)))]
    if action == "dimm" and d is not None:
        return [DeviceObserved(name, int(d["size"]), int(d["size"]))]
    if action == "unplug":
        return [DeviceObserved(name, 0, 0 if d is None else int(d["size"]))]
    return []


AgentCall = Callable[[str], tuple[int, str]]


def guest_snapshot(agent: AgentCall) -> HostSnapshot:
    """One ``snap`` of the guest through its agent, read as ``mhp record`` reads a host."""
    status, out = agent("snap")
    if status:
        raise SnapshotDumpError(f"guest snap failed (status {status}): {out[-500:]}")
    return snapshot_from_dump(out)
