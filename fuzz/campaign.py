"""``mhp fuzz``: run the atheris harnesses under libFuzzer, de-duplicate hits by signature,
minimise each new one and save it as a regression (trace, text form, ready-to-paste pytest).

The working corpus persists (a campaign resumes from it) and is merged after every segment; crashes
are triaged while libFuzzer runs; artifacts, the triage ledger and regressions are written
atomically, so a killed campaign loses nothing: its untriaged crashes are triaged by the next one.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fuzz.cause import Known, classify, fingerprint
from fuzz.check import Hit, Mode, check_events, decode, shadowing
from fuzz.minimize import Budget, deadline, reproducer_header
from fuzz.mutator import encode
from fuzz.surfaces import TARGETS, dictionary, die_with_parent
from fuzz.totals import Total, record, totals
from replay.model.profiles import get_profile
from traces.atomic import atomic_write as write_whole
from traces.files import dump_trace
from traces.header import Capture, TraceHeader

ROOT = Path(__file__).resolve().parent.parent
HARNESSES = {
    "model": ROOT / "fuzz" / "model_fuzzer.py",
    "format": ROOT / "fuzz" / "trace_format_fuzzer.py",
    "repair": ROOT / "fuzz" / "trace_repair_fuzzer.py",
    "text": ROOT / "fuzz" / "trace_text_fuzzer.py",
    "scenario": ROOT / "fuzz" / "scenario_fuzzer.py",
    "commands": ROOT / "fuzz" / "commands_fuzzer.py",
    "steps": ROOT / "fuzz" / "steps_fuzzer.py",
}
RSS_LIMIT_MB = 2048  # libFuzzer's -rss_limit_mb for every run (the largest machine's model takes ~600 MB)
TIMEOUTS = {"model": 25, "format": 25, "repair": 25, "text": 25, "scenario": 60, "commands": 60, "steps": 25}  # -timeout, seconds per input
# Requests the kernel API forbids are the caller's bug, not the kernel's: not worth a regression.
DEFAULT_IGNORE = ("API-MISUSE:remove",)
SEED_EVENTS = 32  # model seeds keep their boot snapshot and this many events (trim_seed)
# A surface target's whole seeds stop here: an 85 KB real trace runs the format target at ~50 inputs/s, its first 32 events at ~650.
SURFACE_WHOLE_MAX = 16 << 10
STATUS = re.compile(r"#(\d+):?\s+(?:\w+\s+)?cov: (\d+) ft: (\d+) corp: (\d+)\S* .*?exec/s:? (\d+)")


@dataclass(slots=True)
class Summary:
    """What a campaign did."""

    target: str
    mode: str
    seconds: float = 0.0
    execs: int = 0
    corpus: int = 0
    merges: int = 0
    signatures: dict[str, dict[str, Any]] = field(default_factory=dict)  # signature (SIG__cause-N: a new cause of a known one) -> first hit, file ...
    known_causes: dict[str, int] = field(default_factory=dict)  # signature -> hits whose minimised cause was a known one (suppressed)

    @property
    def hits(self) -> int:
        """Hits triaged: new signatures and causes, and suppressed known causes."""
        return len(self.signatures) + sum(self.known_causes.values())

    @property
    def exec_per_s(self) -> float:
        return self.execs / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        out = [
            f"{self.target} fuzzing ({self.mode}): {self.execs} execs in {self.seconds:.0f} s ({self.exec_per_s:.0f}/s), "
            f"corpus {self.corpus} after {self.merges} merge(s)"
        ]
        out.append(f"unique signatures: {len(self.signatures)}")
        for sig, info in sorted(self.signatures.items(), key=lambda kv: kv[1]["first_hit_s"]):
            when = "left untriaged by an interrupted campaign" if info["first_hit_s"] < 0 else f"first hit after {info['first_hit_s']:.1f} s"
            if self.target in ("model", "steps"):
                unit = "steps" if self.target == "steps" else "events"
                new = f"new cause of a known signature ({info['cause']['path']}), " if info.get("known_signature") else ""
                verdicts = "".join(f"; {k}: {v}" for k, v in info.get("verdicts", {}).items())
                out.append(f"  {sig}: {new}{when}, {info['events']} {unit} after minimising -> {info['file']}{verdicts}")
            else:
                out.append(f"  {sig}: {when}, still failing ({info['message']}) -> {info['file']}")
        if self.known_causes:
            out.append("known cause (suppressed): " + ", ".join(f"{sig} x{n}" for sig, n in sorted(self.known_causes.items())))
        return out


def safe_name(signature: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", signature)


def atomic_write(path: Path, data: bytes | str) -> None:
    """traces.atomic.atomic_write, creating the directory first (campaign directories may be new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, data)


