"""Machine presets: the boot layout of QEMU guests as real kernels report it, and their QEMU options.

Numbers come from Debian kernels booted under QEMU (corpus/observed, LAB-NOTES): q35 with 4 GiB
puts 2 GiB below 4 GiB (blocks 0-15) and 2 GiB above (blocks 32-47); DMA has 3998 present pages
(pfn 1-4095 less the BIOS area 159-255), DMA32 520159 (less the 33 reserved pages at the top
of low memory, inside block 15), Normal 524288.
"""

from __future__ import annotations

from dataclasses import dataclass

from traces.events import BlockState, BootBlocks, BootMachine, BootZone, Event, ZoneType

BLOCK = 128 << 20
BLOCK_PAGES = BLOCK // 4096
GIB_PAGES = (1 << 30) // 4096


@dataclass(frozen=True, slots=True)
class MachinePreset:
    """A named machine: its boot snapshot events and the QEMU options that make it."""

    name: str
    description: str
    events: tuple[Event, ...]
    qemu_args: tuple[str, ...]
    mem: str
    device_memory_base: int  # bytes: where QEMU places hot-pluggable memory devices

    @property
    def block_size(self) -> int:
        return next(e.block_size for e in self.events if isinstance(e, BootMachine))

    @property
    def hotplug_room(self) -> int:
        """Bytes of memory devices QEMU can hold at once: MAXMEM less the boot RAM (``mem``, whole GiB)."""
        return MAXMEM - (int(self.mem.removesuffix("G")) << 30)

    @property
    def device_memory_end(self) -> int:
        """Where QEMU's device memory region ends: it holds ``hotplug_room`` and 1 GiB of alignment per DIMM slot."""
        return self.device_memory_base + self.hotplug_room + (DIMM_SLOTS << 30)


def _zone(node: int, zone: ZoneType, start: int, spanned: int, present: int) -> BootZone:
    return BootZone(node, zone, start if spanned else 0, spanned, present, present, 0)


def _blocks(first: int, count: int, node: int, zone: ZoneType, present: int = BLOCK_PAGES) -> BootBlocks:
    return BootBlocks(first, count, node, BlockState.ONLINE, zone, True, -1, 0, present)


# Low memory on q35 with 4 GiB: block 0 spans DMA (3998 pages) and DMA32 (28672 pages),
# blocks 1-14 are full DMA32 blocks, block 15 misses the 33 pages reserved at 0x7ffdf000.
# DMA32 spans up to 4 GiB (the PCI hole included) unless its node ends earlier: with two nodes,
# node 0 ends at pfn 0x7ffdf (seen on Debian 6.1 and 6.12 under QEMU). ``low_gib`` is the RAM
# below 4 GiB (q35: 2 GiB once the guest has 2.75 GiB or more; pc: 3 GiB from 3.5 GiB on); ``reserved`` the pages
# the firmware keeps at its top (q35: 33, pc: 32, at 0xbffe0000).
def _low_memory(node: int, dma32_end: int = 4 * GIB_PAGES, low_gib: int = 2, block_pages: int = BLOCK_PAGES, reserved: int = 33) -> tuple[Event, ...]:
    low_pages = low_gib * GIB_PAGES - reserved
    if block_pages > BLOCK_PAGES:  # one block holds all low memory
        blocks: tuple[Event, ...] = (_blocks(0, 1, node, ZoneType.NONE, 3998 + low_pages - 4096),)
    else:
        last = low_gib * GIB_PAGES // BLOCK_PAGES - 1
        blocks = (
            _blocks(0, 1, node, ZoneType.NONE, 3998 + BLOCK_PAGES - 4096),
            _blocks(1, last - 1, node, ZoneType.DMA32),
            _blocks(last, 1, node, ZoneType.DMA32, BLOCK_PAGES - reserved),
        )
    return (_zone(node, ZoneType.DMA, 1, 4095, 3998), _zone(node, ZoneType.DMA32, 4096, dma32_end - 4096, low_pages - 4096), *blocks)


