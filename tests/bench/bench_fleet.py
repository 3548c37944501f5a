#!/usr/bin/env python3
"""Benchmark of mhp replay --cluster (not a test; prints figures).

Generates 1,000 traces of 1,000 events (mhp gen) and replays them with ``-j 1`` (in-process, as
``mhp replay -j 1``) and with ``--cluster local:1`` and ``local:2``: events/s, the speed-up at two
workers, cluster start-up, and the scheduling overhead per trace (a one-worker fleet against -j 1,
with the default batches and with one trace per task). The configurations run --repeat times,
interleaved, and the best run of each counts: the machine is shared, and a burst of load elsewhere
should not decide the comparison. Then the client's peak RSS replaying 1,000
and 10,000 traces on local:2, each in a child process. Targets (issue 16): speed-up >= 1.8x at two
workers on two cores; client RSS flat within 10% from 1,000 to 10,000 traces.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

from peak import peak_rss_mib  # tests/bench/peak.py, beside this script

from replay.fleet import connect, expand, prepare_workers, replay_on, run_fleet
from replay.generate import generate_trace
from replay.replayer import replay_many


def make_fleet(directory: str, traces: int, events: int) -> list[str]:
    """``traces`` generated traces of ``events`` events, both profiles, distinct seeds."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i in range(traces):
        p = os.path.join(directory, f"host{i:05d}.mhpt")
        generate_trace(p, 10_000 + i, events, "6.12" if i % 3 == 0 else "6.1")
        paths.append(p)
    return paths


def linked_fleet(directory: str, paths: list[str], copies: int) -> list[str]:
    """``copies`` hard links of each trace under other names: more traces (distinct paths), no generation."""
    out = []
    for c in range(copies):
        sub = os.path.join(directory, f"copy{c}")
        os.makedirs(sub, exist_ok=True)
        for p in paths:
            q = os.path.join(sub, os.path.basename(p))
            os.link(p, q)
            out.append(q)
    return out


def child_rss(directory: str, cluster: str) -> None:
    """Replay every trace under ``directory`` on ``cluster`` in this process; print traces, events/s, client peak RSS (MiB)."""
    report = run_fleet([directory], cluster)
    print(report.total.figures["traces"], report.run["events_per_s"], peak_rss_mib())


def child_j1(directory: str) -> None:
    """What ``mhp replay -j 1`` does, in a process without Dask: print events, wall seconds, CPU seconds."""
    paths = sorted(glob.glob(os.path.join(directory, "*.mhpt")))
    c0, t0 = time.process_time(), time.perf_counter()
    events = sum(r.events for r in replay_many(paths, jobs=1))
    print(events, time.perf_counter() - t0, time.process_time() - c0)


def j1_run(directory: str) -> dict[str, float]:
    """``-j 1`` in a child process without Dask: events, seconds, CPU seconds."""
    out = subprocess.run([sys.executable, __file__, "--child-j1", directory], capture_output=True, text=True, check=True).stdout.split()
    return {"events": int(out[0]), "seconds": float(out[1]), "cpu": float(out[2])}


