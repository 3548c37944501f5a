#!/usr/bin/env python3
"""Benchmark of the .mhpt codec (not a test; prints figures).

Writes a 1M-event trace, decodes it with the fast path and with construct, times
struct.iter_unpack over the same bytes in the same run, and prints records/s and the ratios.
Then writes a ~1 GB trace and reads it in a child process, reporting the child's peak RSS.
Targets (issue 3): decode >= 1,000,000 records/s and >= 0.25x struct.iter_unpack; writer
>= 500,000 records/s; reading a 1 GB trace under 100 MB RSS.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peak import peak_rss_mib  # tests/bench/peak.py, beside this script

from traces.events import Attr, BlockObserved, BlockState, OfflineBlock, OnlineBlock, OnlineType, Result, Source, ZoneType
from traces.header import CHUNK_HEADER, TraceHeader
from traces.reader import TraceReader
from traces.writer import TraceWriter

ITER_FMT = "<BBHQQIBBB"  # an online_block record: 27 bytes


def workload(n: int, seed: int = 1) -> Iterator[Any]:
    """A request/observation mix like a replayed recording (generated lazily, never held)."""
    rng = random.Random(seed)
    zones = ((ZoneType.MOVABLE,), (ZoneType.NORMAL,), (ZoneType.MOVABLE, ZoneType.NORMAL))
    for _ in range(n):
        r = rng.random()
        b = rng.randrange(48, 4096)
        if r < 0.35:
            yield OnlineBlock(b, OnlineType.ONLINE, Attr.STATE, Source.USER)
        elif r < 0.6:
            yield OfflineBlock(b, Attr.STATE, Source.USER)
        elif r < 0.85:
            yield BlockObserved(b, BlockState.ONLINE, 0, rng.choice(zones))
        else:
            yield Result(rng.choice((0, 0, 0, -16, -22)))


def write(path: str, n: int, batch: int = 100_000) -> float:
    """Write ``n`` events; only the writer is timed (events are made in batches beforehand)."""
    spent = 0.0
    events = workload(n)
    with TraceWriter(path, TraceHeader(writer="bench")) as w:
        for start in range(0, n, batch):
            chunk = [next(events) for _ in range(min(batch, n - start))]
            t0 = time.perf_counter()
            for i, ev in enumerate(chunk, start):
                w.write(ev, ts=i)
            spent += time.perf_counter() - t0
        t0 = time.perf_counter()
    return n / (spent + time.perf_counter() - t0)


def read(path: str | bytes, decoder: str, limit: int | None = None, how: str = "chunks") -> tuple[float, int]:
    """Decode the whole file (or about ``limit`` records) through the reader's public API.

    ``path`` may be the file's bytes already in memory (no disk I/O timed, like iter_unpack).

    ``chunks``: CRC-checked chunks decoded to columns (events, seq, ts, flags), what the replayer
    consumes; ``events``: one event at a time; ``records``: one Record tuple at a time.
    """
    t0 = time.perf_counter()
    n = 0
    with TraceReader(io.BytesIO(path) if isinstance(path, bytes) else path, decoder=decoder) as r:
        if how == "chunks":
            for chunk in r.chunks():
                n += len(chunk.cols.events)
                if limit is not None and n >= limit:
                    break
        else:
            for _ in r if how == "records" else r.events():
                n += 1
    return n / (time.perf_counter() - t0), n


def iter_unpack_rate(data: bytes) -> float:
    size = struct.calcsize(ITER_FMT)
    data = data[: len(data) // size * size]
    t0 = time.perf_counter()
    n = 0
    for _ in struct.iter_unpack(ITER_FMT, data):
        n += 1
    return n / (time.perf_counter() - t0)


def big_read_rss(path: str) -> None:
    """Child process: read every record, print records and peak RSS in MiB."""
    n = sum(1 for _ in TraceReader(path))
    print(n, peak_rss_mib())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--construct-limit", type=int, default=200_000, help="records decoded with construct (it is ~20x slower)")
    ap.add_argument("--big-gb", type=float, default=1.0, help="size of the big trace for the RSS check (0 to skip)")
    ap.add_argument("--child-read", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_read:
        big_read_rss(args.child_read)
        return 0
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.mhpt")
        wrate = write(path, args.events)
        size = os.path.getsize(path)
        # fast decode and iter_unpack alternate, so drifting machine speed hits both alike
        data = Path(path).read_bytes()
        rounds = [(read(data, "fast"), iter_unpack_rate(data)) for _ in range(5)]
        fast_mem, n = max(r[0] for r in rounds)
        iu = max(r[1] for r in rounds)
        ratio = statistics.median(r[0][0] / r[1] for r in rounds)
        fast, _ = max(read(path, "fast") for _ in range(3))
        fast_ev, _ = max(read(path, "fast", how="events") for _ in range(3))
        fast_rec, _ = read(path, "fast", how="records")
        cons, m = read(path, "construct", args.construct_limit)
        print(f"trace: {n:,} records, {size / 1e6:.1f} MB ({size / n:.1f} bytes/record)")
        print(f"writer:             {wrate:>12,.0f} records/s (target >= 500,000)")
        print(f"fast decode:        {fast:>12,.0f} records/s (target >= 1,000,000; from the file, chunks to columns, best of 3)")
        print(f"  from memory:      {fast_mem:>12,.0f} records/s (the bytes iter_unpack reads, best of 5)")
        print(f"  one event a time: {fast_ev:>12,.0f} records/s (best of 3)")
        print(f"  as Record tuples: {fast_rec:>12,.0f} records/s")
        print(f"construct decode:   {cons:>12,.0f} records/s (over {m:,} records)")
        print(f"struct.iter_unpack: {iu:>12,.0f} tuples/s ({ITER_FMT}, same bytes, best of 5)")
        print(f"fast / construct:   {fast_mem / cons:>12.1f}x")
        print(f"fast / iter_unpack: {ratio:>12.3f}x (target >= 0.25x; both over the same bytes in memory, median of 5 back-to-back pairs)")
        if args.big_gb > 0:
            big = os.path.join(tmp, "big.mhpt")
            per = size / n
            count = int(args.big_gb * 1e9 / per)
            t0 = time.perf_counter()
            write(big, count)
            wt = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--child-read", big], capture_output=True, text=True, check=True).stdout.split()
            rt = time.perf_counter() - t0
            print(f"big trace: {os.path.getsize(big) / 1e9:.2f} GB, {int(out[0]):,} records; write {wt:.0f} s, read {rt:.0f} s")
            print(f"peak RSS reading it: {out[1]} MiB (target < 100 MB)")
    print(f"chunk header {CHUNK_HEADER.size} bytes; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
