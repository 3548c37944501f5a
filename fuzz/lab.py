"""``mhp fuzz --target lab``: the real kernel against the model.

An input is a scenario document (traces/scenario.py; the documents corpus/scenarios/*.toml hold). Each one runs in the
lab on Debian's kernel (traces/lab/run.py ``run_trace``), in a guest restored from a booted snapshot
(traces/lab/snapshot.py) unless snapshots are off, with the guest's own recorder; the real trace is replayed against
the model (with the seeded ``variant``, replay/model/variants.py) and the oracle is replay's divergence check with
every invariant on. A divergence is a finding: the real trace and the scenario are saved as a regression whose
verdict for the model (or the variant) is ``refuted``, naming the divergent decision. What replay cannot know (its
skipped notes, divergences after a recorder's loss) is not a divergence, nor is a run whose recorder and host
samples disagree (the run cannot be trusted; it counts as a lab error).

Inputs: the seeds first, then the mutator's (fuzz/steps.py ``mutate``) changes of corpus members; an input joins the
corpus when its real trace shows an outcome no earlier input showed (a block state and zone, a result code, a request
kind). Several guests run at once with ``jobs`` (worker processes, one guest each).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import multiprocessing
import random
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzz import steps
from fuzz.campaign import atomic_write, safe_name
from replay.model.variants import VARIANTS, check_variants
from replay.replayer import replay_file
from replay.translate import scenario_toml
from traces.events import AddMemory, BlockObserved, OnlineBlock, ParamWrite, Result
from traces.lab.setup import KERNELS, lab_ready
from traces.reader import TraceReader
from traces.scenario import Scenario, ScenarioError, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "corpus" / "scenarios"
REGRESSIONS = ROOT / "corpus" / "regressions" / "lab"
CORPUS = ROOT / "corpus" / "fuzz" / "lab"
Mutate = Callable[[dict[str, Any], random.Random], dict[str, Any]]
CROSSOVER = 0.2  # the share of mutants that splice in another corpus member's steps (fuzz/steps.py crossover)
# About a quarter of the mutator's changes touch the preset, the command line or the devices: a configuration no
# snapshot holds yet costs a boot and a save. Mutants keep a configuration already run unless this share wants a new one.
NEW_CONFIG = 0.15
MUTANT_TRIES = 4


@dataclass(frozen=True, slots=True)
class LabTask:
    """One input to run: the scenario document and how."""

    name: str
    doc: dict[str, Any]
    kernel: str
    variants: tuple[str, ...] = ()
    snapshots: bool = True
    snapshot_dir: str | None = None


@dataclass(slots=True)
class LabOutcome:
    """What one input gave (a worker's answer; picklable)."""

    name: str
    doc: dict[str, Any]
    kernel: str
    error: str | None = None  # the lab run failed, or the input is not a runnable scenario (``invalid``)
    invalid: bool = False
    release: str = ""
    package: str = ""
    restore_s: float = 0.0  # QEMU start to the agent's first answer (a restore, or a boot without snapshots)
    snapshot_created: bool = False
    wall_s: float = 0.0
    divergence: dict[str, Any] | None = None  # the first divergence with the variant (or the reference model)
    divergence_count: int = 0
    reference: dict[str, Any] | None = None  # with a variant: the reference model's first divergence on the same trace
    skipped: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # the invariants' signatures (the variant's model)
    features: list[str] = field(default_factory=list)
    real: bytes = b""


def scenario_of(doc: dict[str, Any], name: str) -> Scenario:
    """The scenario of a document; ScenarioError naming the input when it is not one the lab can run."""
    sc = parse_scenario(doc, f"<{name}>", scenario_toml(doc))
    if not sc.machine.qemu_args:
        raise ScenarioError(f"machine {sc.machine.name!r} has no QEMU options; the lab runs only machine presets", path=f"<{name}>")
    return sc


def run_input(task: LabTask) -> LabOutcome:
    """Run one input in the lab and judge its real trace (a worker process's job)."""
    from traces.lab.qemu import Guest, GuestConfig, LabError
    from traces.lab.run import run_trace
    from traces.lab.setup import LabSetupError, cached_kernel
    from traces.lab.snapshot import SnapshottingGuest, guest_for

    out = LabOutcome(task.name, task.doc, task.kernel)
    try:
        sc = scenario_of(task.doc, task.name)
    except (ScenarioError, TypeError) as e:
        out.error, out.invalid = str(e), True
        return out
    created: list[bool] = []

    def restored(cfg: GuestConfig) -> Guest:
        g = guest_for(cfg, sc, Path(task.snapshot_dir) if task.snapshot_dir else None)
        created.append(isinstance(g, SnapshottingGuest))
        return g

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mhp-labfuzz-") as tmp:
        real, obs_path = Path(tmp) / "real.mhpt", Path(tmp) / "obs.json"
        try:
            kp = cached_kernel(task.kernel)
            out.package = f"{kp.package} {kp.version}"
            summary = run_trace(sc.path, task.kernel, real, scenario=sc, obs_path=obs_path, start=restored if task.snapshots else None)
        except (LabError, LabSetupError, ScenarioError, OSError) as e:
            out.error = f"lab run failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            out.wall_s = round(time.monotonic() - t0, 1)
            return out
        out.wall_s = round(time.monotonic() - t0, 1)
        out.restore_s, out.release, out.snapshot_created = summary["boot_s"], summary["release"], any(created)
        judge(out, str(real), json.loads(obs_path.read_text()), frozenset(task.variants))
        out.real = real.read_bytes()
    return out


def judge(out: LabOutcome, real: str, obs: dict[str, Any], variants: frozenset[str]) -> None:
    """Replay the real trace on the model (with ``variants``) and on the reference; fill the outcome's verdict fields."""
    from traces.lab.agree import disagreements

    odd = disagreements(real, obs)
    if odd:
        out.error = f"the guest's recorder and the host's samples disagree ({len(odd)}): {odd[0]}"
        return
    res = replay_file(real, profile=out.kernel, variants=variants)
    if res.error:
        out.error = f"the real trace: {res.error}"
        return
    out.skipped, out.findings, out.features = list(res.skipped), sorted(res.finding_signatures), features(real)
    counted = [d for d in res.divergences if d.kind != "loss"]  # after a recorder's loss nothing is known
    out.divergence_count = sum(n for k, n in res.divergences_by_kind.items() if k != "loss")
    out.divergence = counted[0].to_json() if counted else None
    if variants and out.divergence is not None:
        ref = replay_file(real, profile=out.kernel)
        first = next((d for d in ref.divergences if d.kind != "loss"), None)
        out.reference = first.to_json() if first else None


def features(path: str) -> list[str]:
    """The outcomes a real trace shows, coarsely: each request kind with the block states and zones, and the result
    codes, that followed it."""
    seen: set[str] = set()
    last = "boot"
    with TraceReader(path) as r:
        for ev in r.events():
            if ev.KIND == "request":
                last = type(ev).__name__
                if isinstance(ev, AddMemory):
                    last += f" {ev.flags!s}"
                elif isinstance(ev, OnlineBlock):
                    last += f" {ev.online_type.name}"
                elif isinstance(ev, ParamWrite):
                    last += f" {ev.param}"
            elif isinstance(ev, BlockObserved):
                seen.add(f"{last}: block {ev.state.name} {','.join(z.name for z in ev.valid_zones)}")
            elif isinstance(ev, Result):
                seen.add(f"{last}: rc {ev.rc}")
    return sorted(seen)


# --- findings ------------------------------------------------------------------------------------------------------


def divergence_signature(d: dict[str, Any], variant: str | None) -> str:
    """``LAB:<kind>:<request>:<fields>:<variant or ref>``: the divergence's kind, the request that decided it, what differs."""
    request = d["request"].split()[2] if d.get("request") and len(d["request"].split()) > 2 else "none"
    fields = "+".join(m["field"] for m in d["mismatches"]) or "none"
    return f"LAB:{d['kind']}:{request}:{fields}:{variant or 'ref'}"


def decision_text(out: LabOutcome, variant: str | None) -> str:
    """The divergent decision in words: what the model (or the variant) decided, what the kernel did, and why."""
    d = out.divergence
    assert d is not None
    what = "; ".join(f"{m['field']}: model {m['model']!r}, kernel {m['observed']!r}" for m in d["mismatches"])
    text = f"{d['kind']} divergence at event {d['index']} ({d['event'].split(' ', 2)[-1]}): {what}"
    if d.get("request"):
        text += f"; decided by {d['request'].split(' ', 2)[-1]}"
    for s in d.get("numbers") or []:
        text += f" (numbers: movable {s['movable']}, kernel_early {s['kernel_early']}, own group kernel {s['group_kernel']}, limit {s['limit']})"
    if variant:
        text = f"{variant} ({VARIANTS[variant]}): {text}"
        ref = out.reference
        if ref is None or ref["index"] > d["index"]:
            text += "; the reference model agrees with the kernel here: the variant's decision"
        elif ref["index"] == d["index"]:
            text += "; the reference model diverges here too: the model's, not the variant's"
        else:
            text += f"; the reference model diverges earlier, at event {ref['index']}: the model's, not the variant's"
    return text


def save_lab_regression(regressions: Path, signature: str, out: LabOutcome, variant: str | None, minimized: dict[str, Any] | None = None) -> Path:
    """Write <name>.mhpt (the real trace), <name>.toml (the scenario) and <name>.json (signature, the decision, and the
    verdict ``refuted`` for the model or variant on the kernel, as replay/confirm.py record_verdict writes verdicts;
    ``minimized``: how fuzz/lab_minimize.py shrank the steps)."""
    name = safe_name(f"{signature}_{out.kernel}")
    assert out.divergence is not None
    atomic_write(regressions / f"{name}.mhpt", out.real)
    atomic_write(regressions / f"{name}.toml", scenario_toml(out.doc))
    decision = decision_text(out, variant)
    verdict = {
        "verdict": "refuted",
        "date": datetime.date.today().isoformat(),
        "package": out.package,
        "divergence": out.divergence,
        "real_trace": f"{name}.mhpt",
        "signatures": {"expected": list(out.doc.get("expect_findings", [])), "real": out.findings},
        "lab_s": out.wall_s,
    }
    meta = {
        "signature": signature,
        "profile": out.kernel,
        "variant": variant,
        "diff": None,
        "scenario": f"{name}.toml",
        "decision": decision,
        "note": f"{signature}: found by mhp fuzz --target lab on {out.release} ({out.package}); {decision}",
        "verdicts": {out.kernel: verdict},
    }
    if minimized is not None:
        meta["minimized"] = minimized
    atomic_write(regressions / f"{name}.json", json.dumps(meta, indent=1) + "\n")
    return regressions / f"{name}.mhpt"


# --- the campaign --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class LabSummary:
    """What a lab campaign did."""

    kernel: str
    variant: str | None
    snapshots: bool
    jobs: int
    seconds: float = 0.0
    inputs: int = 0
    invalid: int = 0
    errors: list[str] = field(default_factory=list)
    corpus: int = 0
    restore_s: list[float] = field(default_factory=list)
    snapshots_made: int = 0
    divergent_inputs: int = 0
    signatures: dict[str, dict[str, Any]] = field(default_factory=dict)  # signature -> first input, decision, file
    findings: dict[str, int] = field(default_factory=dict)  # invariant signatures on the real traces -> inputs

    @property
    def per_minute(self) -> float:
        return 60 * self.inputs / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "target": "lab",
            "kernel": self.kernel,
            "variant": self.variant,
            "snapshots": self.snapshots,
            "jobs": self.jobs,
            "seconds": round(self.seconds, 1),
            "inputs": self.inputs,
            "inputs_per_minute": round(self.per_minute, 2),
            "invalid": self.invalid,
            "errors": self.errors,
            "corpus": self.corpus,
            "restore_s": self.restore_s,
            "snapshots_made": self.snapshots_made,
            "divergent_inputs": self.divergent_inputs,
            "signatures": self.signatures,
            "findings": self.findings,
        }

    def lines(self) -> list[str]:
        how = "restored snapshots" if self.snapshots else "a boot per input"
        mean = sum(self.restore_s) / len(self.restore_s) if self.restore_s else 0.0
        out = [
            f"lab fuzzing ({self.kernel}, {f'variant {self.variant}' if self.variant else 'reference model'}, {how}, {self.jobs} job(s)): "
            f"{self.inputs} inputs in {self.seconds:.0f} s ({self.per_minute:.1f}/min), {self.invalid} invalid, {len(self.errors)} lab errors, "
            f"corpus {self.corpus}; start {mean:.1f} s mean, {self.snapshots_made} snapshot(s) booted",
            f"divergent inputs: {self.divergent_inputs}; unique divergences: {len(self.signatures)}",
        ]
        for sig, info in sorted(self.signatures.items(), key=lambda kv: kv[1]["first_hit_s"]):
            out.append(f"  {sig}: first after {info['first_hit_s']:.0f} s ({info['input']}) -> {info['file']}")
            if "minimized" in info:
                m = info["minimized"]
                how = "1-minimal" if m["one_minimal"] else "budget reached"
                out.append(f"    minimised {m['steps'][0]} -> {m['steps'][1]} steps in {m['lab_runs']} lab runs ({how})")
            out.append(f"    {info['decision']}")
        if self.findings:
            out.append("invariant findings on the real traces: " + ", ".join(f"{k} ({n})" for k, n in sorted(self.findings.items())))
        out += [f"  lab error: {e}" for e in self.errors[:5]]
        return out


