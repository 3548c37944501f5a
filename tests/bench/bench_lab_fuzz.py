#!/usr/bin/env python3
"""Benchmark of ``mhp fuzz --target lab`` (not a test; prints figures, boots QEMU guests): mhp bench lab_fuzz.

The same inputs (corpus scenarios, no mutation) run through the lab campaign: a boot per input with one and with two
guests at a time; then a restored snapshot per input, first cold (one guest; the snapshots are booted and saved during
the run), then warm with one and with two guests. Reports inputs per minute, the mean guest start (boot or restore)
and how many snapshots each run booted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from fuzz.lab import SEEDS, campaign

INPUTS = ("pc-4G-dimm", "q35-8G-dimm", "seed-dimm", "q35-16G-vmem", "numa-aware", "offline-reonline")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kernel", default="6.12")
    ap.add_argument("--inputs", nargs="+", default=list(INPUTS), help="corpus/scenarios names")
    ap.add_argument("--jobs", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mhp-bench-lab-") as tmp:
        t = Path(tmp)
        (t / "seeds").mkdir()
        for name in args.inputs:
            shutil.copy(SEEDS / f"{name}.toml", t / "seeds" / f"{name}.toml")
        modes = [("boot", j) for j in args.jobs] + [("snapshot, cold", 1)] + [("snapshot", j) for j in args.jobs]
        for k, (how, jobs) in enumerate(modes):
            snapshots = how != "boot"
            run = t / f"run-{k}"
            s = campaign(
                args.kernel,
                seconds=None,
                runs=len(args.inputs),
                jobs=jobs,
                corpus=run / "corpus",
                seeds=[t / "seeds"],
                regressions=run / "regressions",
                snapshots=snapshots,
                snapshot_dir=t / "snapshots",
                mutate=None,
                echo=False,
            )
            start = sum(s.restore_s) / len(s.restore_s) if s.restore_s else 0.0
            rows.append(
                {
                    "start": how,
                    "jobs": jobs,
                    "inputs": s.inputs,
                    "seconds": round(s.seconds, 1),
                    "per_minute": round(s.per_minute, 2),
                    "start_s": round(start, 2),
                    "snapshots_made": s.snapshots_made,
                    "errors": s.errors,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    if not args.json:
        print(f"{'start':<16} {'jobs':>4} {'inputs':>6} {'seconds':>8} {'per min':>8} {'start s':>8} {'booted':>6}")
        for r in rows:
            print(f"{r['start']:<16} {r['jobs']:>4} {r['inputs']:>6} {r['seconds']:>8} {r['per_minute']:>8} {r['start_s']:>8} {r['snapshots_made']:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
