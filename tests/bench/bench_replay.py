#!/usr/bin/env python3
"""Benchmark of mhp replay (not a test; prints figures).

Generates a 1M-event workload trace (mhp gen), replays it with every oracle on, and times a bare
decode loop over the same file in the same run. Then replays 1M- and 10M-event traces in child
processes and compares their peak RSS. Targets (issue 4): >= 500k events/s; peak RSS for 1M and
10M events within 10% of each other.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

from replay.generate import generate_trace
from replay.replayer import replay_file
from traces.reader import TraceReader


def child(path: str) -> None:
    """Replay in this process and print events and peak RSS (MiB)."""
    r = replay_file(path)
    print(r.events, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, r.stats["events_per_s"])


def bare_decode(path: str) -> float:
    t0 = time.perf_counter()
    n = 0
    with TraceReader(path) as r:
        for _ in r.events():
            n += 1
    return n / (time.perf_counter() - t0)


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
        t0 = time.perf_counter()
        r = replay_file(path)
        rate = r.events / (time.perf_counter() - t0)
        size = os.path.getsize(path) / 1e6
        print(f"trace: {r.events:,} events ({size:.1f} MB), {r.matched:,} matched, {r.divergence_count} divergences, {r.finding_count} findings")
        print(f"generator:        {gen:>10,.0f} events/s")
        print(f"bare decode loop: {decode:>10,.0f} events/s")
        print(f"replay (oracles): {rate:>10,.0f} events/s (target >= 500,000); {rate / decode:.3f}x the bare decode loop")
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
