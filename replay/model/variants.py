"""Named model variants: historical kernel bugs and mutations (KERNEL-SEMANTICS §6) as switches.

Each name switches one honest code path in the model (grep for its name); the fuzzer runs a
variant against the reference model to measure how fast it exposes each one.
"""

from __future__ import annotations

VARIANTS = {
    "B1": "memory block linked into its group before registration succeeded: a failed registration leaves a phantom member (group unregister -EBUSY)",
    "B2": "dax/kmem passed bytes as a static group's max_pages (x4096 too large): the ratio check fails, blocks go to the kernel zone",
    "B6": "add_memory_resource error path after an altmap add removed memory without the altmap: the range stays unusable (re-add -EEXIST)",
    "M1": "static-group rule dropped: kernel pages in a static group no longer force the rest of it to the kernel zone",
    "M2": "dynamic-group credit dropped: a virtio-mem device's own kernel memory no longer allows more Movable",
    "M3": "present_pages instead of present_early_pages as kernel memory in the ratio",
    "M4": "off-by-one: movable < limit instead of movable <= limit",
    "M5": "ratio kept as u32 in the group term (no s32 copy)",
    "M6": "NUMA-aware guard checked after adding the dynamic group's kernel pages",
    "M7": "state_store maps device_online's 1 (already online) to success",
    "M8": "zone spans shrink by recomputing the hull from online blocks (interior holes too)",
    "M9": "auto-online continues after a failing block",
    "M10": "memmap_on_memory: +vmemmap pages forgotten after online",
    "C1": "CMA pages counted as kernel memory in the ratio (CONFIG_CMA, profile 7.2): neither added to MOVABLE nor taken off the early kernel pages",
}


NEEDS_PROFILE = {"C1": "7.2"}  # variants of code only that profile has (CONFIG_CMA); the others apply to every profile


def check_variants(names: frozenset[str]) -> frozenset[str]:
    """Validate variant names; ValueError naming the unknown ones."""
    unknown = sorted(n for n in names if n not in VARIANTS)
    if unknown:
        raise ValueError(f"unknown model variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    return names