def known_signatures(regressions: Path) -> set[str]:
    sigs = set()
    for meta in regressions.glob("*.json"):
        sigs.add(json.loads(meta.read_text())["signature"])
    return sigs


def trim_seed(data: bytes, events: int) -> bytes | None:
    """A seed trace cut to its boot snapshot and the ``events`` events after it (None: undecodable).

    Short inputs run several times faster under atheris (~150 vs ~40 executions/s).
    """
    evs = decode(data)
    if evs is None:
        return None
    boot = next((i for i, ev in enumerate(evs) if ev.KIND != "boot"), len(evs))
    return encode(evs[: boot + events])


def seed_dirs(profile: str) -> list[Path]:
    """Where seeds come from: the generated seed traces and the real traces of the profile's kernel."""
    return [d for d in (ROOT / "corpus" / "seeds", ROOT / "corpus" / "real" / profile) if d.is_dir()]


def prepare_seeds(dirs: list[Path], out: Path, events: int, whole_max: int | None = None) -> Path:
    """The seed traces of ``dirs`` copied into ``out`` (as ``<dir>-<file>``), each whole (only up to
    ``whole_max`` bytes, if given) and, if ``events``, also trimmed (trim_seed) beside it: the short
    ones run fast, the whole ones keep the deep states."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.mhpt"):
        old.unlink()
    for d in dirs:
        for seed in sorted(d.glob("*.mhpt")):
            data = seed.read_bytes()
            short = trim_seed(data, events) if events else None
            if whole_max is None or len(data) <= whole_max or short is None:
                atomic_write(out / f"{d.name}-{seed.name}", data)
            if short is not None and short != data:
                atomic_write(out / f"{d.name}-{seed.stem}.first{events}.mhpt", short)
    return out


def prepare_target_seeds(target: str, profile: str, out: Path, events: int, dirs: list[Path] | None = None) -> Path:
    """The seeds of a target in ``out``: traces (prepare_seeds, trimmed to ``events``; a surface
    target takes whole only the traces up to SURFACE_WHOLE_MAX) for the trace targets, their text
    forms for ``text``, the scenario files for ``scenario``."""
    if target == "steps":
        from fuzz.steps_triage import prepare_step_seeds

        return prepare_step_seeds(out)
    traces = seed_dirs(profile) if dirs is None else dirs
    if target == "scenario":
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for toml in sorted((ROOT / "corpus" / "scenarios").glob("*.toml")):
            shutil.copy(toml, out / toml.name)
        return out
    whole_max = None if target == "model" else SURFACE_WHOLE_MAX
    if target != "text":
        return prepare_seeds(traces, out, events, whole_max)
    shutil.rmtree(out, ignore_errors=True)
    binary = prepare_seeds(traces, out / "binary", events, whole_max)
    for seed in sorted(binary.glob("*.mhpt")):
        text = io.StringIO()
        try:
            dump_trace(str(seed), text)
        except ValueError:
            continue  # not a trace: nothing to seed the text form with
        atomic_write(out / f"{seed.stem}.txt", text.getvalue())
    shutil.rmtree(binary)
    return out


def save_regression(
    regressions: Path, signature: str, mode: Mode, events: list[Any], note: str, name: str | None = None, cause: dict[str, Any] | None = None
) -> Path:
    """Write <name>.mhpt (default name: the signature's; its header names the profile's kernel
    release, so ``mhp replay`` picks that profile), its text form, a metadata file and a
    ready-to-paste pytest; the metadata's ``ignore`` lists the signatures the trace hits first
    (shadowing), its ``cause`` the fingerprint (fuzz.cause; computed here unless given)."""
    name = name or safe_name(signature)
    profile = get_profile(mode.profile)
    data = encode(events, reproducer_header(TraceHeader(kernel_release=profile.release, source=Capture.FUZZER), events, profile, "mhp fuzz"))
    trace = regressions / f"{name}.mhpt"
    atomic_write(trace, data)
    text = io.StringIO()
    dump_trace(str(trace), text)  # the layout kept: `mhp compile` of the .txt gives the .mhpt back
    atomic_write(regressions / f"{name}.txt", text.getvalue())
    ignore = shadowing(events, mode, signature)
    meta: dict[str, Any] = {"signature": signature, "profile": mode.profile, "variant": mode.variant, "diff": mode.diff, "ignore": ignore, "note": note}
    meta["cause"] = cause if cause is not None else fingerprint(events, mode, signature, frozenset(ignore)).to_json()
    atomic_write(regressions / f"{name}.json", json.dumps(meta, indent=1) + "\n")
    test = f'''def test_{re.sub(r"[^a-z0-9]+", "_", name.lower())}() -> None:
    """{note}"""
    from fuzz.check import Mode, check_input

    data = open("corpus/regressions/{name}.mhpt", "rb").read()
    hit = check_input(data, Mode({mode.profile!r}, {mode.variant!r}, {mode.diff!r}), frozenset({ignore!r}))
    assert hit is not None and hit.signature == {signature!r}
'''
    atomic_write(regressions / f"{name}.py.txt", test)
    return trace


def run(
    target: str = "model",
    *,
    seconds: int | None = 60,
    runs: int | None = None,
    jobs: int = 1,
    corpus: Path | None = None,
    seeds: list[Path] | None = None,
    artifacts: Path = ROOT / "fuzz-artifacts",
    regressions: Path = ROOT / "corpus" / "regressions",
    mode: Mode | None = None,
    minimize_seconds: float = 30.0,
    stop_on_first: bool = False,
    echo: bool = True,
    merge_every: int = 600,
    seed_events: int = SEED_EVENTS,
    confirm: list[str] | None = None,
) -> Summary:
    """One campaign; returns its summary (hits already saved).

    libFuzzer runs in segments: one job runs in this process's child until a hit (its signature
    then joins the ignore file and the next segment goes on), several run in fork mode. The corpus
    is merged every ``merge_every`` seconds and at the end; it is ``corpus`` (default
    corpus/fuzz/<target>), resumed. Crash artifacts are triaged as they
    appear, and ones an interrupted campaign left untriaged (not in ``artifacts/triaged.txt``)
    first. Seeds (default: seed_dirs) are prepared into ``artifacts/seeds`` (``seeds-TARGET`` for
    the surface targets; prepare_target_seeds, trimmed to ``seed_events``). ``confirm``: the
    kernels each new steps regression is confirmed on (fuzz/steps_triage.py).
    """
    mode = mode or Mode()
    if confirm is not None:
        from fuzz.steps_triage import check_confirm

        check_confirm(target, confirm)
    seed_dir = prepare_target_seeds(target, mode.profile, artifacts / f"seeds-{target}" if target != "model" else artifacts / "seeds", seed_events, seeds)
    c = Campaign(target, mode, corpus or ROOT / "corpus" / "fuzz" / target, seed_dir, artifacts, regressions, jobs, minimize_seconds, echo)
    c.confirm = confirm
    c.triage_new(earlier=True)
    merged = 0.0
    while True:
        left = None if not seconds else seconds - c.elapsed()
        hits = c.summary.hits
        c.segment(None if left is None else max(1, round(min(left, merge_every - (c.elapsed() - merged)))), runs, stop_on_first)
        new_hit = c.summary.hits > hits  # a segment ended by a hit goes on after it
        done = (c.summary.execs >= runs or not new_hit or stop_on_first) if runs else (not seconds or (stop_on_first and new_hit) or c.elapsed() >= seconds - 1)
        if done or c.elapsed() - merged >= merge_every - 1:
            c.merge()
            merged = c.elapsed()
        if done:
            break
    c.summary.seconds = c.elapsed()
    c.summary.corpus = len(list(c.work.iterdir()))
    return c.summary


class Progress(threading.Thread):
    """Reads a libFuzzer run's status lines: its executions and corpus size, echoed every 2 s."""

    def __init__(self, campaign: Campaign, stream: IO[str]) -> None:
        super().__init__(daemon=True)
        self.campaign, self.stream, self.execs = campaign, stream, 0

    def run(self) -> None:
        c, s = self.campaign, self.campaign.summary
        last_status = 0.0
        for line in self.stream:
            m = STATUS.search(line)
            if m:
                self.execs = max(self.execs, int(m.group(1)))
                s.corpus = int(m.group(4))
                if c.echo and time.monotonic() - last_status > 2:
                    last_status = time.monotonic()
                    print(
                        f"\r[{c.elapsed():5.0f}s] execs {s.execs + self.execs} exec/s {m.group(5)} corpus {s.corpus} "
                        f"cov {m.group(2)} signatures {len(s.signatures)}",
                        end="",
                        file=sys.stderr,
                    )
            m = re.search(r"stat::number_of_executed_units: (\d+)", line) or re.search(r"Done (\d+) runs", line)
            if m:
                self.execs = max(self.execs, int(m.group(1)))


