"""Command line of the lab: set-up, or scenarios on real kernels written as observation JSON or .mhpt traces."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from traces.lab.setup import KERNELS, LabSetupError, setup
from traces.lab.userland import base_tree


def build_parser() -> argparse.ArgumentParser:
    """The lab's argument parser."""
    p = argparse.ArgumentParser(prog="mhp lab", description="Run scenarios against Debian's real kernels under QEMU (TCG).")
    p.add_argument("--setup", action="store_true", help="install QEMU, busybox, cpio, xz (apt-get, as root), fetch the kernels and the guest's Python")
    p.add_argument("--refresh", action="store_true", help="with --setup: look for newer kernel packages even when some are cached")
    p.add_argument("scenario", nargs="*", help="scenario TOML file(s)")
    p.add_argument("--kernel", nargs="+", choices=KERNELS, help="kernel series to boot (several with --out-dir)")
    p.add_argument("-o", "--output", help="one scenario, one kernel: OUT.mhpt writes a trace, OUT.json the observation JSON")
    p.add_argument("--out-dir", help="write OUT_DIR/<kernel>/<scenario>.json (with --trace: .mhpt) for every scenario and kernel")
    p.add_argument("--trace", action="store_true", help="with --out-dir: write the guest recorder's .mhpt traces instead of observation JSON")
    p.add_argument("--obs-dir", help="with --trace: also write the host's own samples after every step to OBS_DIR/<kernel>/<scenario>.json")
    p.add_argument("-v", "--verbose", action="store_true", help="print progress and the guest console tail on errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit 0 done, 1 the lab failed, 2 bad input."""
    p = build_parser()
    args = p.parse_args(argv)
    try:
        if args.setup:
            for series, k in setup(refresh=args.refresh).items():
                print(f"{series}: {k.package} {k.version} ({k.release}) in {k.root}")
            print(f"guest user space: {base_tree(log=True)}")
            if not args.scenario:
                return 0
        if not args.scenario:
            p.error("a scenario file is required (or --setup)")
        if not args.kernel or bool(args.output) == bool(args.out_dir):
            p.error("--kernel and one of -o / --out-dir are required with scenarios")
        if args.trace and not args.out_dir:
            p.error("--trace goes with --out-dir (with -o the suffix decides: .mhpt or .json)")
        if args.output and not args.output.endswith((".mhpt", ".json")):
            p.error(f"-o {args.output}: the name must end in .mhpt (a trace) or .json (the observation)")
        from traces.lab.qemu import LabError
        from traces.lab.run import run_corpus, run_scenario, run_trace
        from traces.scenario import ScenarioError

        if args.out_dir:
            summary = run_corpus(args.scenario, tuple(args.kernel), args.out_dir, args.verbose, trace=args.trace, obs_out_dir=args.obs_dir)
            return 1 if any("error" in s for s in summary) else 0
        if len(args.scenario) != 1 or len(args.kernel) != 1:
            p.error("-o takes one scenario and one kernel; use --out-dir for several")
        try:
            if args.output.endswith(".mhpt"):
                info = run_trace(args.scenario[0], args.kernel[0], args.output, verbose=args.verbose)
                steps, boot, wall = len(info["step_s"]), info["boot_s"], info["wall_s"]
            else:
                obs = run_scenario(args.scenario[0], args.kernel[0], args.output, verbose=args.verbose)
                steps, boot, wall = len(obs["results"]) - 1, obs["results"][0].get("boot_s"), obs.get("wall_s")
        except ScenarioError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except (LabError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{args.output}: {steps} steps, boot {boot} s, wall {wall} s")
        return 0
    except LabSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
