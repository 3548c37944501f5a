#!/usr/bin/env python3
"""Benchmark of mhp replay (not a test; prints figures).

Generates a 1M-event workload trace (mhp gen), replays it with every oracle on, and times a bare
decode loop over the same file in the same run. Then replays 1M- and 10M-event traces in child
processes and compares their peak RSS. Targets (issue 4): >= 500k events/s; peak RSS for 1M and
10M events within 10% of each other.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from peak import peak_rss_mib  # tests/bench/peak.py, beside this script

from replay.generate import generate_trace
from replay.model.profiles import profile_for_release
from replay.replayer import Replayer, replay_file
from traces.reader import TraceReader


def child(path: str) -> None:
    """Replay in this process and print events and peak RSS (MiB)."""
    r = replay_file(path)
    print(r.events, peak_rss_mib(), r.stats["events_per_s"])


def whole_process(path: str) -> tuple[float, float]:
    """(events/s of wall time, events/s of CPU time) of ``mhp replay PATH`` as a process of its own: start-up,
    imports, decoding, every oracle and the report."""
    t0 = time.perf_counter()
    before = os.times()
    proc = subprocess.run([sys.executable, "-m", "replay.cli", "replay", "--json", path], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    events = json.loads(proc.stdout)["traces"][0]["events"]
    return events / wall, events / cpu


def bare_decode(path: str) -> float:
    t0 = time.perf_counter()
    n = 0
    with TraceReader(path) as r:
        for _ in r.events():
            n += 1
    return n / (time.perf_counter() - t0)


class _NoModel:
    """A replayer that only counts: the cost of decoding and dispatching each event."""

    def __init__(self) -> None:
        self.index = -1

    def feed(self, seq: int, ts: int, ev: Any) -> None:
        self.index += 1


def dispatch_floor(path: str) -> float:
    """Events/s of replay_file's loop feeding a no-op replayer: the ceiling any model stays under."""
    rp = _NoModel()
    t0 = time.perf_counter()
    with TraceReader(path) as r:
        for chunk in r.chunks():
            cols, feed = chunk.cols, rp.feed
            for seq, ts, ev in zip(cols.seqs, cols.ts, cols.events, strict=True):
                feed(seq, ts, ev)
    return (rp.index + 1) / (time.perf_counter() - t0)


def cost_by_type(path: str, limit: int = 200_000) -> list[tuple[str, int, float]]:
    """(event type, count, microseconds each) over the first ``limit`` events, all oracles on."""
    rp = Replayer(profile_for_release(TraceReader(path).header.kernel_release or "6.1"))
    spent: Counter[str] = Counter()
    count: Counter[str] = Counter()
    clock = time.perf_counter
    with TraceReader(path) as r:
        for rec in itertools.islice(r, limit):
            t0 = clock()
            rp.feed(rec.seq, rec.ts, rec.event)
            name = type(rec.event).__name__
            spent[name] += clock() - t0
            count[name] += 1
    return [(name, n, spent[name] / n * 1e6) for name, n in count.most_common()]  # by count: the same order in both builds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--big", type=int, default=10_000_000, help="events of the second trace for the RSS comparison (0: skip)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "1m.mhpt")
        t0 = time.perf_counter()
        generate_trace(path, 1, args.events)
        gen = args.events / (time.perf_counter() - t0)
        decode = bare_decode(path)
        floor = dispatch_floor(path)
        t0, c0 = time.perf_counter(), time.process_time()
        r = replay_file(path)
        rate, cpu_rate = r.events / (time.perf_counter() - t0), r.events / (time.process_time() - c0)
        t0 = time.perf_counter()
        bare = replay_file(path, oracles=False)
        no_oracles = bare.events / (time.perf_counter() - t0)
        size = os.path.getsize(path) / 1e6
        print(f"trace: {r.events:,} events ({size:.1f} MB), {r.matched:,} matched, {r.divergence_count} divergences, {r.finding_count} findings")
        print(f"generator:        {gen:>10,.0f} events/s")
        print(f"bare decode loop: {decode:>10,.0f} events/s")
        print(f"decode + dispatch to a no-op replayer: {floor:>10,.0f} events/s (the ceiling)")
        print(f"replay (oracles): {rate:>10,.0f} events/s (target >= 500,000); {rate / decode:.3f}x the bare decode loop")
        print(f"replay (oracles): {cpu_rate:>10,.0f} events/s of CPU time (on a shared machine the steadier figure)")
        print(f"replay (no oracles): {no_oracles:>7,.0f} events/s")
        wall, cpu = whole_process(path)
        print(f"mhp replay, whole process (oracles): {wall:>10,.0f} events/s wall, {cpu:,.0f} events/s CPU (target >= 1M compiled, >= 250k pure)")
        print("cost per event type (first 200k events, oracles on, timer overhead included):")
        for name, n, us in cost_by_type(path):
            print(f"  {name:<24} {n:>8,} x {us:6.2f} us = {n * us / 1e6:6.3f} s")
        if args.big:
            rss = {}
            for n in (args.events, args.big):
                p = os.path.join(tmp, f"{n}.mhpt")
                if n != args.events:
                    generate_trace(p, 1, n)
                else:
                    p = path
                out = subprocess.run([sys.executable, __file__, "--child", p], capture_output=True, text=True, check=True).stdout.split()
                rss[n] = int(out[1])
                print(f"replay of {int(out[0]):>10,} events: peak RSS {out[1]} MiB, {int(out[2]):,} events/s")
            a, b = rss[args.events], rss[args.big]
            print(f"peak RSS {args.big:,} vs {args.events:,} events: {b / a:.3f}x (target within 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
