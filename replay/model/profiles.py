"""Kernel version profiles: the observable 6.1 / 6.12 / 7.2 differences as data (KERNEL-SEMANTICS §5).

Each profile was checked against Debian's own source and amd64 build configuration of that series
(linux-source-6.1 6.1.192, linux-source-6.12 6.12.117, linux-source-7.2 7.2.13 from the unstable suite,
and the matching linux-config packages). Between 6.12 and 7.2 the zone decisions and the present-page
accounting are unchanged; what an observer sees change is the build configuration (CONFIG_CMA).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from traces.events import OnlineType


@dataclass(frozen=True, slots=True)
class Profile:
    """What differs between the kernel versions the model follows."""

    name: str
    release: str  # the Debian kernel the profile was checked against
    series: tuple[int, int]  # major, minor
    # mm/memory_hotplug.c:mhp_get_default_online_type: auto_online_blocks before memhp_default_state=,
    # from CONFIG_MEMORY_HOTPLUG_DEFAULT_ONLINE (<= 6.13) or CONFIG_MHP_DEFAULT_ONLINE_TYPE_* (6.14+, Debian 6.12.117)
    default_online_kconfig: str
    default_online_type: OnlineType
    memmap_per_block: bool  # 6.6+: every block of a multi-block add hosts its own memmap
    memmap_force_mode: bool  # 6.6+: memmap_on_memory is an int mode with "force"
    acpi_always_requests_memmap: bool  # 6.12: ACPI DIMMs always pass MHP_MEMMAP_ON_MEMORY
    cma: bool  # CONFIG_CMA: zone->cma_pages exists and counts as MOVABLE in the auto-movable statistics


P_6_1 = Profile(
    name="6.1",
    release="6.1.192",
    series=(6, 1),
    default_online_kconfig="CONFIG_MEMORY_HOTPLUG_DEFAULT_ONLINE is not set",
    default_online_type=OnlineType.OFFLINE,
    memmap_per_block=False,
    memmap_force_mode=False,
    acpi_always_requests_memmap=False,
    cma=False,
)
P_6_12 = replace(
    P_6_1,
    name="6.12",
    release="6.12.117",
    series=(6, 12),
    default_online_kconfig="CONFIG_MHP_DEFAULT_ONLINE_TYPE_ONLINE_AUTO=y",
    default_online_type=OnlineType.ONLINE,
    memmap_per_block=True,
    memmap_force_mode=True,
    acpi_always_requests_memmap=True,
)
# 7.2 is 6.12 built with CONFIG_CMA=y (CMA_SIZE_MBYTES=0: CMA areas only with cma= / hugetlb_cma=)
P_7_2 = replace(P_6_12, name="7.2", release="7.2.13", series=(7, 2), cma=True)
PROFILES = {p.name: p for p in (P_6_1, P_6_12, P_7_2)}

# Releases no profile covers exactly: (first series, last series (None: every later one), profile, what differs from it).
NEAREST = (
    ((0, 0), (5, 14), "6.1", "older than the auto-movable online policy (5.15); decisions before it are not modelled"),
    ((5, 15), (5, 17), "6.1", "no mem->zone yet (5.18): offline eligibility and valid_zones of online blocks walk the pages"),
    ((5, 18), (6, 0), "6.1", "close to 6.1; memmap_on_memory also refused with hugetlb vmemmap freeing before 6.1"),
    ((6, 2), (6, 5), "6.1", "6.2 adds -EHWPOISON on online; memmap_on_memory is still one-block only as in 6.1"),
    ((6, 6), (6, 11), "6.12", "per-block memmap_on_memory and 'force' as in 6.12; the Kconfig default for auto_online_blocks is the distribution's choice"),
    ((6, 13), (7, 1), "6.12", "zone decisions as 6.12; a kernel built with CONFIG_CMA (as Debian's 7.2) counts CMA pages as MOVABLE: --profile 7.2"),
    ((7, 3), None, "7.2", "newer than every profile; 7.3 adds a per-device online type for dax/kmem"),
)


@dataclass(frozen=True, slots=True)
class Choice:
    """The profile picked for a kernel release, and why when it is not that release's own."""

    profile: Profile
    reason: str  # empty when the release belongs to the profile's series

    def note(self, release: str) -> str:
        """One line for stderr and reports."""
        return f"kernel {release or '(none)'}: profile {self.profile.name}" + (f" ({self.reason})" if self.reason else "")


def release_series(release: str) -> tuple[int, int] | None:
    """``6.1.0-56-amd64`` -> (6, 1); None when the release names no version."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def choose_profile(release: str) -> Choice:
    """The profile for a kernel release string such as ``6.1.0-56-amd64`` or ``7.2.13+deb14-amd64``."""
    series = release_series(release)
    if series is None:
        what = f"no kernel version in release {release!r}" if release else "the trace names no kernel release"
        return Choice(PROFILES["6.1"], f"{what}: the default profile")
    for p in PROFILES.values():
        if p.series == series:
            return Choice(p, "")
    for first, last, name, why in NEAREST:
        if first <= series and (last is None or series <= last):
            return Choice(PROFILES[name], f"no profile for {series[0]}.{series[1]}; nearest is {name}: {why}")
    raise AssertionError(f"NEAREST does not cover {series}")  # the ranges cover every version


def profile_for_release(release: str) -> Profile:
    """The profile for a kernel release (see choose_profile)."""
    return choose_profile(release).profile


def get_profile(name: str) -> Profile:
    """Look up a profile by name (``6.1``, ``6.12`` or ``7.2``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown kernel profile {name!r}; known: {', '.join(PROFILES)}") from None
