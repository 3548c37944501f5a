"""The ``mhp`` command: one entry point, thin subcommands over library calls.

Exit codes: 0 clean, 1 a finding/divergence/damage where the subcommand defines one, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

from replay import build
from replay.export import export_chrome
from replay.generate import generate_trace
from replay.layout import block_runs, format_runs, format_zones, zone_table
from replay.model.profiles import PROFILES, get_profile
from replay.replayer import model_at, replay_many
from replay.report import summary_table, totals
from replay.simulate import Simulation, simulate, write_trace
from traces.errors import InputError
from traces.files import cat, compile_text, dump_trace, info, repair, verify
from traces.machines import PRESETS
from traces.reader import TraceReader
from traces.record import SYSTEMD_UNIT, Rotation, record
from traces.scenario import load_scenario, parse_size

PROFILE_NAMES = tuple(PROFILES)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run a scenario through the model and print the layout after each step."""
    scenario = load_scenario(args.scenario)
    if args.step is not None and not 0 <= args.step <= len(scenario.steps):
        raise ValueError(f"--step {args.step} out of range 0..{len(scenario.steps)} ({args.scenario} has {len(scenario.steps)} steps)")
    sim = Simulation(scenario, get_profile(args.profile or scenario.profile or "6.1"))
    results = [res for res in simulate(scenario, sim=sim) if args.step is None or res.index == args.step]
    if args.trace:
        n = write_trace(sim, args.trace)
        print(f"{args.trace}: {n} records", file=sys.stderr)
    if args.json:
        json.dump({"scenario": scenario.name, "steps": [r.to_json() for r in results]}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    multi_node = len({r.node for res in results for r in res.runs}) > 1
    for res in results:
        print("\n".join(res.lines(multi_node)))
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    """Print a trace in its text form."""
    dump_trace(args.trace, sys.stdout)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    """Build a binary trace from its text form."""
    n = compile_text(args.text, args.output, strict=not args.lenient)
    print(f"{args.output}: {n} records", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Header, counts per event type, time span and losses."""
    report, facts = info(args.trace)
    if args.json:
        facts["problems"] = [str(p) for p in report.problems]
        facts["gaps"] = report.stats.gaps
        json.dump(facts, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for k, v in facts.items():
            if k == "decisions":
                d: dict[str, int] = v  # type: ignore[assignment]
                share = f" ({100 * d['observed'] / d['total']:.1f}%)" if d["total"] else ""
                print(f"{'decisions:':<12} {d['total']} zone decisions, {d['observed']} observed directly in sysfs{share}")
            elif k != "events":
                print(f"{k + ':':<12} {v}")
        print("events:")
        for name, n in facts["events"].items():  # type: ignore[attr-defined]
            print(f"  {name:<26} {n:>10}")
        for line in report.lines()[1:]:
            print(line)
    return 0 if report.clean else 1


def cmd_verify(args: argparse.Namespace) -> int:
    """Check CRCs, framing, records and sequence numbers: 0 clean, 1 damaged."""
    report = verify(args.trace)
    for line in report.lines():
        print(line)
    print("clean" if report.clean else "DAMAGED")
    return 0 if report.clean else 1


def cmd_repair(args: argparse.Namespace) -> int:
    """Keep every intact chunk, report what was dropped."""
    report = repair(args.trace, args.output)
    for line in report.lines():
        print(line)
    print(f"{args.output}: kept {report.kept} records" + ("" if report.clean else "; Loss records mark what was dropped"))
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    """Join traces of one recording."""
    n = cat(args.traces, args.output)
    print(f"{args.output}: {n} records", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay traces through the model: 0 clean, 1 divergence or finding, 2 bad input."""
    if args.cluster or args.results:
        return replay_fleet(args)
    results = replay_many(
        args.traces,
        jobs=args.jobs,
        progress=sys.stderr.isatty() and not args.json,
        profile=args.profile,
        context=args.context,
        max_divergences=args.max_divergences,
    )
    for r in results:
        if r.profile_note:
            print(f"mhp replay: {r.profile_note}", file=sys.stderr)
        for note in r.skipped:
            print(f"mhp replay: {r.path}: {note}", file=sys.stderr)
    if args.json:
        json.dump({"traces": [r.to_json() for r in results], "totals": totals(results)}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for r in results:
            print(f"== {r.path} (profile {r.profile or '-'})")
            for d in r.divergences:
                print("\n".join(d.lines()))
            if r.divergence_count > len(r.divergences):
                print(f"... and {r.divergence_count - len(r.divergences)} more divergences ({r.divergences_by_kind})")
            for sig, n in r.finding_signatures.items():
                first = next(f for f in r.findings if f["signature"] == sig)
                print(f"finding {sig} x{n}: first at event {first['event_index']}: {first['message']}")
            if r.error:
                print(f"mhp replay: {r.error}", file=sys.stderr)
            print(r.verdict)
        if len(results) > 1:
            print("\n".join(summary_table(results)))
    if any(r.error for r in results):
        return 2
    return 1 if any(r.failed for r in results) else 0


def replay_fleet(args: argparse.Namespace) -> int:
    """``replay --cluster``: the fleet report (replay/fleet.py)."""
    from replay.fleet import run_fleet

    if not args.cluster:
        raise ValueError("--results needs --cluster (local, local:N or tcp://HOST:PORT)")
    if args.jobs != 1:
        raise ValueError("-j and --cluster do not combine: --cluster local:N runs N worker processes")
    options = {"profile": args.profile, "context": args.context, "max_divergences": args.max_divergences}
    report = run_fleet(args.traces, args.cluster, results=args.results, options=options, progress=sys.stderr.isatty() and not args.json)
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print("\n".join(report.lines()))
    return report.exit_code


def trace_path(text: str) -> str:
    """argparse type: a trace to read; ``-`` is standard input."""
    return "/dev/stdin" if text == "-" else text


def natural(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _at_least(text, 0)


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _at_least(text, 1)


def size_bytes(text: str) -> int:
    """argparse type: a size in bytes with an optional K/M/G/T suffix, > 0."""
    value = parse_size(text)
    if not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 64M")
    return value


def seconds(text: str) -> float:
    """argparse type: a duration in seconds, > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def _at_least(text: str, low: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is below {low}")
    return value


def cmd_layout(args: argparse.Namespace) -> int:
    """The seed-style layout of the model at any event of a trace."""
    at, kernel = model_at(args.trace, args.at, args.profile)
    runs = block_runs(kernel.m)
    if args.json:
        json.dump({"at": at, "runs": [r.to_json() for r in runs], "zones": zone_table(kernel.m)}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"after event {at}:")
        print("\n".join(format_runs(runs, len({r.node for r in runs}) > 1) or ["(no memory blocks yet)"]))
        print("\n".join(format_zones(kernel.m) or ["(no populated zones yet)"]))
    return 0


def cmd_gen(args: argparse.Namespace) -> int:
    """Write a generated workload trace with model-filled outcomes."""
    n = generate_trace(args.output, args.seed, args.events, args.profile, args.preset)
    print(f"{args.output}: {n} events", file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Blocks over events coloured by zone, and the ratio panel."""
    from replay.plot import plot, plot_fleet

    if (args.trace is None) == (args.fleet is None):
        raise ValueError("give a TRACE or --fleet REPORT.json (the JSON of mhp replay --cluster ... --json)")
    if args.fleet:
        plot_fleet(args.fleet, args.output)
    else:
        plot(args.trace, args.output, args.profile)
    print(f"{args.output}: written", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Chrome/Perfetto trace-event JSON."""
    n = export_chrome(args.trace, args.output, args.profile)
    print(f"{args.output}: {n} trace events", file=sys.stderr)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    """Record this host's memory hotplug activity."""
    if args.print_systemd_unit:
        sys.stdout.write(SYSTEMD_UNIT)
        return 0
    if args.output is None:
        raise ValueError("-o/--output is required")
    if (args.rotate_size or args.rotate_count) and (args.output == "-" or not args.rotate_size):
        raise ValueError("--rotate-size (and --rotate-count) need -o FILE, not standard output")
    rotation = Rotation(args.output, args.rotate_size, args.rotate_count) if args.rotate_size else None
    if os.geteuid() != 0:
        print(
            "mhp record: warning: not root: /proc/iomem hides addresses (present pages per block and virtio-mem devices are unknown) "
            "and /dev/kmsg may be unreadable",
            file=sys.stderr,
        )
    n = record(
        args.output,
        snapshot_only=args.snapshot,
        duration=args.duration,
        fsync=args.fsync,
        zone_interval=args.zone_interval,
        control=args.control,
        detail=args.source_detail,
        rotation=rotation,
    )
    last = f"{rotation.name(rotation.part)} (part {rotation.part})" if rotation else args.output
    print(f"{last}: {n} records", file=sys.stderr)
    return 0


def cmd_fuzz(args: argparse.Namespace) -> int:
    """A fuzzing campaign (atheris/libFuzzer; --target lab: the real kernel in the lab); exit 1 if it found new signatures."""
    from fuzz.campaign import campaign_totals, run
    from fuzz.check import parse_mode
    from fuzz.totals import lines

    if args.totals:
        try:
            sums = campaign_totals(Path(args.artifacts))
        except ValueError as e:
            raise InputError(str(e)) from None
        if args.json:
            json.dump([t.to_json() for t in sorted(sums.values(), key=lambda t: t.target)], sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            print("\n".join(lines(sums)))
        return 0
    if args.target == "lab":
        return cmd_fuzz_lab(args)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwind: the segment's executions are logged
    summary = run(
        args.target,
        seconds=args.time,
        runs=args.runs,
        jobs=args.jobs,
        corpus=Path(args.corpus) if args.corpus else None,
        artifacts=Path(args.artifacts),
        regressions=Path(args.regressions or "corpus/regressions"),
        mode=parse_mode(args.profile, args.variant, args.diff),
        echo=sys.stderr.isatty() and not args.json,
        merge_every=args.merge_every,
        seed_events=args.seed_events,
        confirm=None if args.confirm is None else args.confirm or ["6.1", "6.12"],
    )
    if args.json:
        json.dump({"target": summary.target, "mode": summary.mode, "seconds": summary.seconds, "execs": summary.execs, "exec_per_s": summary.exec_per_s,
                   "corpus": summary.corpus, "merges": summary.merges, "signatures": summary.signatures,
                   "known_causes": summary.known_causes}, sys.stdout, indent=1)  # fmt: skip
        sys.stdout.write("\n")
    else:
        print("\n".join(summary.lines()))
    return 1 if summary.signatures else 0


def cmd_fuzz_lab(args: argparse.Namespace) -> int:
    """``mhp fuzz --target lab``: scenarios run on the real kernel, their real traces replayed on the model (fuzz/lab.py)."""
    from fuzz.lab import CORPUS, REGRESSIONS, campaign

    if args.diff:
        raise ValueError("--diff: the lab target compares the model with the real kernel; give --variant alone")
    summary = campaign(
        args.kernel,
        seconds=args.time,
        runs=args.runs,
        jobs=args.jobs,
        variant=args.variant,
        corpus=Path(args.corpus) if args.corpus else CORPUS,
        regressions=Path(args.regressions) if args.regressions else REGRESSIONS,
        snapshots=not args.no_snapshot,
        seed=args.seed,
        echo=sys.stderr.isatty() and not args.json,
        minimize_runs=args.minimize_runs,
    )
    if args.json:
        json.dump(summary.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print("\n".join(summary.lines()))
    return 1 if summary.signatures else 0


def cmd_minimize(args: argparse.Namespace) -> int:
    """Minimise a failing trace, keeping its signature and its header (profile as replay picks it)."""
    from fuzz.check import parse_mode
    from fuzz.minimize import Minimizer, reproducer_header
    from fuzz.mutator import encode
    from replay.model.profiles import get_profile
    from replay.replayer import pick_profile
    from traces.atomic import atomic_write

    with TraceReader(args.trace) as r:
        header = r.header
        events = list(r.events())
    mode = parse_mode(pick_profile(header.kernel_release, args.profile).profile.name, args.variant, args.diff)
    mini = Minimizer(mode, args.signature, max_replays=args.max_replays, max_seconds=args.time, accept_any=args.accept_any)
    try:
        res = mini.run(events)
    except ValueError as e:  # what the trace does not do: about the file
        raise InputError(str(e), path=args.trace) from None
    atomic_write(args.output, encode(res.events, reproducer_header(header, res.events, get_profile(mode.profile), "mhp minimize")))
    print(f"{args.output}: {len(events)} -> {len(res.events)} events ({mode.describe()}), {res.replays} replays in {res.seconds:.1f} s")
    print(f"signature {res.signature}: {res.hit.message}")
    if mini.ignore:
        print(f"past the signatures it hits first: {', '.join(sorted(mini.ignore))}")
    print("1-minimal: removing any single event loses the signature" if res.one_minimal else "budget exhausted before the 1-minimal pass finished")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    """Run traces on real kernels in the lab and judge them against the model (replay/confirm.py)."""
    from replay.confirm import confirm_all, exit_code

    verdicts = confirm_all(args.traces, args.kernel, args.out_dir, args.record, args.verbose, None if args.json else lambda v: print(v.line(), flush=True))
    if args.json:
        json.dump([v.to_json() for v in verdicts], sys.stdout, indent=1)
        sys.stdout.write("\n")
    return exit_code(verdicts)


def cmd_lab(argv: Sequence[str]) -> int:
    """The real-kernel lab (traces/lab): --setup, or scenarios on Debian's kernels under QEMU."""
    from traces.lab.cli import main as lab_main

    return lab_main(argv)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run a benchmark script of the source tree (tests/bench/bench_<what>.py) under both builds of the model."""
    from replay.bench_builds import bench_both

    root = Path(__file__).resolve().parent.parent
    script = root / "tests" / "bench" / f"bench_{args.what}.py"
    if not script.exists():
        raise ValueError(f"{script}: not found (mhp bench runs from a source checkout)")
    return bench_both(script, args.rest, root)


FUZZ_TARGETS = ("model", "format", "repair", "text", "scenario", "commands", "steps")  # fuzz.campaign.HARNESSES


class _Version(argparse.Action):
    """--version on one line (argparse's own action wraps it to the terminal)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object, option_string: str | None = None) -> None:
        print(f"mhp-replay {version('mhp-replay')}, {build.describe()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="mhp", description="Record, replay and fuzz Linux memory-hotplug events against an exact model of the kernel.")
    p.add_argument("--version", action=_Version, nargs=0, help="print the version and which build of the model runs, on one line")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("simulate", help="run a scenario file through the model and print layouts")
    s.add_argument("scenario", help="scenario TOML file")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--step", type=natural, help="print only the state after step N (0 = boot)")
    s.add_argument("--profile", choices=PROFILE_NAMES, help="kernel profile (default: the scenario's, else 6.1)")
    s.add_argument("-o", "--trace", help="also write the events, with model-filled observations, as a .mhpt trace")
    s.set_defaults(func=cmd_simulate)
    s = sub.add_parser("replay", help="replay traces through the model, report divergences and findings")
    s.add_argument("traces", nargs="+", type=trace_path, help="trace files (- : standard input); with --cluster also globs, directories and fsspec URLs")
    s.add_argument("-j", "--jobs", type=positive, default=1, help="traces replayed in parallel processes")
    s.add_argument("--cluster", help="replay on Dask: local[:N] (N worker processes) or tcp://HOST:PORT (a scheduler); prints the fleet report")
    s.add_argument("--results", metavar="DIR", help="with --cluster: keep one result per trace in DIR; a rerun skips the traces done")
    s.add_argument("--json", action="store_true", help="the stable JSON report (docs/replay-json.md)")
    s.add_argument("--context", type=natural, default=8, help="events shown before a divergence")
    s.add_argument("--max-divergences", type=natural, default=20, help="divergences reported in full per trace")
    s.add_argument("--profile", choices=PROFILE_NAMES, help="kernel profile (default: from the trace's kernel release)")
    s.set_defaults(func=cmd_replay)
    s = sub.add_parser("layout", help="the block layout at any event of a trace")
    s.add_argument("trace", type=trace_path, help="trace file (- : standard input)")
    s.add_argument("--at", type=natural, help="after event N (default: the end)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--profile", choices=PROFILE_NAMES)
    s.set_defaults(func=cmd_layout)
    s = sub.add_parser("plot", help="picture: blocks over events by zone, MOVABLE:KERNEL against the ratio (needs matplotlib)")
    s.add_argument("trace", nargs="?", type=trace_path, help="trace file (- : standard input)")
    s.add_argument("--fleet", metavar="REPORT", help="instead of a trace: a fleet report (replay --cluster --json), signatures by kernel release")
    s.add_argument("-o", "--output", required=True, help="PNG (or any format matplotlib writes)")
    s.add_argument("--profile", choices=PROFILE_NAMES)
    s.set_defaults(func=cmd_plot)
    s = sub.add_parser("export", help="Chrome/Perfetto trace-event JSON (zone counters, hotplug events)")
    s.add_argument("trace", type=trace_path, help="trace file (- : standard input)")
    s.add_argument("--format", choices=("chrome",), default="chrome")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--profile", choices=PROFILE_NAMES)
    s.set_defaults(func=cmd_export)
    s = sub.add_parser("gen", help="generate a realistic workload trace (outcomes filled in by the model)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--events", type=positive, default=10_000)
    s.add_argument("--profile", choices=PROFILE_NAMES, default="6.1")
    s.add_argument("--preset", choices=sorted(PRESETS), help="the machine (default: a seeded mix of one- and two-node q35 4 GiB guests)")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(func=cmd_gen)
    s = sub.add_parser("record", help="record this host: a boot snapshot, then uevents until SIGINT/SIGTERM or --duration")
    s.add_argument("-o", "--output", help="trace file, or - for standard output")
    s.add_argument("--snapshot", action="store_true", help="take the snapshot and exit (works unprivileged)")
    s.add_argument("--rotate-size", type=size_bytes, metavar="SIZE", help="parts NAME_00001.mhpt ... of SIZE bytes (4M, 1G), each starting with a snapshot")
    s.add_argument("--rotate-count", type=positive, metavar="N", help="with --rotate-size: keep only the newest N parts (a ring buffer)")
    s.add_argument("--print-systemd-unit", action="store_true", help="print a hardened systemd unit that records this host, and exit")
    s.add_argument("--duration", type=seconds, help="stop after S seconds")
    s.add_argument("--fsync", action="store_true", help="fsync every chunk")
    s.add_argument("--zone-interval", type=seconds, default=10.0, help="seconds between /proc/zoneinfo samples")
    s.add_argument("--control", metavar="FIFO", help="create FIFO: each line written to it becomes a mark and a full observation (FIFO.done counts them)")
    s.add_argument("--source-detail", default="", metavar="TEXT", help="the header's source detail (default: the host name)")
    s.set_defaults(func=cmd_record)
    s = sub.add_parser("fuzz", help="fuzz the model (or a file-reading surface) with atheris; new hits become regressions")
    s.add_argument(
        "--target",
        choices=(*FUZZ_TARGETS, "lab"),  # lab: fuzz/lab.py, no libFuzzer harness
        default="model",
        help="model; format (strict reader), repair (verify/repair), text (compile), scenario (simulate), commands (replay/layout/plot/export); "
        "steps (the model on scenarios of real-machine actions: every finding expressible); lab (scenarios on the real kernel in QEMU against the model)",
    )
    s.add_argument("--time", type=positive, default=60, help="seconds (default 60)")
    s.add_argument("--runs", type=positive, help="stop after N inputs")
    s.add_argument("--jobs", type=positive, default=1, help="libFuzzer fork jobs")
    s.add_argument("--merge-every", type=positive, default=600, help="merge the working corpus every S seconds (default 600)")
    s.add_argument("--seed-events", type=natural, default=32, help="model seeds also come cut to their boot snapshot and N events (default 32; 0: whole only)")
    s.add_argument("--corpus", help="working corpus directory, used as given and resumed (default corpus/fuzz/<target>)")
    s.add_argument("--artifacts", default="fuzz-artifacts")
    s.add_argument("--totals", action="store_true", help="print each target's executions, time and open crashes over the campaigns of --artifacts; no fuzzing")
    s.add_argument("--regressions", help="where new hits are saved (default corpus/regressions; lab: corpus/regressions/lab)")
    s.add_argument("--kernel", default="6.12", help="lab: the kernel series to fuzz (6.1, 6.12, 7.2; default 6.12)")
    s.add_argument("--no-snapshot", action="store_true", help="lab: boot a guest for every input instead of restoring a booted snapshot")
    s.add_argument("--seed", type=int, default=0, help="lab: the mutator's random seed")
    s.add_argument("--minimize-runs", type=natural, default=40, help="lab: shrink each new finding's steps in at most N lab runs (default 40; 0: as found)")
    s.add_argument("--profile", choices=PROFILE_NAMES, default="6.1")
    s.add_argument("--variant", help="run a seeded model variant (replay/model/variants.py)")
    s.add_argument("--diff", help="differential: A,B (profile A, with --variant, against B, e.g. 6.1,6.12) or ref (--variant against the reference)")
    s.add_argument(
        "--confirm",
        nargs="*",
        metavar="KERNEL",
        help="steps target: confirm each new regression in the lab on these kernels (default 6.1 6.12; those the lab lacks are skipped)",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_fuzz)
    s = sub.add_parser("minimize", help="shrink a failing trace to a 1-minimal one with the same signature")
    s.add_argument("trace", type=trace_path, help="trace file (- : standard input)")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--signature", help="signature to keep (default: the trace's first; the ones it hits before are ignored)")
    s.add_argument("--accept-any", action="store_true", help="keep any signature, not just the original (the output names the one kept)")
    s.add_argument("--profile", choices=PROFILE_NAMES, help="kernel profile (default: from the trace's kernel release)")
    s.add_argument("--variant", help="run a seeded model variant (replay/model/variants.py)")
    s.add_argument("--diff", help="differential: A,B (profile A, with --variant, against B, e.g. 6.1,6.12) or ref (--variant against the reference)")
    s.add_argument("--time", type=seconds, default=60.0, help="time budget in seconds")
    s.add_argument("--max-replays", type=positive, default=50000)
    s.set_defaults(func=cmd_minimize)
    s = sub.add_parser("confirm", help="run traces on Debian's real kernels in the lab: confirmed, refuted or inexpressible")
    s.add_argument("traces", nargs="+", metavar="TRACE")
    s.add_argument("--kernel", nargs="+", help="kernel series to run on (default: the one the trace's header names, else every one the lab has)")
    s.add_argument("--json", action="store_true", help="one object per trace and kernel")
    s.add_argument("--out-dir", help="where real traces go (default: beside each trace, as NAME.KERNEL.real.mhpt)")
    s.add_argument("--record", action="store_true", help="store each verdict in the trace's regression file (NAME.json beside it)")
    s.add_argument("-v", "--verbose", action="store_true", help="log the lab's steps")
    s.set_defaults(func=cmd_confirm)
    s = sub.add_parser("lab", help="run scenarios on Debian's real 6.1/6.12/7.2 kernels under QEMU (mhp lab --help)", add_help=False)
    s.add_argument("rest", nargs=argparse.REMAINDER, help="options of python -m traces.lab")
    s = sub.add_parser(
        "bench",
        help="run a benchmark (model, format, replay, fuzz, fleet; record: as root; lab_fuzz: in the lab), pure and compiled side by side",
    )
    s.add_argument("what", choices=("model", "format", "replay", "fuzz", "fleet", "record", "lab_fuzz"))
    s.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark")
    s.set_defaults(func=cmd_bench)
    s = sub.add_parser("dump", help="print a trace in its text form")
    s.add_argument("trace", type=trace_path, help="trace file (- : standard input)")
    s.set_defaults(func=cmd_dump)
    s = sub.add_parser("compile", help="build a binary trace from its text form")
    s.add_argument("text")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--lenient", action="store_true", help="give missing fields their zero value")
    s.set_defaults(func=cmd_compile)
    s = sub.add_parser("info", help="header, counts per event type, time span, losses")
    s.add_argument("trace", type=trace_path, help="trace file (- : standard input)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)
    s = sub.add_parser("verify", help="check CRCs, sequence numbers and structure (exit 0 clean, 1 damaged)")
    s.add_argument("trace", type=trace_path, help="trace file (- : standard input)")
    s.set_defaults(func=cmd_verify)
    s = sub.add_parser("repair", help="copy every intact chunk of a damaged trace")
    s.add_argument("trace", type=trace_path, help="trace file (- : standard input)")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(func=cmd_repair)
    s = sub.add_parser("cat", help="join traces of one recording")
    s.add_argument("traces", nargs="+", type=trace_path, help="trace files (- : standard input)")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(func=cmd_cat)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mhp`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lab"]:  # the lab parses its own options
        return cmd_lab(argv[1:])
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (| head): not an error
        return 0
    except (ValueError, OSError) as e:  # InputError (TraceFormatError, ScenarioError), OSError, argument errors
        print(f"mhp {args.command}: {error_line(e, input_file(args))}", file=sys.stderr)
        return 2


def input_file(args: argparse.Namespace) -> str | None:
    """The one file a subcommand reads, if it reads one (its errors name it when they do not say)."""
    for name in ("trace", "scenario", "text"):
        value = getattr(args, name, None)
        if isinstance(value, str):
            return value
    traces = getattr(args, "traces", None)
    return traces[0] if isinstance(traces, list) and len(traces) == 1 else None


def error_line(e: Exception, path: str | None) -> str:
    """The one error convention: ``FILE: POSITION: message`` for bad input (the file a subcommand
    reads when the error does not name one), ``FILE: reason`` for a file that cannot be used, the
    message alone for a bad argument."""
    if isinstance(e, InputError):
        return str(e if e.path is not None else e.at(path=path))
    if isinstance(e, OSError):
        return f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
    return str(e)


if __name__ == "__main__":
    sys.exit(main())