def load_inputs(dirs: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    """(name, document in the mutator's normal form, fuzz/steps.py decode) of every scenario file in ``dirs`` that the
    lab can run, once per normal form (``*-attach`` seeds lose their ``record_from``); ScenarioError (file, line) for a bad one."""
    out, seen = [], set()
    for d in dirs:
        for path in sorted(d.glob("*.toml"), key=lambda p: (p.stem.endswith("-attach"), p.stem)):
            sc = load_scenario(path)  # bad input: the one-line error naming the file and line
            doc = steps.decode(path.read_bytes())
            if sc.machine.qemu_args and doc is not None and steps.encode(doc) not in seen:
                seen.add(steps.encode(doc))
                out.append((path.stem, doc))
    return out


def doc_name(doc: dict[str, Any]) -> str:
    """A corpus file name for a document: its name and a digest of its content."""
    text = scenario_toml(doc)
    return f"{safe_name(str(doc.get('name', 'input')))[:40]}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def config_of(doc: dict[str, Any]) -> str:
    """What a snapshot of the document's guest depends on: the preset, the kernel command line, the devices."""
    return json.dumps([doc.get("machine"), doc.get("kernel"), doc.get("device")], sort_keys=True)


def check_arguments(kernel: str, variant: str | None) -> None:
    """ValueError (a one-line message) for a kernel or variant the lab cannot fuzz with."""
    if kernel not in KERNELS:
        raise ValueError(f"--kernel {kernel}: expected one of {', '.join(KERNELS)}")
    if variant:
        check_variants(frozenset({variant}))


def campaign(
    kernel: str = "6.12",
    *,
    seconds: float | None = 600,
    runs: int | None = None,
    jobs: int = 1,
    variant: str | None = None,
    corpus: Path = CORPUS,
    seeds: list[Path] | None = None,
    regressions: Path = REGRESSIONS,
    snapshots: bool = True,
    snapshot_dir: Path | None = None,
    mutate: Mutate | None = steps.mutate,
    seed: int = 0,
    echo: bool = True,
    stop_on_first: bool = False,
    minimize_runs: int = 40,
    minimize_seconds: float = 900.0,
) -> LabSummary:
    """Fuzz ``kernel`` against the model for ``seconds`` (no new input after it) or ``runs`` inputs: the seeds (default
    corpus/scenarios) and the corpus first, then ``mutate``'s changes of corpus members (without a mutator, the corpus
    again). The mutator's documents are expressible (fuzz/steps.py), so every one can run. New divergences are saved
    to ``regressions``, their steps first minimised on the kernel (fuzz/lab_minimize.py, at most ``minimize_runs`` lab
    runs and ``minimize_seconds`` each; 0 runs: saved as found); inputs with new outcomes join ``corpus``. One job runs in this process, more in worker
    processes (spawned: a script that calls this with ``jobs`` > 1 needs the ``if __name__ == "__main__"`` guard)."""
    check_arguments(kernel, variant)
    starts = seeds if seeds is not None else [SEEDS]
    queue = load_inputs([*starts, corpus] if corpus.is_dir() else starts)
    if not queue:
        raise ValueError("no scenario to start from: the seeds and the corpus hold none the lab can run")
    why = lab_ready(kernel)
    if why:
        raise ValueError(f"the lab cannot run {kernel}: {why.splitlines()[0]}")
    rng = random.Random(seed)
    rng.shuffle(queue)  # the seeds in an order of the seed's: no kind of scenario always waits for the others
    members = list(queue)
    summary = LabSummary(kernel, variant, snapshots, jobs)
    seen: set[str] = set()
    configs: set[str] = set()  # the guest configurations of the inputs run so far (config_of)
    t0 = time.monotonic()
    bar = _bar(runs, seconds, echo)

    def task_of(name: str, doc: dict[str, Any]) -> LabTask:
        return LabTask(name, doc, kernel, (variant,) if variant else (), snapshots, str(snapshot_dir) if snapshot_dir else None)

    def next_task() -> LabTask:
        if queue:
            name, doc = queue.pop(0)
        elif mutate is not None:
            doc = mutant(rng.choice(members)[1])
            name = doc_name(doc)
        else:
            name, doc = members[summary.inputs % len(members)]
        configs.add(config_of(doc))
        return task_of(name, doc)

    def mutant(parent: dict[str, Any]) -> dict[str, Any]:
        assert mutate is not None
        any_config = rng.random() < NEW_CONFIG
        for _ in range(MUTANT_TRIES):
            cross = len(members) > 1 and rng.random() < CROSSOVER
            doc = steps.crossover(parent, rng.choice(members)[1], rng) if cross else mutate(parent, rng)
            if any_config or config_of(doc) in configs:
                break
        return doc

    def shrink(out: LabOutcome, signature: str) -> tuple[LabOutcome, dict[str, Any] | None]:
        if minimize_runs == 0:
            return out, None
        from fuzz.lab_minimize import LabMinimizer

        done = LabMinimizer(task_of(out.name, out.doc), signature, variant, max_runs=minimize_runs, max_seconds=minimize_seconds).shrink(out)
        return done.outcome, done.to_json()

    def more(started: int) -> bool:
        if runs is not None and started >= runs:
            return False
        if stop_on_first and summary.signatures:
            return False
        return seconds is None or time.monotonic() - t0 < seconds

    started = 0
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) if jobs > 1 else InProcess() as pool:
        running: set[Future[LabOutcome]] = set()
        while True:
            while len(running) < jobs and more(started):
                running.add(pool.submit(run_input, next_task()))
                started += 1
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    out = fut.result()
                except Exception as e:  # a bug of this pipeline, or a worker that died: counted, the campaign goes on
                    summary.inputs += 1
                    summary.errors.append(f"internal error: {type(e).__name__}: {e}")
                    continue
                take(summary, out, time.monotonic() - t0, regressions, corpus, members, seen, shrink)
                if bar is not None:
                    bar.update(1 if runs is not None else 0)
                    bar.set_postfix_str(f"{summary.inputs} in, {len(summary.signatures)} div, {len(summary.errors)} err")
    if bar is not None:
        bar.close()
    summary.seconds = time.monotonic() - t0
    summary.corpus = len(members)
    return summary


