"""The ``mhp`` command: one entry point, thin subcommands over library calls.

Exit codes: 0 clean, 1 a finding/divergence/damage where the subcommand defines one, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from replay.layout import format_runs
from replay.simulate import simulate
from traces.scenario import ScenarioError, load_scenario


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run a scenario through the model and print the layout after each step."""
    scenario = load_scenario(args.scenario)
    if args.step is not None and not 0 <= args.step <= len(scenario.steps):
        raise ScenarioError(f"{args.scenario}: --step {args.step} out of range 0..{len(scenario.steps)}")
    results = []
    for res in simulate(scenario, args.profile):
        if args.step is not None and res.index != args.step:
            continue
        results.append(res)
    if args.json:
        json.dump({"scenario": scenario.name, "steps": [r.to_json() for r in results]}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    multi_node = len({r.node for res in results for r in res.runs}) > 1
    for res in results:
        rc = f"  (rc {res.rc})" if res.rc else ""
        print(f"== step {res.index}: {res.label}{rc}")
        for line in format_runs(res.runs, multi_node):
            print(line)
        for f in res.findings:
            print(f"   finding {f.signature}: {f.message}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="mhp", description="Record, replay and fuzz Linux memory-hotplug events against an exact model of the kernel.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("simulate", help="run a scenario file through the model and print layouts")
    s.add_argument("scenario", help="scenario TOML file")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--step", type=int, help="print only the state after step N (0 = boot)")
    s.add_argument("--profile", choices=("6.1", "6.12"), help="kernel profile (default: the scenario's, else 6.1)")
    s.set_defaults(func=cmd_simulate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mhp`` console script."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (| head): not an error
        return 0
    except (ValueError, OSError) as e:  # ScenarioError, TraceFormatError, SnapshotError ... are ValueErrors
        print(f"mhp {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
