"""Shared test helpers: booting the model on presets and on idealised machines."""

from __future__ import annotations

import os
from typing import Any

import pytest

from replay.model.kernel import Kernel
from replay.model.outcome import Outcome
from replay.model.params import boot_params_from_cmdline
from replay.model.profiles import get_profile
from traces.events import (
    AddFlags,
    AddMemory,
    BlockState,
    BootBlocks,
    BootMachine,
    BootZone,
    Event,
    GroupRegister,
    ZoneType,
)
from traces.machines import PRESETS

BLOCK = 128 << 20
BP = 32768  # pages per 128 MiB block
GIB = 1 << 30
AUTO_MOVABLE = "memhp_default_state=online memory_hotplug.online_policy=auto-movable memory_hotplug.auto_movable_ratio=301"
OFFLINE_AUTO = AUTO_MOVABLE.replace("memhp_default_state=online", "memhp_default_state=offline")  # blocks stay offline after add


def boot(events: tuple[Event, ...] | list[Event], cmdline: str = AUTO_MOVABLE, profile: str = "6.1", variants: frozenset[str] = frozenset()) -> Kernel:
    """A kernel (with model ``variants``) booted from snapshot events and a command line."""
    p = get_profile(profile)
    k = Kernel(p, variants=variants)
    for ev in events:
        k.apply(ev)
    k.apply(boot_params_from_cmdline(cmdline, p.default_online_type, p.memmap_force_mode))
    return k


def boot_preset(name: str = "qemu-q35-4G", cmdline: str = AUTO_MOVABLE, profile: str = "6.1", variants: frozenset[str] = frozenset()) -> Kernel:
    return boot(PRESETS[name].events, cmdline, profile, variants)


def ideal_events(kernel_early: int = 32 * BP) -> list[Event]:
    """KERNEL-SEMANTICS §7's idealised VM: no holes, K early kernel pages (DMA32 takes the difference)."""
    dma32 = kernel_early - 4096 - 16 * BP
    return [
        BootMachine(BLOCK, 1, 1),
        BootZone(0, ZoneType.DMA, 0, 4096, 4096, 4096, 0),
        BootZone(0, ZoneType.DMA32, 4096, 16 * BP - 4096, dma32, dma32, 0),
        BootZone(0, ZoneType.NORMAL, 32 * BP, 16 * BP, 16 * BP, 16 * BP, 0),
        BootZone(0, ZoneType.MOVABLE, 0, 0, 0, 0, 0),
        BootBlocks(0, 1, 0, BlockState.ONLINE, ZoneType.NONE, True, -1, 0, BP),
        BootBlocks(1, 15, 0, BlockState.ONLINE, ZoneType.DMA32, True, -1, 0, BP),
        BootBlocks(32, 16, 0, BlockState.ONLINE, ZoneType.NORMAL, True, -1, 0, BP),
    ]


def plug_dimm(k: Kernel, first_block: int, size: int = 4 * GIB, node: int = 0) -> tuple[int, Outcome]:
    """ACPI-style DIMM plug: static group + one add; returns (mgid, add outcome)."""
    mgid = k.apply(GroupRegister(False, node, size // 4096)).rc
    return mgid, k.apply(AddMemory(first_block * BLOCK, size, mgid, AddFlags.NID_IS_MGID))


def zones_of(k: Kernel) -> dict[tuple[int, str], int]:
    return {(z.nid, z.idx.label): z.present_pages for n in k.m.nodes.values() for z in n.zones}


def block_zone(k: Kernel, b: int) -> str:
    mem = k.m.blocks[b]
    if mem.state is not BlockState.ONLINE:
        return mem.state.name.lower()
    return mem.zone.idx.label if mem.zone else "none"


def try_online_node() -> int:
    """Where CrashingKernel crashes (its name is the crash signature's frame)."""
    return 1 // 0


class CrashingKernel:
    """A Kernel that crashes (ZeroDivisionError in try_online_node) on every add_memory: tests swap it in for the Kernel
    a fuzz module uses, never into the model itself (the model may be compiled, and compiled code calls its functions
    directly)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.k = Kernel(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.k, name)

    def apply(self, ev: Any) -> Any:
        return try_online_node() if isinstance(ev, AddMemory) else self.k.apply(ev)


def unavailable(reason: str) -> None:
    """Skip a test whose machine lacks something (``reason``); under CI (CI=true) that is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"not available under CI: {reason}")
    pytest.skip(reason)


def require_lab(kernel: str) -> None:
    """Skip a test that boots ``kernel`` in the lab when the lab cannot (a failure under CI)."""
    from traces.lab.setup import lab_ready

    reason = lab_ready(kernel)
    if reason:
        unavailable(f"lab not available: {reason}")