class InProcess:
    """An executor that runs each job at once in this process (one job: no worker to start)."""

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[[LabTask], LabOutcome], task: LabTask) -> Future[LabOutcome]:
        fut: Future[LabOutcome] = Future()
        try:
            fut.set_result(fn(task))
        except Exception as e:
            fut.set_exception(e)
        return fut


def take(
    summary: LabSummary,
    out: LabOutcome,
    at: float,
    regressions: Path,
    corpus: Path,
    members: list[tuple[str, dict[str, Any]]],
    seen: set[str],
    shrink: Callable[[LabOutcome, str], tuple[LabOutcome, dict[str, Any] | None]],
) -> None:
    """Count one outcome; save a new divergence, minimised by ``shrink``, as a regression and an input with new outcomes
    into the corpus."""
    if out.invalid:
        summary.invalid += 1
        return
    summary.inputs += 1
    if out.error:
        summary.errors.append(f"{out.name}: {out.error}")
        return
    summary.restore_s.append(out.restore_s)
    summary.snapshots_made += out.snapshot_created
    for f in out.findings:
        summary.findings[f] = summary.findings.get(f, 0) + 1
    if out.divergence is not None:
        summary.divergent_inputs += 1
        sig = divergence_signature(out.divergence, summary.variant)
        if sig not in summary.signatures:
            path = save_lab_regression(regressions, sig, out, summary.variant)  # kept as found if minimising fails or is stopped
            try:
                small, how = shrink(out, sig)
            except Exception as e:  # a bug of the minimiser's runs: the finding stays as found, the campaign goes on
                summary.errors.append(f"{out.name}: minimising {sig}: {type(e).__name__}: {e}")
                small, how = out, None
            if how is not None:
                path = save_lab_regression(regressions, sig, small, summary.variant, how)
            summary.signatures[sig] = {"first_hit_s": round(at, 1), "input": out.name, "decision": decision_text(small, summary.variant), "file": str(path)}
            if how is not None:
                summary.signatures[sig]["minimized"] = how
    new = set(out.features) - seen
    if new:
        seen |= new
        if not any(name == out.name for name, _ in members):
            members.append((out.name, out.doc))
            atomic_write(corpus / f"{doc_name(out.doc)}.toml", scenario_toml(out.doc))


def _bar(runs: int | None, seconds: float | None, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=runs, desc="lab inputs", unit="input", file=sys.stderr, leave=False)
