"""The model's incremental sums equal the kernel's literal walks over zones and dynamic groups."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from replay.model.kernel import Kernel
from replay.model.machine import Machine, MemoryGroup
from replay.model.memory_hotplug import auto_movable_can_online_movable, update_dynamic_group_term
from replay.model.profiles import get_profile
from replay.model.u64 import MASK
from tests.helpers import AUTO_MOVABLE, BLOCK, BP, boot_preset
from traces.events import AddFlags, AddMemory, Attr, GroupRegister, OfflineBlock, OnlineBlock, OnlineType, Param, ParamWrite, Source, ZoneType


def walk_dynamic_groups(m: Machine, nid: int, group: MemoryGroup | None) -> tuple[int, int]:
    """The kernel's literal walk over dynamic groups (auto_movable_stats_account_group), for comparison."""
    ratio = m.params.auto_movable_ratio
    r = ratio - (1 << 32) if ratio >= 1 << 31 else ratio
    req = gmov = 0
    for g in sorted(m.groups.values(), key=lambda g: g.mgid):
        if not g.is_dynamic or g is group or (nid != -1 and g.nid != nid) or r == 0:
            continue
        pages = ((g.present_movable_pages * 100) & MASK) // (r & MASK)
        pages = (pages - g.present_kernel_pages) & MASK
        if 0 < pages < 1 << 63:
            req = (req + pages) & MASK
        gmov = (gmov + g.present_movable_pages) & MASK
    return req, gmov


counters = st.integers(0, 2**64 - 1) | st.integers(0, 10**7)


@settings(max_examples=300, deadline=None)
@given(
    groups=st.lists(st.tuples(st.integers(0, 1), counters, counters), min_size=1, max_size=8),
    ratio=st.sampled_from([0, 1, 99, 100, 300, 301, 2**31 - 1, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1),
    pick=st.integers(0, 7),
)
def test_cached_group_sums_equal_the_kernel_walk(groups: list, ratio: int, pick: int) -> None:
    """The model's incremental dynamic-group sums give exactly the kernel walk's req and gmov."""
    m = Machine(get_profile("6.1"), possible_nodes=frozenset({0, 1}))
    m.params.auto_movable_ratio = ratio
    for i, (nid, kern, mov) in enumerate(groups):
        g = m.groups[i] = MemoryGroup(i, nid, True, BP)
        update_dynamic_group_term(m, g)
        g.present_kernel_pages, g.present_movable_pages = kern, mov
        update_dynamic_group_term(m, g)
    for n in (0, 1):
        m.node(n).online = True
    own = m.groups.get(pick)
    for nid in (-1, 0, 1):
        trace: list = []
        auto_movable_can_online_movable(m, nid, own, BP, trace)
        expected = walk_dynamic_groups(m, nid, own)
        assert (trace[0].req, trace[0].gmov) == expected


def walk_zones(m: Machine, nid: int) -> tuple[int, int]:
    """The kernel's literal zone walk of auto_movable_can_online_movable: (movable, kernel_early)."""
    movable = kernel = 0
    for node in m.nodes.values():
        if (nid == -1 and not node.online) or (nid != -1 and node.nid != nid):
            continue
        for z in node.zones:
            if not z.present_pages:
                continue
            if z.idx is ZoneType.MOVABLE:
                movable += z.present_pages
            else:
                kernel += z.present_early_pages - z.cma_pages
                movable += z.cma_pages
    return movable & MASK, kernel & MASK


def test_sums_follow_random_hotplug_on_two_nodes() -> None:
    rng = random.Random(7)
    k: Kernel = boot_preset("qemu-q35-4G-2node", AUTO_MOVABLE)
    groups = [k.apply(GroupRegister(rng.random() < 0.5, n, BP)).rc for n in (0, 1, 0, 1)]
    blocks = list(range(48, 112))
    for b in blocks:
        k.apply(AddMemory(b * BLOCK, BLOCK, groups[b % 4], AddFlags.NID_IS_MGID))
    for _ in range(3000):
        b = rng.choice([*blocks, 1, 2, 40, 41])
        r = rng.random()
        if r < 0.45:
            k.apply(OfflineBlock(b, Attr.STATE, Source.USER))
        elif r < 0.9:
            k.apply(OnlineBlock(b, rng.choice(list(OnlineType)[1:]), Attr.STATE, Source.USER))
        else:
            k.apply(ParamWrite(Param.AUTO_MOVABLE_RATIO, str(rng.choice([0, 50, 301, 2**31 + 5]))))
        for nid in (-1, 0, 1):
            assert tuple(k.m.zone_sums.get(nid, (0, 0))) == walk_zones(k.m, nid)
            trace: list = []
            own = k.m.groups[groups[b % 4]]
            auto_movable_can_online_movable(k.m, nid, own, BP, trace)
            assert (trace[0].req, trace[0].gmov) == walk_dynamic_groups(k.m, nid, own)
