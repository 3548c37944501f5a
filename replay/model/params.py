"""Parsing of hotplug parameter writes with the kernel's rules and errnos (KERNEL-SEMANTICS §1.1)."""

from __future__ import annotations

import errno

from replay.model.machine import Params
from traces.events import ONLINE_TYPE_NAMES, BootParams, OnlineType, Param, Policy

U32_MAX = 2**32 - 1
DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}
POLICY_NAMES = {Policy.CONTIG_ZONES: "contig-zones", Policy.AUTO_MOVABLE: "auto-movable"}


def sysfs_streq(a: str, b: str) -> bool:
    """lib/string.c:sysfs_streq (6.1): equal, ignoring one trailing newline on either side."""
    return a.removesuffix("\n") == b.removesuffix("\n")


def kstrtouint(s: str) -> int:
    """lib/kstrtox.c:kstrtouint with base 0 (6.1); returns the value or -errno."""
    if s.endswith("\n"):
        s = s[:-1]
    if s.startswith("+"):
        s = s[1:]
    if s[:2].lower() == "0x" and len(s) > 2:
        base, digits = 16, s[2:]
    elif s.startswith("0") and len(s) > 1:
        base, digits = 8, s[1:]
    else:
        base, digits = 10, s
    if not digits or any(c not in DIGITS[base] for c in digits):
        return -errno.EINVAL
    value = int(digits, base)
    return value if value <= U32_MAX else -errno.ERANGE


def kstrtobool(s: str) -> int:
    """lib/kstrtox.c:kstrtobool (6.1); returns 1, 0 or -EINVAL."""
    if not s:
        return -errno.EINVAL
    c = s[0]
    if c in "yYtT1":
        return 1
    if c in "nNfF0":
        return 0
    if c in "oO" and len(s) > 1:
        if s[1] in "nN":
            return 1
        if s[1] in "fF":
            return 0
    return -errno.EINVAL


def mhp_online_type_from_str(s: str) -> int:
    """mm/memory_hotplug.c:mhp_online_type_from_str (6.1); the MMOP value or -EINVAL."""
    for value, name in ONLINE_TYPE_NAMES.items():
        if sysfs_streq(s, name):
            return int(value)
    return -errno.EINVAL


def write_param(params: Params, param: Param, value: str) -> int:
    """Store a run-time parameter write like the kernel's setters; 0 or -errno (value unchanged)."""
    if param is Param.ONLINE_POLICY:
        # kernel/params.c + mm/memory_hotplug.c:set_online_policy -> sysfs_match_string (6.1)
        for policy, name in POLICY_NAMES.items():
            if sysfs_streq(value, name):
                params.online_policy = policy
                return 0
        return -errno.EINVAL
    if param is Param.AUTO_MOVABLE_RATIO:
        # kernel/params.c:param_set_uint (6.1)
        v = kstrtouint(value)
        if v < 0:
            return v
        params.auto_movable_ratio = v
        return 0
    if param is Param.AUTO_MOVABLE_NUMA_AWARE:
        # kernel/params.c:param_set_bool (6.1)
        v = kstrtobool(value)
        if v < 0:
            return v
        params.auto_movable_numa_aware = bool(v)
        return 0
    # drivers/base/memory.c:auto_online_blocks_store (6.1)
    v = mhp_online_type_from_str(value)
    if v < 0:
        return v
    params.auto_online_blocks = OnlineType(v)
    return 0


PARAM_NAMES = {
    "online_policy": Param.ONLINE_POLICY,
    "auto_movable_ratio": Param.AUTO_MOVABLE_RATIO,
    "auto_movable_numa_aware": Param.AUTO_MOVABLE_NUMA_AWARE,
    "auto_online_blocks": Param.AUTO_ONLINE_BLOCKS,
}


def params_text(params: Params) -> str:
    """A trace header's ``params``: every run-time parameter as its sysfs file reads."""
    return " ".join(f"{name}={read_param(params, param)}" for name, param in PARAM_NAMES.items())


def read_param(params: Params, param: Param) -> str:
    """What reading the parameter's sysfs file prints (without the newline)."""
    if param is Param.ONLINE_POLICY:
        return POLICY_NAMES[params.online_policy]
    if param is Param.AUTO_MOVABLE_RATIO:
        return str(params.auto_movable_ratio)
    if param is Param.AUTO_MOVABLE_NUMA_AWARE:
        return "Y" if params.auto_movable_numa_aware else "N"
    return ONLINE_TYPE_NAMES[params.auto_online_blocks]


def module_params(params: Params) -> dict[str, str]:
    """/sys/module/memory_hotplug/parameters/* as read (without the newline): the run-time parameters
    and memmap_on_memory (6.1 bool: Y/N; 6.6+ get_memmap_mode: force, Y or N)."""
    out = {name: read_param(params, param) for name, param in PARAM_NAMES.items() if param is not Param.AUTO_ONLINE_BLOCKS}
    out["memmap_on_memory"] = "force" if params.memmap_on_memory == 2 else "Y" if params.memmap_on_memory else "N"
    return out


def boot_params_from_cmdline(cmdline: str, default_online_type: OnlineType, force_mode: bool) -> BootParams:
    """The parameters a kernel command line yields; invalid values are ignored as at boot (6.1/6.12)."""
    p = Params(auto_online_blocks=default_online_type)
    for word in cmdline.split():
        name, _, value = word.partition("=")
        if name == "memhp_default_state":  # mm/memory_hotplug.c:setup_memhp_default_state
            t = mhp_online_type_from_str(value)
            if t >= 0:
                p.auto_online_blocks = OnlineType(t)
        elif name == "movable_node":
            p.movable_node = True
        elif name == "memory_hotplug.memmap_on_memory":
            if force_mode and value.lower() == "force":
                p.memmap_on_memory = 2
            elif (v := kstrtobool(value)) >= 0:
                p.memmap_on_memory = v
        elif name.startswith("memory_hotplug."):
            param = CMDLINE_PARAMS.get(name.removeprefix("memory_hotplug."))
            if param is not None:
                write_param(p, param, value)
    return BootParams(p.online_policy, p.auto_movable_ratio, p.auto_movable_numa_aware, p.auto_online_blocks, p.memmap_on_memory, p.movable_node)


CMDLINE_PARAMS = {
    "online_policy": Param.ONLINE_POLICY,
    "auto_movable_ratio": Param.AUTO_MOVABLE_RATIO,
    "auto_movable_numa_aware": Param.AUTO_MOVABLE_NUMA_AWARE,
}
