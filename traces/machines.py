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


def _zone(node: int, zone: ZoneType, start: int, spanned: int, present: int) -> BootZone:
    return BootZone(node, zone, start if spanned else 0, spanned, present, present, 0)


def _blocks(first: int, count: int, node: int, zone: ZoneType, present: int = BLOCK_PAGES) -> BootBlocks:
    return BootBlocks(first, count, node, BlockState.ONLINE, zone, True, -1, 0, present)


# Low memory on q35 with 4 GiB: block 0 spans DMA (3998 pages) and DMA32 (28672 pages),
# blocks 1-14 are full DMA32 blocks, block 15 misses the 33 pages reserved at 0x7ffdf000.
# DMA32 spans up to 4 GiB (the PCI hole included) unless its node ends earlier: with two nodes,
# node 0 ends at pfn 0x7ffdf (seen on Debian 6.1 and 6.12 under QEMU).
def _low_memory(node: int, dma32_end: int = 4 * GIB_PAGES) -> tuple[Event, ...]:
    return (
        _zone(node, ZoneType.DMA, 1, 4095, 3998),
        _zone(node, ZoneType.DMA32, 4096, dma32_end - 4096, 520159),
        _blocks(0, 1, node, ZoneType.NONE, 3998 + 28672),
        _blocks(1, 14, node, ZoneType.DMA32),
        _blocks(15, 1, node, ZoneType.DMA32, BLOCK_PAGES - 33),
    )


def _high_memory(node: int) -> tuple[Event, ...]:
    return (_zone(node, ZoneType.NORMAL, 4 * GIB_PAGES, 2 * GIB_PAGES, 2 * GIB_PAGES), _blocks(32, 16, node, ZoneType.NORMAL))


def _empty_zones(node: int, zones: tuple[ZoneType, ...]) -> tuple[Event, ...]:
    return tuple(_zone(node, z, 0, 0, 0) for z in zones)


Q35 = ("-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "4G,slots=32,maxmem=256G")
ALL = (ZoneType.DMA, ZoneType.DMA32, ZoneType.NORMAL, ZoneType.MOVABLE)


def _numa(*node_mem: str) -> tuple[str, ...]:
    """QEMU options for one CPU per node and the given RAM per node ('' = memoryless)."""
    args: list[str] = [*Q35, "-smp", str(len(node_mem))]
    for n, size in enumerate(node_mem):
        if size:
            args += ["-object", f"memory-backend-ram,id=n{n},size={size}"]
        args += ["-numa", f"node,nodeid={n},cpus={n}" + (f",memdev=n{n}" if size else "")]
    return tuple(args)


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
    )
}