def _high_memory(node: int, gib: int = 2, block_pages: int = BLOCK_PAGES) -> tuple[Event, ...]:
    """Normal memory from 4 GiB: ``gib`` GiB in full blocks."""
    first = 4 * GIB_PAGES // block_pages
    pages = gib * GIB_PAGES
    return (_zone(node, ZoneType.NORMAL, 4 * GIB_PAGES, pages, pages), _blocks(first, pages // block_pages, node, ZoneType.NORMAL, block_pages))


def _empty_zones(node: int, zones: tuple[ZoneType, ...]) -> tuple[Event, ...]:
    return tuple(_zone(node, z, 0, 0, 0) for z in zones)


MAXMEM = 256 << 30  # every preset's QEMU maxmem: boot RAM and plugged memory devices together
DIMM_SLOTS = 32
Q35 = ("-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", f"4G,slots={DIMM_SLOTS},maxmem={MAXMEM >> 30}G")
ALL = (ZoneType.DMA, ZoneType.DMA32, ZoneType.NORMAL, ZoneType.MOVABLE)


def _numa(*node_mem: str, cpu_nodes: tuple[int, ...] | None = None) -> tuple[str, ...]:
    """QEMU options for the given RAM per node ('' = memoryless) and one CPU on each of ``cpu_nodes`` (default: every node)."""
    cpus = tuple(range(len(node_mem))) if cpu_nodes is None else cpu_nodes
    args: list[str] = [*Q35, "-smp", str(len(cpus))]
    for n, size in enumerate(node_mem):
        if size:
            args += ["-object", f"memory-backend-ram,id=n{n},size={size}"]
        cpu = f",cpus={cpus.index(n)}" if n in cpus else ""
        args += ["-numa", f"node,nodeid={n}{cpu}" + (f",memdev=n{n}" if size else "")]
    return tuple(args)


def _one_node(name: str, description: str, memory: tuple[Event, ...], qemu: tuple[str, ...], mem: str, base: int, block: int = BLOCK) -> MachinePreset:
    """A single-node preset with one CPU; zones without memory are listed empty."""
    present = {e.zone for e in memory if isinstance(e, BootZone)}
    empty = _empty_zones(0, tuple(z for z in ALL if z not in present))
    return MachinePreset(name, description, (BootMachine(block, 1, 1), *memory, *empty), (*qemu, "-smp", "1"), mem, base)


def _machine(machine: str, mem: str, lazy: bool = False) -> tuple[str, ...]:
    """QEMU options of a one-node machine; ``lazy``: guest RAM from a backend with reserve=off (no swap reservation), needed
    when ``mem`` exceeds what the host may commit (QEMU's plain ``-m 64G`` fails with "cannot set up guest memory 'pc.ram'")."""
    ram = ("-machine", f"{machine},memory-backend=ram0", "-object", f"memory-backend-ram,id=ram0,size={mem},reserve=off") if lazy else ("-machine", machine)
    return (*ram, "-accel", "tcg", "-cpu", "max", "-m", f"{mem},slots={DIMM_SLOTS},maxmem={MAXMEM >> 30}G")


PRESETS = {
    p.name: p
    for p in (
        MachinePreset(
            "qemu-q35-4G",
            "QEMU q35, 4 GiB, one node: blocks 0-15 (DMA, DMA32) and 32-47 (Normal)",
            (BootMachine(BLOCK, 1, 1), *_low_memory(0), *_high_memory(0), *_empty_zones(0, (ZoneType.MOVABLE,))),
            (*Q35, "-smp", "1"),
            "4G",
            6 << 30,
        ),
        MachinePreset(
            "qemu-q35-4G-2node",
            "QEMU q35, 4 GiB in two nodes: node 0 blocks 0-15 (DMA, DMA32), node 1 blocks 32-47 (Normal)",
            (
                BootMachine(BLOCK, 0b11, 0b11),
                *_low_memory(0, dma32_end=0x7FFDF),
                *_empty_zones(0, (ZoneType.NORMAL, ZoneType.MOVABLE)),
                *_empty_zones(1, (ZoneType.DMA, ZoneType.DMA32)),
                *_high_memory(1),
                *_empty_zones(1, (ZoneType.MOVABLE,)),
            ),
            _numa("2G", "2G"),
            "4G",
            6 << 30,
        ),
        MachinePreset(
            "qemu-q35-4G-memless1",
            "QEMU q35, 4 GiB on node 0 and a memoryless node 1 (CPU only)",
            (
                BootMachine(BLOCK, 0b11, 0b11),
                *_low_memory(0),
                *_high_memory(0),
                *_empty_zones(0, (ZoneType.MOVABLE,)),
                *_empty_zones(1, ALL),
            ),
            _numa("4G", ""),
            "4G",
            6 << 30,
        ),
        MachinePreset(
            "qemu-q35-4G-cpuless1",
            "QEMU q35, 4 GiB in two nodes, the CPU on node 0: node 1 (blocks 32-47, Normal) has memory but no CPU",
            (
                BootMachine(BLOCK, 0b11, 0b01),
                *_low_memory(0, dma32_end=0x7FFDF),
                *_empty_zones(0, (ZoneType.NORMAL, ZoneType.MOVABLE)),
                *_empty_zones(1, (ZoneType.DMA, ZoneType.DMA32)),
                *_high_memory(1),
                *_empty_zones(1, (ZoneType.MOVABLE,)),
            ),
            _numa("2G", "2G", cpu_nodes=(0,)),
            "4G",
            6 << 30,
        ),
        _one_node(
            "qemu-q35-2G",
            "QEMU q35, 2 GiB, one node, all below 4 GiB: blocks 0-15 (DMA, DMA32), no Normal zone",
            _low_memory(0, dma32_end=0x7FFDF),
            _machine("q35", "2G"),
            "2G",
            4 << 30,
        ),
        _one_node(
            "qemu-q35-8G",
            "QEMU q35, 8 GiB, one node: blocks 0-15 (DMA, DMA32) and 32-79 (Normal)",
            (*_low_memory(0), *_high_memory(0, 6)),
            _machine("q35", "8G"),
            "8G",
            10 << 30,
        ),
        _one_node(
            "qemu-q35-16G",
            "QEMU q35, 16 GiB, one node: blocks 0-15 (DMA, DMA32) and 32-143 (Normal)",
            (*_low_memory(0), *_high_memory(0, 14)),
            _machine("q35", "16G"),
            "16G",
            18 << 30,
        ),
        _one_node(
            "qemu-pc-4G",
            "QEMU pc (i440FX), 4 GiB, one node: 3 GiB low, blocks 0-23 (DMA, DMA32; 32 pages reserved at the top), and blocks 32-39 (Normal)",
            (*_low_memory(0, low_gib=3, reserved=32), *_high_memory(0, 1)),
            _machine("pc", "4G"),
            "4G",
            5 << 30,
        ),
        _one_node(
            "qemu-q35-64G",
            "QEMU q35, 64 GiB, one node: memory ends at 66 GiB, so the kernel picks 2 GiB memory blocks: block 0 (DMA, DMA32), blocks 2-32 (Normal)",
            (*_low_memory(0, block_pages=BLOCK_PAGES * 16), *_high_memory(0, 62, block_pages=BLOCK_PAGES * 16)),
            _machine("q35", "64G", lazy=True),
            "64G",
            66 << 30,
            block=BLOCK * 16,
        ),
    )
}
