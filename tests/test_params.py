"""Parameter parsing with the kernel's rules and errnos (KERNEL-SEMANTICS §1.1)."""

from __future__ import annotations

import errno

import pytest

from replay.model.machine import Params
from replay.model.params import boot_params_from_cmdline, kstrtobool, kstrtouint, read_param, write_param
from traces.events import OnlineType, Param, Policy


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("301", 301),
        ("301\n", 301),
        ("+7", 7),
        ("0x1F", 31),
        ("0X10", 16),
        ("010", 8),
        ("0", 0),
        ("4294967295", 2**32 - 1),
        ("4294967296", -errno.ERANGE),
        ("99999999999999999999999", -errno.ERANGE),
        ("-1", -errno.EINVAL),
        ("", -errno.EINVAL),
        ("+", -errno.EINVAL),
        ("08", -errno.EINVAL),
        ("0x", -errno.EINVAL),
        ("12 ", -errno.EINVAL),
        ("12\n\n", -errno.EINVAL),
        ("1e3", -errno.EINVAL),
    ],
)
def test_kstrtouint(text: str, value: int) -> None:
    assert kstrtouint(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("y", 1),
        ("Yes", 1),
        ("t", 1),
        ("1", 1),
        ("on", 1),
        ("ON", 1),
        ("n", 0),
        ("F", 0),
        ("0", 0),
        ("off", 0),
        ("o", -errno.EINVAL),
        ("x", -errno.EINVAL),
        ("", -errno.EINVAL),
    ],
)
def test_kstrtobool(text: str, value: int) -> None:
    assert kstrtobool(text) == value


def test_parameter_writes_and_reads() -> None:
    p = Params()
    assert write_param(p, Param.ONLINE_POLICY, "auto-movable\n") == 0 and p.online_policy is Policy.AUTO_MOVABLE
    assert write_param(p, Param.ONLINE_POLICY, "auto-movable ") == -errno.EINVAL
    assert write_param(p, Param.ONLINE_POLICY, "Auto-movable") == -errno.EINVAL
    assert read_param(p, Param.ONLINE_POLICY) == "auto-movable"
    assert write_param(p, Param.AUTO_MOVABLE_RATIO, "-5") == -errno.EINVAL and p.auto_movable_ratio == 301
    assert write_param(p, Param.AUTO_MOVABLE_NUMA_AWARE, "off") == 0 and read_param(p, Param.AUTO_MOVABLE_NUMA_AWARE) == "N"
    assert write_param(p, Param.AUTO_ONLINE_BLOCKS, "online_movable\n") == 0 and p.auto_online_blocks is OnlineType.ONLINE_MOVABLE
    assert write_param(p, Param.AUTO_ONLINE_BLOCKS, "movable") == -errno.EINVAL
    assert read_param(p, Param.AUTO_ONLINE_BLOCKS) == "online_movable"
    assert read_param(p, Param.AUTO_MOVABLE_RATIO) == "301"


def test_command_line_ignores_invalid_values() -> None:
    bp = boot_params_from_cmdline(
        "memhp_default_state=bogus memory_hotplug.auto_movable_ratio=-1 memory_hotplug.online_policy=auto-movable movable_node "
        "memory_hotplug.memmap_on_memory=force",
        OnlineType.OFFLINE,
        force_mode=False,
    )
    assert (bp.auto_online_blocks, bp.auto_movable_ratio, bp.online_policy, bp.movable_node, bp.memmap_on_memory) == (
        OnlineType.OFFLINE,
        301,
        Policy.AUTO_MOVABLE,
        True,
        0,
    )
    assert boot_params_from_cmdline("memory_hotplug.memmap_on_memory=force", OnlineType.ONLINE, force_mode=True).memmap_on_memory == 2
    assert boot_params_from_cmdline("", OnlineType.ONLINE, force_mode=True).auto_online_blocks is OnlineType.ONLINE
