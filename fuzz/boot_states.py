"""Boot states a one-field mutation of a snapshot cannot reach, each a consistent change of its
boot records: CMA pages in a kernel zone (``cma=`` on a CONFIG_CMA kernel, profile 7.2), the top
of boot memory in ZONE_MOVABLE (``kernelcore=``/``movablecore=``), memory hot-plugged before the
snapshot (a group and its online blocks), and an early block offlined before it.

fuzz.mutator.mutate_boot applies them; ``python -m fuzz.boot_states corpus/seeds`` writes the
seed traces that carry them (``SEED.FEATURE.mhpt``, listed in SEEDS).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fuzz.check import decode
from fuzz.minimize import reproducer_header
from replay.model.kernel import Kernel
from replay.model.profiles import get_profile
from replay.observe import model_digest, observe_outcome, observe_zones
from traces.atomic import atomic_write
from traces.events import BlockObserved, BlockState, BootBlocks, BootGroup, BootMachine, BootZone, Result, StateDigest, ZoneObserved, ZoneType
from traces.header import Capture, TraceHeader

PAGEBLOCK = 512  # pages: CMA is activated a pageblock at a time (init_cma_reserved_pageblock)
BOOT_GROUP_ID = 64  # above the ids a trace's own registrations get first (xa_alloc: lowest free id)
KERNEL_ZONES = (ZoneType.DMA, ZoneType.DMA32, ZoneType.NORMAL)


def _block_pages(events: list[Any]) -> int:
    bm = next((e for e in events if type(e) is BootMachine), None)
    return (bm.block_size if bm is not None and bm.block_size else 128 << 20) // 4096


def _zone_index(events: list[Any], node: int, zone: ZoneType) -> int | None:
    return next((i for i, e in enumerate(events) if type(e) is BootZone and e.node == node and e.zone is zone), None)


def _less(managed: int | None, pages: int) -> int | None:
    return None if managed is None else max(managed - pages, 0)


def with_cma(events: list[Any], rng: random.Random) -> list[Any] | None:
    """CMA pages in a kernel zone: whole pageblocks, at most its early pages (None: no such zone)."""
    zones = [i for i, e in enumerate(events) if type(e) is BootZone and e.zone in KERNEL_ZONES and e.present_early >= PAGEBLOCK]
    if not zones:
        return None
    i = rng.choice(zones)
    z = events[i]
    most = z.present_early // PAGEBLOCK
    blocks = rng.choice((1, max(most // 8, 1), max(most // 4, 1), max(most // 2, 1), most))
    out = list(events)
    out[i] = z._replace(cma=blocks * PAGEBLOCK)
    return out


def _top_run(events: list[Any], zone: ZoneType, bp: int) -> int | None:
    """The boot block run of ``zone`` ending highest, online, early, without holes or group, of 2+ blocks."""
    runs = [
        i
        for i, e in enumerate(events)
        if type(e) is BootBlocks and e.zone is zone and e.state is BlockState.ONLINE and e.early and e.mgid < 0 and e.present_pages == bp and e.count >= 2
    ]
    return max(runs, key=lambda i: events[i].first + events[i].count, default=None)


def with_boot_movable(events: list[Any], rng: random.Random) -> list[Any] | None:
    """The top blocks of a node's Normal boot memory in ZONE_MOVABLE, as kernelcore=/movablecore= lay it out."""
    bp = _block_pages(events)
    r = _top_run(events, ZoneType.NORMAL, bp)
    if r is None:
        return None
    run = events[r]
    zn, zm = _zone_index(events, run.node, ZoneType.NORMAL), _zone_index(events, run.node, ZoneType.MOVABLE)
    if zn is None:
        return None
    normal = events[zn]
    k = rng.randint(1, run.count - 1)
    first = run.first + run.count - k
    pages = k * bp
    if normal.start_pfn + normal.spanned != (run.first + run.count) * bp or normal.present_early < pages:
        return None  # the run does not end the zone: moving it would leave Normal spanning Movable
    out = list(events)
    out[r : r + 1] = [run._replace(count=run.count - k), run._replace(first=first, count=k, zone=ZoneType.MOVABLE)]
    zn += zn > r
    out[zn] = normal._replace(
        spanned=normal.spanned - pages, present=normal.present - pages, present_early=normal.present_early - pages, managed=_less(normal.managed, pages)
    )
    movable = BootZone(run.node, ZoneType.MOVABLE, first * bp, pages, pages, pages, 0, None if normal.managed is None else pages)
    if zm is None:
        out.insert(zn + 1, movable)
    else:
        out[zm + (zm > r)] = movable
    return out