class Campaign:
    """The state of one ``mhp fuzz`` run: where things live, what is known, what was found."""

    def __init__(
        self, target: str, mode: Mode, work: Path, seeds: Path, artifacts: Path, regressions: Path, jobs: int, minimize_seconds: float, echo: bool
    ) -> None:
        self.target, self.mode, self.work, self.seeds, self.artifacts, self.regressions = target, mode, work, seeds, artifacts, regressions
        self.jobs, self.minimize_seconds, self.echo = jobs, minimize_seconds, echo
        _recover(work)
        work.mkdir(parents=True, exist_ok=True)
        artifacts.mkdir(parents=True, exist_ok=True)
        if target == "steps":  # it knows only signatures with an expressible reproducer (fuzz/steps_triage.py)
            from fuzz.steps_triage import known_step_signatures

            self.known = known_step_signatures(regressions) | set(DEFAULT_IGNORE)
        else:
            self.known = Known.load(regressions).ignores() | set(DEFAULT_IGNORE)  # plain signatures and known (signature @ path) pairs
        self.confirm: list[str] | None = None
        self.ignore_file = artifacts / "ignore.txt"
        self._write_ignore()
        self.summary = Summary(target, mode.describe())
        self.ledger = Ledger(artifacts / "triaged.txt")
        self.checked: set[str] = set()  # artifacts triaged by this campaign
        self.started = time.time()
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _write_ignore(self) -> None:
        """The signatures the harness ignores; it reads them when it starts."""
        atomic_write(self.ignore_file, "\n".join(sorted(self.known)) + "\n")

    @property
    def prefix(self) -> str:
        """Artifact names start with it: the model's plain (crash-*), every other target's named."""
        return "" if self.target == "model" else f"{self.target}-"

    def triage_new(self, earlier: bool = False) -> None:
        """Triage every artifact not in the ledger (``earlier``: left by an interrupted campaign);
        new signatures join the ignore file, so harnesses started after a hit skip them. A model
        hit is saved as a regression, then ledgered; another target's artifact (crash, timeout or
        out-of-memory) is checked again once per campaign and reported while it still fails
        (ledgered when it passes: fixed)."""
        known = len(self.known)
        for art in sorted(self.ledger.pending(self.artifacts, self.prefix, self.target not in ("model", "steps")), key=lambda p: p.stat().st_mtime):
            if art.name in self.checked:
                continue
            self.checked.add(art.name)
            first_hit = -1.0 if earlier else max(0.0, art.stat().st_mtime - self.started)
            if self.target == "model":
                _triage(art, self.target, self.mode, self.summary, self.regressions, self.known, first_hit, self.minimize_seconds)
                self.ledger.add(art)
            elif self.target == "steps":
                from fuzz.steps_triage import triage_steps

                triage_steps(art, self.mode, self.summary, self.regressions, self.known, first_hit, self.minimize_seconds, self.confirm)
                self.ledger.add(art)
            elif _triage_surface(art, self.target, self.summary, first_hit, self.env()):
                self.ledger.add(art)
        if len(self.known) != known:
            self._write_ignore()

    def env(self) -> dict[str, str]:
        """The harness's environment: this campaign's mode and ignore file; libFuzzer's fork and
        merge modes re-execute argv[0], whose shebang must find this interpreter."""
        mode = self.mode
        return {
            **os.environ,
            "PATH": os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", ""))),
            "MHP_FUZZ_PROFILE": mode.profile,
            "MHP_FUZZ_VARIANT": mode.variant or "",
            "MHP_FUZZ_DIFF": mode.diff or "",
            "MHP_FUZZ_IGNORE": str(self.ignore_file),
            "MHP_FUZZ_HELD": f"{self.artifacts}/{self.prefix}" if self.target in ("model", "steps") else "",  # fuzz/hold.py
            "MHP_FUZZ_CAMPAIGN": str(os.getpid()),  # the harnesses and their fork-mode workers die with this process
        }

    def segment(self, seconds: int | None, runs: int | None, stop_on_first: bool) -> None:
        """Run libFuzzer once, triaging new artifacts while it runs, then the rest."""
        env = self.env()
        cmd = [sys.executable, str(HARNESSES[self.target]), *self.options(), "-print_final_stats=1"]
        if self.jobs > 1:  # a Python harness starts slowly: one job is faster without fork mode
            cmd += [f"-fork={self.jobs}", "-ignore_crashes=1"]
        if seconds:
            cmd.append(f"-max_total_time={seconds}")
        if runs:
            cmd.append(f"-runs={runs}")
        cmd += [str(self.work), str(self.seeds)]
        s = self.summary
        began, before = time.monotonic(), set(s.signatures)
        progress: Progress | None = None
        try:
            with child(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT) as proc:
                assert proc.stderr is not None
                progress = Progress(self, proc.stderr)  # read in a thread: a long triage must not block the harness on a full pipe
                progress.start()
                while proc.poll() is None:
                    with suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
                    self.triage_new()
                progress.join()
            if self.echo:
                print(file=sys.stderr)
            s.execs += progress.execs
            self.triage_new()
        finally:  # an interrupted campaign (SIGINT, SIGTERM) logs the executions of its last segment too
            record(self.artifacts, self.target, s.mode, progress.execs if progress else 0, time.monotonic() - began, set(s.signatures) - before)

    def options(self) -> list[str]:
        """libFuzzer flags of every run: where artifacts go, the memory and per-input time limits
        and the target's dictionary."""
        flags = [f"-artifact_prefix={self.artifacts}/{self.prefix}", f"-rss_limit_mb={RSS_LIMIT_MB}", f"-timeout={TIMEOUTS[self.target]}"]
        words = dictionary(self.target)
        if words:
            path = self.artifacts / f"{self.target}.dict"
            atomic_write(path, words)
            flags.append(f"-dict={path}")
        return flags

    def merge(self) -> None:
        """libFuzzer -merge=1 of the corpus and the seeds into a fresh directory, swapped in (one
        job runs without fork mode, which copies no seed into the corpus); inputs that crash the
        merge become artifacts and are triaged."""
        work = self.work
        merged = work.with_name(work.name + ".merged")
        shutil.rmtree(merged, ignore_errors=True)
        merged.mkdir()
        cmd = [sys.executable, str(HARNESSES[self.target]), "-merge=1", *self.options(), str(merged), str(work), str(self.seeds)]
        with child(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=self.env()) as proc:
            ok = proc.wait() == 0
        if ok and any(merged.iterdir()):
            old = work.with_name(work.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(work, old)
            os.replace(merged, work)
            shutil.rmtree(old, ignore_errors=True)
        else:
            shutil.rmtree(merged, ignore_errors=True)
        self.summary.merges += 1
        self.triage_new()


def campaign_totals(artifacts: Path) -> dict[str, Total]:
    """Every target's executions across the campaigns of ``artifacts`` (fuzz.totals) and its crash
    artifacts not yet seen to pass."""
    ledger = Ledger(artifacts / "triaged.txt")
    pending = {t: len(ledger.pending(artifacts, "" if t == "model" else f"{t}-", t != "model")) for t in HARNESSES}
    return totals(artifacts, {t: n for t, n in pending.items() if n})


class Ledger:
    """The crash artifacts already triaged (a file of names, rewritten atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.names = set(path.read_text().split()) if path.exists() else set()

    def pending(self, artifacts: Path, prefix: str = "", hangs: bool = False) -> list[Path]:
        """The artifacts named ``PREFIXcrash-*`` and ``PREFIXheld-*`` (fuzz/hold.py; ``hangs``, for
        the surface targets: ``crash``, ``timeout`` and ``oom``) not triaged yet."""
        kinds = ("crash", "timeout", "oom") if hangs else ("crash", "held")
        return [p for kind in kinds for p in artifacts.glob(f"{prefix}{kind}-*") if p.name not in self.names]

    def add(self, art: Path) -> None:
        self.names.add(art.name)
        atomic_write(self.path, "\n".join(sorted(self.names)) + "\n")


def _recover(work: Path) -> None:
    """A campaign killed between the two renames of a merge left the corpus in ``.old``: restore it."""
    old = work.with_name(work.name + ".old")
    if not work.exists() and old.exists():
        os.replace(old, work)


@contextmanager
def child(cmd: list[str], **kw: Any) -> Iterator[subprocess.Popen[Any]]:
    """A libFuzzer process that dies with this one: its own process group (killed when the block
    ends, fork-mode workers included) and PR_SET_PDEATHSIG (a SIGKILL of ``mhp fuzz`` kills it; the
    harnesses ask the same for themselves, so fork-mode workers follow)."""
    proc = subprocess.Popen(cmd, process_group=0, preexec_fn=die_with_parent, **kw)
    try:
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _triage_surface(art: Path, target: str, summary: Summary, first_hit: float, env: dict[str, str]) -> bool:
    """Check a surface target's artifact again: report it while it fails; True when it passes now
    (fixed). Crashes and timeouts run here (fuzz/surfaces.py, within the target's -timeout),
    out-of-memory artifacts in the harness under libFuzzer's -rss_limit_mb."""
    kind = art.name[len(target) + 1 :].split("-", 1)[0]
    sig, message = f"{target.upper()}-{kind.upper()}:{art.name}", f"libFuzzer {kind}"
    if kind == "oom":
        cmd = [sys.executable, str(HARNESSES[target]), f"-rss_limit_mb={RSS_LIMIT_MB}", f"-timeout={TIMEOUTS[target]}", str(art)]
        with child(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env) as proc:
            if proc.wait() == 0:
                return True
        message = f"takes more than {RSS_LIMIT_MB} MB"
    else:
        try:
            with deadline(time.monotonic() + TIMEOUTS[target]):
                TARGETS[target](art.read_bytes())
            return True
        except Budget:
            message = f"runs longer than {TIMEOUTS[target]} s"
        except Exception as e:
            frame = traceback.extract_tb(e.__traceback__)[-1]
            sig, message = f"{target.upper()}:{type(e).__name__}:{frame.name}", f"{type(e).__name__}: {e}"[:300]
    summary.signatures.setdefault(sig, {"first_hit_s": first_hit, "events": 0, "file": str(art), "message": message})
    return False


def _triage(art: Path, target: str, mode: Mode, summary: Summary, regressions: Path, known: set[str], first_hit: float, minimize_seconds: float) -> None:
    """Triage a crash artifact: each hit it raises past ``known``, in turn (the harness raised the
    first), is minimised and saved if its signature is new (then ignored for the rest of the
    campaign) or its minimised cause is not one the regressions of its signature have (fuzz.cause);
    a later hit of a signature this input already raised on a path just triaged is its consequence."""
    if target != "model":
        summary.signatures.setdefault(f"FORMAT:{art.name}", {"first_hit_s": first_hit, "events": 0, "file": str(art)})
        return
    events = decode(art.read_bytes())
    while events is not None and (hit := check_events(events, mode, frozenset(known))) is not None and hit.signature not in known:
        _triage_hit(events, hit, mode, summary, regressions, known, first_hit, minimize_seconds)


def _triage_hit(
    events: list[Any], hit: Hit, mode: Mode, summary: Summary, regressions: Path, known: set[str], first_hit: float, minimize_seconds: float
) -> None:
    """One hit of an artifact (fuzz.cause.classify); ``known`` learns its path."""
    sig, causes = hit.signature, Known.load(regressions)
    result, cause, new = classify(events, hit, mode, causes, known, minimize_seconds)
    if not new:
        summary.known_causes[sig] = summary.known_causes.get(sig, 0) + 1
        return
    assert result is not None and cause is not None
    known_sig = bool(causes.files.get(sig))
    note = f"{sig}: found by mhp fuzz ({mode.describe()}); {result.hit.message}. Minimised to {len(result.events)} events" + (
        " (1-minimal)." if result.one_minimal else "."
    )  # the message of the minimised trace: the numbers a replay of the saved file shows
    if known_sig:
        note += f" A new cause of a known signature: {cause.describe()}."
    name = causes.name(sig, safe_name(sig), lambda n: (regressions / f"{n}.json").exists())
    path = save_regression(regressions, sig, mode, result.events, note, name, cause.to_json())
    if not known_sig:  # a signature new to the regressions is reported once per campaign, as before: the next one looks at its other causes
        known.add(sig)
    key = f"{sig}__{name.rpartition('__')[2]}" if known_sig else sig
    summary.signatures[key] = {"first_hit_s": first_hit, "events": len(result.events), "file": str(path), "message": result.hit.message,
                               "signature": sig, "cause": cause.to_json(), "known_signature": known_sig}  # fmt: skip
