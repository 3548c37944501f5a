"""The drivers that hot(un)plug memory, as event generators: ACPI DIMMs and virtio-mem (SBM/BBM).

Drivers issue the same events a recorder sees (group register, add, remove, offline) and read
the model's state to choose, as the real driver does (KERNEL-SEMANTICS §2.10).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from replay.model.machine import MEM_ONLINE, MMOP_ONLINE, ZONE_MOVABLE, Machine
from replay.model.memory_hotplug import mhp_supports_memmap_on_memory
from replay.model.outcome import Outcome
from traces.events import (
    AddFlags,
    AddMemory,
    Attr,
    Event,
    GroupRegister,
    GroupUnregister,
    OfflineAndRemoveMemory,
    OfflineBlock,
    OnlineBlock,
    RemoveMemory,
    Source,
)

Emit = Callable[[Event], Outcome]
UnitMatch = Callable[[str, bool], bool]  # (unit kind, partly plugged) -> does an unplug pass take it


def _state_is(state: tuple[str, bool]) -> UnitMatch:
    return lambda kind, partial: (kind, partial) == state
PAGEBLOCK_BYTES = 2 << 20
VIRTIO_MEM_DEFAULT_OFFLINE_THRESHOLD = 1 << 30
VMEM_FLAGS = AddFlags.NID_IS_MGID | AddFlags.DRIVER_MANAGED | AddFlags.MERGE_RESOURCE


class AcpiDimm:
    """drivers/acpi/acpi_memhotplug.c (6.1): one static group per DIMM, one add, eject = offline+remove."""

    def __init__(self, name: str, node: int, start: int, size: int) -> None:
        self.name = name
        self.node = node
        self.start = start
        self.size = size
        self.mgid = -1

    def plug(self, m: Machine, emit: Emit) -> int:
        """acpi_memory_enable_device (6.1): register the static group, add the range."""
        self.mgid = emit(GroupRegister(False, self.node, self.size // 4096)).rc
        if self.mgid < 0:
            return self.mgid
        flags = AddFlags.NID_IS_MGID
        if m.profile.acpi_always_requests_memmap or mhp_supports_memmap_on_memory(m, self.size):
            flags |= AddFlags.MEMMAP_ON_MEMORY
        rc = emit(AddMemory(self.start, self.size, self.mgid, flags)).rc
        return 0 if rc == -errno.EEXIST else rc  # cold-plugged memory is tolerated

    def unplug(self, m: Machine, emit: Emit) -> int:
        """ACPI eject (6.1): acpi_scan_try_to_offline, roll back on failure, then remove and free."""
        bs = m.block_size
        blocks = [b for b in range(self.start // bs, (self.start + self.size) // bs) if b in m.blocks]
        for i, b in enumerate(blocks):
            rc = emit(OfflineBlock(b, Attr.ONLINE, Source.DRIVER)).rc
            if rc < 0:
                for r in blocks[:i]:  # acpi_bus_online: device_online with the block's stored type
                    emit(OnlineBlock(r, MMOP_ONLINE, Attr.ONLINE, Source.DRIVER))
                return rc
        rc = emit(RemoveMemory(self.start, self.size)).rc
        if rc:
            return rc
        emit(GroupUnregister(self.mgid))
        return 0


class VirtioMem:
    """drivers/virtio/virtio_mem.c (6.1, 6.12, 7.2): one dynamic group; SBM or BBM plug/unplug orders.

    Plug limits (KERNEL-SEMANTICS §5.6, the same in every version): the driver adds another memory
    block (SBM) or big block (BBM) only while its offline memory plus that unit stays within
    ``offline_threshold``; past it the plug request ends with -ENOSPC, and the driver tries again
    when onlining one of its blocks leaves at most half the threshold offline.
    """

    def __init__(self, name: str, node: int, start: int, max_size: int, device_block_size: int, block_size: int, unplug_online: bool) -> None:
        self.name = name
        self.node = node
        self.start = start
        self.max_size = max_size
        self.unplug_online = unplug_online
        sb = max(device_block_size, PAGEBLOCK_BYTES)
        self.sbm = sb < block_size
        self.unit = block_size if self.sbm else max(device_block_size, block_size)  # bytes
        self.sb = sb if self.sbm else self.unit
        self.per_unit = self.unit // self.sb
        self.plugged: dict[int, int] = {}  # unit index -> plugged subblocks; 0 = unused (removed)
        self.mgid = -1
        self.requested = 0  # the device's requested size (bytes), what a retry works towards
        # virtio_mem_init_hotplug: room for two (big) blocks, at least VIRTIO_MEM_DEFAULT_OFFLINE_THRESHOLD
        self.offline_threshold = max(2 * block_size, VIRTIO_MEM_DEFAULT_OFFLINE_THRESHOLD)
        if not self.sbm:
            self.offline_threshold = max(2 * self.unit, self.offline_threshold)

    @property
    def size(self) -> int:
        return sum(self.plugged.values()) * self.sb

    def probe(self, emit: Emit) -> int:
        """virtio_mem_init_hotplug: memory_group_register_dynamic(nid, unit_pages)."""
        self.mgid = emit(GroupRegister(True, self.node, self.unit // 4096)).rc
        return min(self.mgid, 0)

    def resize(self, m: Machine, emit: Emit, requested: int) -> int:
        """Plug or unplug towards ``requested`` bytes; returns 0 or the first error."""
        self.requested = requested
        want = min(requested, self.max_size) // self.sb - self.size // self.sb
        if want > 0:
            return self._plug(m, emit, want)
        if want < 0:
            return self._unplug(m, emit, -want)
        return 0

    def offline_size(self, m: Machine) -> int:
        """vm->offline_size: bytes of this device's added memory blocks that are not online (added with
        virtio_mem_add_memory, less MEM_ONLINE, plus MEM_OFFLINE, less removals)."""
        return sum(self._unit_offline(m, u) for u, n in self.plugged.items() if n)

    def _unit_offline(self, m: Machine, unit: int) -> int:
        bs = m.block_size
        first = (self.start + unit * self.unit) // bs
        return sum(bs for b in range(first, first + max(1, self.unit // bs)) if (mem := m.blocks.get(b)) is not None and mem.state is not MEM_ONLINE)

    def could_add_memory(self, m: Machine, size: int) -> bool:
        """virtio_mem_could_add_memory: adding ``size`` keeps the offline memory within the threshold."""
        return size <= self.offline_threshold and self.offline_size(m) + size <= self.offline_threshold

    def memory_online(self, m: Machine, emit: Emit) -> int:
        """The MEM_ONLINE notifier for one of this device's blocks (onlined by someone else: the
        driver's own work queue is not running): once at most half the threshold is offline, a plug
        request still short of the requested size runs again (virtio_mem_retry)."""
        if min(self.requested, self.max_size) // self.sb <= self.size // self.sb or not self.could_add_memory(m, self.offline_threshold // 2):
            return 0
        return self.resize(m, emit, self.requested)

    def _unit_state(self, m: Machine, unit: int) -> tuple[str, bool]:
        """The driver's view of a used unit: (offline|kernel|movable, partially plugged)."""
        first = (self.start + unit * self.unit) // m.block_size
        zones = set()
        for b in range(first, first + max(1, self.unit // m.block_size)):
            mem = m.blocks.get(b)
            if mem is not None and mem.state is MEM_ONLINE and mem.zone is not None:
                zones.add("movable" if mem.zone.idx is ZONE_MOVABLE else "kernel")
        kind = "kernel" if "kernel" in zones else "movable" if zones else "offline"
        return kind, self.plugged[unit] < self.per_unit

    def _add(self, emit: Emit, unit: int, sbs: int) -> int:
        """virtio_mem_sbm_plug_and_add_mb / virtio_mem_bbm_plug_and_add_bb."""
        rc = emit(AddMemory(self.start + unit * self.unit, self.unit, self.mgid, VMEM_FLAGS)).rc
        if not rc:
            self.plugged[unit] = sbs
        return rc

    def _plug(self, m: Machine, emit: Emit, want: int) -> int:
        """virtio_mem_sbm_plug_request / virtio_mem_bbm_plug_request: partial, unused, then new units;
        no unit is added while the offline memory would pass the threshold."""
        for unit in sorted(u for u, n in self.plugged.items() if 0 < n < self.per_unit):
            add = min(want, self.per_unit - self.plugged[unit])
            self.plugged[unit] += add
            want -= add
        candidates = sorted(u for u, n in self.plugged.items() if n == 0)
        nxt = max(self.plugged, default=-1) + 1
        offline = self.offline_size(m)
        while want > 0:
            if offline + self.unit > self.offline_threshold:
                return -errno.ENOSPC  # "too many offline memory blocks": until memory gets onlined
            unit = candidates.pop(0) if candidates else nxt
            if unit == nxt:
                nxt += 1
            if (unit + 1) * self.unit > self.max_size:
                return -errno.ENOSPC  # the device region is exhausted
            sbs = min(want, self.per_unit)
            rc = self._add(emit, unit, sbs)
            if rc:
                return rc
            offline += self._unit_offline(m, unit)
            want -= sbs
        return 0

    def _unplug(self, m: Machine, emit: Emit, want: int) -> int:
        """virtio_mem_sbm_unplug_request / virtio_mem_bbm_unplug_request orders, descending ids."""
        passes: list[UnitMatch]
        if self.sbm:
            order = [("offline", True), ("offline", False), ("movable", True), ("kernel", True), ("movable", False), ("kernel", False)]
            if not self.unplug_online:
                order = order[:2]
            passes = [_state_is(o) for o in order]
        else:
            passes = [lambda kind, partial: kind == "offline"]
            if self.unplug_online:
                passes += [lambda kind, partial: kind != "kernel", lambda kind, partial: True]
        for match in passes:
            for unit in sorted((u for u, n in self.plugged.items() if n), reverse=True):
                if want <= 0:
                    return 0
                if not self.plugged[unit] or not match(*self._unit_state(m, unit)):
                    continue
                want -= self._unplug_unit(m, emit, unit, want)
        return 0 if want <= 0 else -errno.EBUSY  # could not unplug everything requested

    def _unplug_unit(self, m: Machine, emit: Emit, unit: int, want: int) -> int:
        """Unplug up to ``want`` subblocks of one unit; a unit left empty is offlined and removed."""
        n = self.plugged[unit]
        if want < n:  # subblocks of an online block are fake-offlined: no hotplug event
            self.plugged[unit] = n - want
            return want
        start = self.start + unit * self.unit
        kind, _ = self._unit_state(m, unit)
        ev: Event = RemoveMemory(start, self.unit) if kind == "offline" else OfflineAndRemoveMemory(start, self.unit)
        if emit(ev).rc:
            return 0  # -EBUSY: try the next unit
        self.plugged[unit] = 0
        return n