def with_boot_group(events: list[Any], rng: random.Random) -> list[Any] | None:
    """Memory hot-plugged before the snapshot: a group (a DIMM, or a virtio-mem device in single
    blocks) with its blocks online above everything the trace touches, in ZONE_MOVABLE or Normal."""
    from fuzz.mutator import blocks_of

    bp = _block_pages(events)
    boot = [e for e in events if type(e) is BootBlocks]
    if not boot or any(type(e) is BootGroup and e.mgid == BOOT_GROUP_ID for e in events):
        return None
    node = boot[-1].node
    top = max([b.first + b.count for b in boot] + [b + 1 for e in events if e.KIND != "boot" for b in blocks_of(e)])
    count = rng.choice((1, 2, 4))
    zone = rng.choice((ZoneType.MOVABLE, ZoneType.NORMAL))
    zi = _zone_index(events, node, zone)
    if zi is None:
        return None
    z = events[zi]
    dynamic = rng.random() < 0.5
    pages = count * bp
    out = list(events)
    start = z.start_pfn if z.spanned else top * bp
    managed = None if z.managed is None else z.managed + pages
    out[zi] = z._replace(start_pfn=start, spanned=(top + count) * bp - start, present=z.present + pages, managed=managed)
    last = max(i for i, e in enumerate(out) if type(e) is BootBlocks)
    out[last + 1 : last + 1] = [
        BootGroup(BOOT_GROUP_ID, node, dynamic, bp if dynamic else pages),
        BootBlocks(top, count, node, BlockState.ONLINE, zone, False, BOOT_GROUP_ID, 0, bp),
    ]
    return out


def with_offline_boot_block(events: list[Any], rng: random.Random) -> list[Any] | None:
    """An early block offlined before the snapshot: the last block of a run, off its zone's present
    pages (and off its span when it ended the zone, as shrink_zone_span does)."""
    bp = _block_pages(events)
    runs = [i for i, e in enumerate(events) if type(e) is BootBlocks and e.zone in KERNEL_ZONES and e.state is BlockState.ONLINE and e.present_pages == bp]
    runs = [i for i in runs if events[i].early and events[i].mgid < 0 and events[i].count >= 2]
    if not runs:
        return None
    r = rng.choice(runs)
    run = events[r]
    zi = _zone_index(events, run.node, run.zone)
    if zi is None:
        return None
    z = events[zi]
    end = (run.first + run.count) * bp
    if z.present_early < bp:
        return None
    out = list(events)
    out[zi] = z._replace(
        spanned=z.spanned - bp if z.start_pfn + z.spanned == end else z.spanned,
        present=z.present - bp,
        present_early=z.present_early - bp,
        cma=min(z.cma, z.present_early - bp),
        managed=_less(z.managed, bp),
    )
    out[r : r + 1] = [run._replace(count=run.count - 1), run._replace(first=run.first + run.count - 1, count=1, state=BlockState.OFFLINE, zone=ZoneType.NONE)]
    return out


BOOT_STATES: dict[str, Callable[[list[Any], random.Random], list[Any] | None]] = {
    "cma": with_cma,
    "movable-at-boot": with_boot_movable,
    "boot-group": with_boot_group,
    "offline-boot-block": with_offline_boot_block,
}

# (seed, boot state, profile its header names): the CMA seeds are 7.2 traces (CONFIG_CMA)
SEEDS = (
    ("seed-vmem", "cma", "7.2"),
    ("seed-dimm", "cma", "7.2"),
    ("dimm-manual-mix", "cma", "7.2"),
    ("seed-dimm", "movable-at-boot", "6.1"),
    ("seed-vmem", "boot-group", "6.1"),
    ("dimm-manual-mix", "offline-boot-block", "6.1"),
)


def boot_state(events: list[Any], rng: random.Random, name: str | None = None) -> list[Any] | None:
    """``events`` with one boot state (``name``, or one at random) added; None if it has no place for it."""
    return BOOT_STATES[name or rng.choice(sorted(BOOT_STATES))](events, rng)


def reobserve(events: list[Any], profile: str) -> list[Any]:
    """``events`` with their observations made again by the model (replay/observe.py): each
    request's result and blocks, and each sample of the zones and the state digest, as the
    changed boot state gives them (``mhp replay`` of the seed then matches)."""
    k = Kernel(get_profile(profile), oracles=False)
    out: list[Any] = []
    for ev in events:
        kind = type(ev)
        if ev.KIND in ("boot", "request", "inject"):
            res = k.apply(ev)
            out += [ev, *observe_outcome(k.m, ev, res)]
        elif kind is ZoneObserved:
            if type(out[-1]) is not ZoneObserved:
                out += observe_zones(k.m)
        elif kind is StateDigest:
            out.append(model_digest(k.m))
        elif kind not in (Result, BlockObserved):  # those follow their request
            out.append(ev)
    return out


def write_seeds(directory: Path, seed: int = 7) -> list[Path]:
    """The SEEDS traces in ``directory``, from the seed traces there (deterministic for ``seed``)."""
    from fuzz.mutator import encode

    written = []
    for base, name, profile in SEEDS:
        events = decode((directory / f"{base}.mhpt").read_bytes())
        if events is None:
            raise ValueError(f"{directory / base}.mhpt: not a valid trace")
        out = boot_state(events, random.Random(f"{seed}:{base}:{name}"), name)
        if out is None:
            raise ValueError(f"{directory / base}.mhpt: no place for boot state {name}")
        out = reobserve(out, profile)
        p = get_profile(profile)
        header = reproducer_header(TraceHeader(kernel_release=p.release, source=Capture.FUZZER), out, p, "fuzz.boot_states")
        path = directory / f"{base}.{name}.mhpt"
        atomic_write(path, encode(out, header))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz.boot_states", description="write the seed traces with the boot states one-field mutations miss")
    p.add_argument("directory", type=Path, help="the seed directory (corpus/seeds), holding the base seeds")
    args = p.parse_args(argv)
    try:
        for path in write_seeds(args.directory):
            print(path)
    except (OSError, ValueError) as e:
        print(f"python -m fuzz.boot_states: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
