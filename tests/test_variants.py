"""Every seeded variant (KERNEL-SEMANTICS §6) differs from the reference on its minimal sequence."""

from __future__ import annotations

import errno

import pytest

from replay.differential import diff_events
from replay.model.kernel import Kernel
from replay.model.params import boot_params_from_cmdline
from replay.model.profiles import get_profile
from replay.model.variants import NEEDS_PROFILE, VARIANTS
from tests.helpers import AUTO_MOVABLE, BLOCK, BP, GIB, ideal_events
from traces.events import AddFlags, AddMemory, Attr, BootZone, GroupRegister, GroupUnregister, InjectFailure, OfflineBlock, OnlineBlock, OnlineType, Op, Source
from traces.machines import PRESETS

OFF = AUTO_MOVABLE.replace("memhp_default_state=online", "memhp_default_state=offline")
VMEM = AddFlags.NID_IS_MGID | AddFlags.DRIVER_MANAGED


def boot(events: list, cmdline: str) -> list:
    p = get_profile("6.1")
    return [*events, boot_params_from_cmdline(cmdline, p.default_online_type, False)]


def q35(cmdline: str = AUTO_MOVABLE) -> list:
    return boot(list(PRESETS["qemu-q35-4G"].events), cmdline)


def dimms(n: int, first: int = 48, size: int = 4 * GIB) -> list:
    out: list = []
    for d in range(n):
        out += [GroupRegister(False, 0, size // 4096), AddMemory((first + d * (size // BLOCK)) * BLOCK, size, d, AddFlags.NID_IS_MGID)]
    return out


def online(blocks: range, t: OnlineType = OnlineType.ONLINE) -> list:
    return [OnlineBlock(b, t, Attr.STATE, Source.USER) for b in blocks]


SEQUENCES = {
    "B1": [*q35(), GroupRegister(True, 0, BP), InjectFailure(49, Op.REGISTER, errno.ENOMEM), AddMemory(48 * BLOCK, 2 * BLOCK, 0, VMEM), GroupUnregister(0)],
    "B2": [*q35(), *dimms(1, size=GIB)],
    "B6": [
        *q35(AUTO_MOVABLE + " memory_hotplug.memmap_on_memory=1"),
        InjectFailure(48, Op.REGISTER, errno.ENOMEM),
        AddMemory(48 * BLOCK, BLOCK, 0, AddFlags.MEMMAP_ON_MEMORY),
        AddMemory(48 * BLOCK, BLOCK, 0, AddFlags.MEMMAP_ON_MEMORY),
    ],
    "M1": [*boot(ideal_events(), OFF.replace("=301", "=1000")), *dimms(1, size=GIB), *online(range(48, 49), OnlineType.ONLINE_KERNEL), *online(range(49, 56))],
    "M2": [*boot(ideal_events(), AUTO_MOVABLE), GroupRegister(True, 0, BP), *(AddMemory(b * BLOCK, BLOCK, 0, VMEM) for b in range(48, 150))],
    "M3": [*boot(ideal_events(), AUTO_MOVABLE), *dimms(5)],
    "M4": [*boot(ideal_events(), AUTO_MOVABLE.replace("=301", "=300")), *dimms(3)],
    "M5": [
        *q35(AUTO_MOVABLE.replace("=301", f"={2**31 + 1}")),
        GroupRegister(True, 0, BP),
        AddMemory(64 * GIB, 100 * GIB, 0, VMEM),
        GroupRegister(True, 0, BP),
        AddMemory(48 * BLOCK, BLOCK, 1, VMEM),
    ],
    "M6": [
        *boot(list(PRESETS["qemu-q35-4G-memless1"].events), AUTO_MOVABLE),
        GroupRegister(True, 1, BP),
        *(AddMemory(b * BLOCK, BLOCK, 0, VMEM) for b in range(48, 52)),
    ],
    "M7": [*q35(), OnlineBlock(40, OnlineType.ONLINE, Attr.STATE, Source.USER)],
    "M8": [*q35(OFF), OfflineBlock(1, Attr.STATE, Source.USER), OnlineBlock(1, OnlineType.ONLINE_KERNEL, Attr.STATE, Source.USER)],
    "M9": [*q35(), InjectFailure(50, Op.ONLINE, errno.ENOMEM), *dimms(1, size=4 * BLOCK)],
    "M10": [*q35(AUTO_MOVABLE + " memory_hotplug.memmap_on_memory=1"), AddMemory(48 * BLOCK, BLOCK, 0, AddFlags.MEMMAP_ON_MEMORY)],
    "C1": [*(e._replace(cma=GIB // 4096) if type(e) is BootZone and e.zone.label == "DMA32" else e for e in q35()), *dimms(3)],  # 1 GiB CMA
}

EXPECTED_ASPECT = {"B1": "rc", "B2": "decision", "B6": "rc", "M1": "decision", "M2": "decision", "M3": "decision", "M4": "decision", "M5": "numbers",
                   "M6": "decision", "M7": "rc", "M8": "decision", "M9": "decision", "M10": "present", "C1": "numbers"}  # fmt: skip


def test_every_variant_has_a_sequence() -> None:
    assert set(SEQUENCES) == set(VARIANTS) == set(EXPECTED_ASPECT)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_differs_from_the_reference(name: str) -> None:
    p = get_profile(NEEDS_PROFILE.get(name, "6.1"))
    diffs = diff_events(SEQUENCES[name], Kernel(p), Kernel(p, variants=frozenset({name})))
    assert diffs, f"{name} behaves like the reference on its sequence"
    assert diffs[0].what == EXPECTED_ASPECT[name], diffs[0]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_reference_equals_itself(name: str) -> None:
    p = get_profile(NEEDS_PROFILE.get(name, "6.1"))
    assert diff_events(SEQUENCES[name], Kernel(p), Kernel(p)) == []


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model variant"):
        Kernel(get_profile("6.1"), variants=frozenset({"M99"}))
