#!/usr/bin/env python3
"""Benchmark of the model alone: online/offline decisions per second (not a test; prints figures).

A q35 machine gets 64 dynamic groups (virtio-mem-like) holding 1k or 64k memory blocks in all;
then random blocks are offlined and re-onlined through memoryN/state under auto-movable: every
request (offline, or online with its zone decision) counts, with the model alone and with all
oracles on. The decision function alone (zone_for_pfn_range) is measured too. Targets (issue 2):
>= 200k decisions/s, and the cost per decision within 1.5x between 1k and 64k blocks.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from replay.model.kernel import Kernel
from replay.model.machine import MMOP_ONLINE
from replay.model.memory_hotplug import zone_for_pfn_range
from replay.model.params import boot_params_from_cmdline
from replay.model.profiles import get_profile
from traces.events import AddFlags, AddMemory, Attr, GroupRegister, OfflineBlock, OnlineBlock, OnlineType, Source
from traces.machines import PRESETS

BLOCK = 128 << 20
GROUPS = 64


def build(nr_blocks: int, oracles: bool) -> tuple[Kernel, list[int]]:
    """Boot q35 and hot-add ``nr_blocks`` blocks in 64 dynamic groups (auto-onlined)."""
    profile = get_profile("6.1")
    k = Kernel(profile, oracles=oracles)
    for ev in PRESETS["qemu-q35-4G"].events:
        k.apply(ev)
    k.apply(boot_params_from_cmdline("memhp_default_state=online memory_hotplug.online_policy=auto-movable", profile.default_online_type, False))
    per_group = nr_blocks // GROUPS
    first = 64
    for _ in range(GROUPS):
        mgid = k.apply(GroupRegister(True, 0, BLOCK // 4096)).rc
        k.apply(AddMemory(first * BLOCK, per_group * BLOCK, mgid, AddFlags.NID_IS_MGID | AddFlags.DRIVER_MANAGED))
        first += per_group
    return k, list(range(64, first))


def measure(nr_blocks: int, ops: int, oracles: bool) -> float:
    """Decisions (online + offline requests) per second over ``ops`` requests."""
    k, blocks = build(nr_blocks, oracles)
    rng = random.Random(1)
    picks = [rng.choice(blocks) for _ in range(ops // 2)]
    offline = [OfflineBlock(b, Attr.STATE, Source.USER) for b in picks]
    online = [OnlineBlock(b, OnlineType.ONLINE, Attr.STATE, Source.USER) for b in picks]
    apply = k.apply
    t0 = time.perf_counter()
    for off, on in zip(offline, online, strict=True):
        apply(off)
        apply(on)
    elapsed = time.perf_counter() - t0
    return 2 * len(picks) / elapsed


def measure_decisions(nr_blocks: int, ops: int) -> float:
    """zone_for_pfn_range (the auto-movable decision alone) evaluations per second."""
    k, blocks = build(nr_blocks, False)
    m = k.m
    rng = random.Random(2)
    picks = [m.blocks[rng.choice(blocks)] for _ in range(ops)]
    t0 = time.perf_counter()
    for mem in picks:
        zone_for_pfn_range(m, MMOP_ONLINE, mem.nid, mem.group, mem.start_pfn, m.block_pages)
    return ops / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=200_000, help="requests per measurement")
    ap.add_argument("--repeat", type=int, default=3, help="best of N")
    args = ap.parse_args()
    results = {}
    for oracles in (False, True):
        for n in (1024, 65536):
            rate = max(measure(n, args.ops, oracles) for _ in range(args.repeat))
            results[(oracles, n)] = rate
            print(
                f"{'oracles on ' if oracles else 'model alone'}  {n:>6} blocks, {GROUPS} dynamic groups: {rate:>10,.0f} decisions/s  ({1e6 / rate:.2f} us each)"
            )
    for n in (1024, 65536):
        rate = max(measure_decisions(n, args.ops) for _ in range(args.repeat))
        print(f"decision fn  {n:>6} blocks, {GROUPS} dynamic groups: {rate:>10,.0f} zone_for_pfn_range/s ({1e6 / rate:.2f} us each)")
    for oracles in (False, True):
        ratio = results[(oracles, 1024)] / results[(oracles, 65536)]
        print(f"{'oracles on ' if oracles else 'model alone'}  cost per decision 64k/1k blocks: {ratio:.2f}x (target <= 1.5x)")
    ok = results[(False, 1024)] >= 200_000 and results[(False, 65536)] >= 200_000
    print(f"target >= 200,000 decisions/s (model alone): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
