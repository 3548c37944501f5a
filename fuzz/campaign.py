"""``mhp fuzz``: run the atheris harnesses under libFuzzer, de-duplicate hits by signature,
minimise each new one and save it as a regression (trace, text form, ready-to-paste pytest).

The working corpus persists (a campaign resumes from it) and is merged at the end; artifacts and
regressions are written atomically, so a killed campaign loses nothing it had saved.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzz.check import Mode, check_events, decode
from fuzz.minimize import Minimizer
from fuzz.mutator import encode
from traces.reader import read_trace
from traces.text import dump

ROOT = Path(__file__).resolve().parent.parent
HARNESSES = {"model": ROOT / "fuzz" / "model_fuzzer.py", "format": ROOT / "fuzz" / "trace_format_fuzzer.py"}
# Requests the kernel API forbids are the caller's bug, not the kernel's: not worth a regression.
DEFAULT_IGNORE = ("API-MISUSE:remove",)
STATUS = re.compile(r"#(\d+):?\s+(?:\w+\s+)?cov: (\d+) ft: (\d+) corp: (\d+)\S* .*?exec/s:? (\d+)")


@dataclass(slots=True)
class Summary:
    """What a campaign did."""

    target: str
    mode: str
    seconds: float = 0.0
    execs: int = 0
    corpus: int = 0
    signatures: dict[str, dict[str, Any]] = field(default_factory=dict)  # signature -> first hit, file, minimised size

    @property
    def exec_per_s(self) -> float:
        return self.execs / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        out = [f"{self.target} fuzzing ({self.mode}): {self.execs} execs in {self.seconds:.0f} s ({self.exec_per_s:.0f}/s), corpus {self.corpus}"]
        out.append(f"unique signatures: {len(self.signatures)}")
        for sig, info in sorted(self.signatures.items(), key=lambda kv: kv[1]["first_hit_s"]):
            out.append(f"  {sig}: first hit after {info['first_hit_s']:.1f} s, {info['events']} events after minimising -> {info['file']}")
        return out


def safe_name(signature: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", signature)


def atomic_write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def known_signatures(regressions: Path) -> set[str]:
    sigs = set()
    for meta in regressions.glob("*.json"):
        sigs.add(json.loads(meta.read_text())["signature"])
    return sigs


def save_regression(regressions: Path, signature: str, mode: Mode, events: list[Any], note: str) -> Path:
    """Write <sig>.mhpt, its text form, a metadata file and a ready-to-paste pytest."""
    name = safe_name(signature)
    data = encode(events)
    trace = regressions / f"{name}.mhpt"
    atomic_write(trace, data)
    header, records = read_trace(data)
    atomic_write(regressions / f"{name}.txt", "".join(dump(header, records)))
    meta = {"signature": signature, "profile": mode.profile, "variant": mode.variant, "diff": mode.diff, "note": note}
    atomic_write(regressions / f"{name}.json", json.dumps(meta, indent=1) + "\n")
    test = f'''def test_{re.sub(r"[^a-z0-9]+", "_", name.lower())}() -> None:
    """{note}"""
    from fuzz.check import Mode, check_input

    data = open("corpus/regressions/{name}.mhpt", "rb").read()
    hit = check_input(data, Mode({mode.profile!r}, {mode.variant!r}, {mode.diff!r}))
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
    corpus: Path = ROOT / "corpus" / "fuzz",
    seeds: Path = ROOT / "corpus" / "seeds",
    artifacts: Path = ROOT / "fuzz-artifacts",
    regressions: Path = ROOT / "corpus" / "regressions",
    mode: Mode | None = None,
    minimize_seconds: float = 30.0,
    stop_on_first: bool = False,
    echo: bool = True,
) -> Summary:
    """One campaign; returns its summary (hits already saved)."""
    mode = mode or Mode()
    work = corpus / target
    work.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    known = known_signatures(regressions) | set(DEFAULT_IGNORE)
    ignore_file = artifacts / "ignore.txt"
    atomic_write(ignore_file, "\n".join(sorted(known)) + "\n")
    # libFuzzer's fork and merge modes re-execute argv[0]: its shebang must find this interpreter
    env = {
        **os.environ,
        "PATH": os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", ""))),
        "MHP_FUZZ_PROFILE": mode.profile,
        "MHP_FUZZ_VARIANT": mode.variant or "",
        "MHP_FUZZ_DIFF": mode.diff or "",
        "MHP_FUZZ_IGNORE": str(ignore_file),
    }
    cmd = [sys.executable, str(HARNESSES[target]), f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]
    if jobs > 1:
        cmd += [f"-fork={jobs}", "-ignore_crashes=1"]
    elif not stop_on_first:
        cmd += ["-fork=1", "-ignore_crashes=1"]
    if seconds:
        cmd.append(f"-max_total_time={seconds}")
    if runs:
        cmd.append(f"-runs={runs}")
    cmd += [str(work), str(seeds)]
    summary = Summary(target, mode.describe())
    before = set(artifacts.glob("crash-*"))
    t0 = time.monotonic()
    started = time.time()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    assert proc.stderr is not None
    last = 0.0
    for line in proc.stderr:
        m = STATUS.search(line)
        if m:
            summary.execs = max(summary.execs, int(m.group(1)))
            summary.corpus = int(m.group(4))
            if echo and time.monotonic() - last > 2:
                last = time.monotonic()
                print(
                    f"\r[{time.monotonic() - t0:5.0f}s] execs {summary.execs} exec/s {m.group(5)} corpus {summary.corpus} cov {m.group(2)}",
                    end="",
                    file=sys.stderr,
                )
        m = re.search(r"stat::number_of_executed_units: (\d+)", line) or re.search(r"Done (\d+) runs", line)
        if m:
            summary.execs = max(summary.execs, int(m.group(1)))
    proc.wait()
    summary.seconds = time.monotonic() - t0
    if echo:
        print(file=sys.stderr)
    for art in sorted(set(artifacts.glob("crash-*")) - before, key=lambda p: p.stat().st_mtime):
        _triage(art, target, mode, summary, regressions, known, max(0.0, art.stat().st_mtime - started), minimize_seconds)
    _merge(target, work)
    summary.corpus = len(list(work.iterdir()))
    return summary


def _triage(art: Path, target: str, mode: Mode, summary: Summary, regressions: Path, known: set[str], first_hit: float, minimize_seconds: float) -> None:
    """Signature of a crash artifact; minimise and save it if it is new."""
    if target != "model":
        summary.signatures.setdefault(f"FORMAT:{art.name}", {"first_hit_s": first_hit, "events": 0, "file": str(art)})
        return
    events = decode(art.read_bytes())
    hit = None if events is None else check_events(events, mode, frozenset(DEFAULT_IGNORE))
    if hit is None or hit.signature in known:
        return
    known.add(hit.signature)
    assert events is not None
    result = Minimizer(mode, hit.signature, max_seconds=minimize_seconds, ignore=frozenset(DEFAULT_IGNORE)).run(events)
    note = f"{hit.signature}: found by mhp fuzz ({mode.describe()}); {hit.message}. Minimised to {len(result.events)} events" + (
        " (1-minimal)." if result.one_minimal else "."
    )
    path = save_regression(regressions, hit.signature, mode, result.events, note)
    summary.signatures[hit.signature] = {"first_hit_s": first_hit, "events": len(result.events), "file": str(path), "message": hit.message}


def _merge(target: str, work: Path) -> None:
    """libFuzzer -merge=1 into a fresh directory, then swap it in (keeps the corpus minimal)."""
    merged = work.with_name(work.name + ".merged")
    shutil.rmtree(merged, ignore_errors=True)
    merged.mkdir()
    rc = subprocess.run([sys.executable, str(HARNESSES[target]), "-merge=1", str(merged), str(work)], capture_output=True, cwd=ROOT).returncode
    if rc == 0 and any(merged.iterdir()):
        old = work.with_name(work.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(work, old)
        os.replace(merged, work)
        shutil.rmtree(old, ignore_errors=True)
    else:
        shutil.rmtree(merged, ignore_errors=True)
