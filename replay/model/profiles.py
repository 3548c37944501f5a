"""Kernel version profiles: the observable 6.1 / 6.12 differences as data (KERNEL-SEMANTICS §5)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from traces.events import OnlineType


@dataclass(frozen=True, slots=True)
class Profile:
    """What differs between the kernel versions the model follows."""

    name: str
    release: str  # the Debian kernel the profile was checked against
    default_online_type: OnlineType  # Debian's Kconfig default for auto_online_blocks
    memmap_per_block: bool  # 6.6+: every block of a multi-block add hosts its own memmap
    memmap_force_mode: bool  # 6.6+: memmap_on_memory is an int mode with "force"
    acpi_always_requests_memmap: bool  # 6.12: ACPI DIMMs always pass MHP_MEMMAP_ON_MEMORY


PROFILES = {
    "6.1": Profile(
        name="6.1",
        release="6.1.192",
        default_online_type=OnlineType.OFFLINE,
        memmap_per_block=False,
        memmap_force_mode=False,
        acpi_always_requests_memmap=False,
    ),
    "6.12": Profile(
        name="6.12",
        release="6.12.117",
        default_online_type=OnlineType.ONLINE,
        memmap_per_block=True,
        memmap_force_mode=True,
        acpi_always_requests_memmap=True,
    ),
}


def profile_for_release(release: str) -> Profile:
    """The profile for a kernel release string such as ``6.1.0-56-amd64`` or ``6.12.100``."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise ValueError(f"cannot read a kernel version from release {release!r}")
    version = (int(m.group(1)), int(m.group(2)))
    return PROFILES["6.12"] if version >= (6, 6) else PROFILES["6.1"]


def get_profile(name: str) -> Profile:
    """Look up a profile by name (``6.1`` or ``6.12``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown kernel profile {name!r}; known: {', '.join(PROFILES)}") from None