def fleet_run(paths: list[str], cluster: str, batch: int | None) -> dict[str, float]:
    """One fleet replay: the run figures plus the CPU seconds of the workers and of this process (client, and a local cluster's scheduler)."""
    t0 = time.perf_counter()
    with connect(cluster) as client:
        prepare_workers(client, freeze=True)
        startup = time.perf_counter() - t0
        w0, c0 = client.run(time.process_time), time.process_time()
        report = replay_on(client, expand(paths), batch=batch)
        w1, c1 = client.run(time.process_time), time.process_time()
    return {**report.run, "events": report.total.figures["events"], "startup": startup, "wall": time.perf_counter() - t0,
            "worker_cpu": sum(w1[k] - w0[k] for k in w0), "client_cpu": c1 - c0}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=1000)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each configuration, interleaved; the best counts")
    ap.add_argument("--rss-traces", type=int, default=10_000, help="traces of the second RSS run (0: skip the RSS runs)")
    ap.add_argument("--rss-events", type=int, default=100, help="events per trace in the RSS runs (RSS is about the number of traces)")
    ap.add_argument("--child-rss", nargs=2, metavar=("DIR", "CLUSTER"), help=argparse.SUPPRESS)
    ap.add_argument("--child-j1", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_rss:
        child_rss(*args.child_rss)
        return 0
    if args.child_j1:
        child_j1(args.child_j1)
        return 0
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        directory = os.path.join(tmp, "fleet")
        paths = make_fleet(directory, args.traces, args.events)
        n = len(paths)
        print(f"generated {n:,} traces of {args.events:,} events in {time.perf_counter() - t0:.1f} s")
        configs: list[tuple[str, int | None]] = [("-j 1", None), ("local:1", None), ("local:2", None)]
        runs: dict[tuple[str, int | None], list[dict[str, float]]] = {c: [] for c in [*configs, ("local:1", 1)]}
        for rep in range(args.repeat):  # interleaved, so that a burst of load elsewhere hits every configuration alike
            for cluster, batch in configs + ([("local:1", 1)] if rep == 0 else []):
                runs[cluster, batch].append(j1_run(directory) if cluster == "-j 1" else fleet_run(paths, cluster, batch))
        best = {c: min(rs, key=lambda r: r["seconds"]) for c, rs in runs.items()}
        events = int(best["-j 1", None]["events"])
        assert all(r["events"] == events for rs in runs.values() for r in rs), "a fleet replayed other events than -j 1"
        print(f"best of {args.repeat} interleaved runs (range in brackets); {events:,} events")
        for (cluster, batch), r in best.items():
            label = "-j 1 (mhp replay, no Dask)" if cluster == "-j 1" else f"{cluster} (batch {r['batch']:.0f})"
            spread = "/".join(f"{x['seconds']:.2f}" for x in runs[cluster, batch])
            if cluster == "-j 1":
                took = f"{r['seconds']:.2f} s [{spread}]; {r['cpu']:.2f} CPU s"
            else:
                spent = f"CPU s: workers {r['worker_cpu']:.2f}, client+scheduler {r['client_cpu']:.2f}"
                took = f"{r['seconds']:.2f} s [{spread}] replaying + {r['startup']:.2f} s start-up; {spent}"
            print(f"{label:<28} {events / r['seconds']:>9,.0f} events/s ({took})")
        j1, one, two, single = best["-j 1", None], best["local:1", None], best["local:2", None], best["local:1", 1]
        print(f"speed-up local:2 vs -j 1: {j1['seconds'] / two['seconds']:.2f}x (target >= 1.8x); local:2 vs local:1: {one['seconds'] / two['seconds']:.2f}x")
        for what, r in (("with batches", one), ("one trace per task", single)):
            wall, cpu = (r["seconds"] - j1["seconds"]) / n * 1e3, (r["worker_cpu"] + r["client_cpu"] - j1["cpu"]) / n * 1e3
            print(f"scheduling overhead per trace, local:1 {what}: {wall:.2f} ms wall, {cpu:.2f} ms CPU (against -j 1)")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.rss_traces:
            small, big = os.path.join(tmp, "rss", "small"), os.path.join(tmp, "rss", "big")
            base = make_fleet(small, args.traces, args.rss_events)
            linked_fleet(big, base, max(1, args.rss_traces // len(base)))
            rss = {}
            for d in (small, big):
                out = subprocess.run([sys.executable, __file__, "--child-rss", d, "local:2"], capture_output=True, text=True, check=True).stdout.split()
                traces, rate, mib = (int(x) for x in out[-3:])
                rss[d] = mib
                print(f"client replaying {traces:>7,} traces of {args.rss_events} events on local:2: peak RSS {mib} MiB ({rate:,} events/s)")
            print(f"client peak RSS {args.rss_traces:,} vs {args.traces:,} traces: {rss[big] / rss[small]:.3f}x (target within 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
