"""mhp replay --cluster against the real engine: a dask scheduler and worker processes on 127.0.0.1.

The fleet report over the real corpus plus a few hundred generated traces (and some bad ones) must
equal what ``mhp replay -j 1`` says about the same files; a worker killed mid-run and a client
killed mid-run lose nothing and count nothing twice; ``--results`` resumes.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from replay.cli import main
from replay.fleet import batch_size, expand, parse_cluster, run_fleet
from replay.generate import generate_trace
from traces.errors import TraceFormatError
from traces.events import Result
from traces.reader import TraceReader
from traces.writer import TraceWriter

ROOT = Path(__file__).resolve().parent.parent
REAL = sorted(glob.glob(str(ROOT / "corpus" / "real" / "*" / "*.mhpt")))
GENERATED = 300
WAIT = 60.0  # bound on every wait for a process of the cluster
FIGURES = ("traces", "events", "observations", "matched", "divergences", "findings", "failed", "errors")


# --- inputs -----------------------------------------------------------------------------------


def _rewrite(src: str, dst: str, chunk_records: int | None = None, bump_first_result: bool = False) -> None:
    """Copy a trace record by record; optionally small chunks, or the first result's rc changed (a divergence)."""
    with TraceReader(src) as r:
        header, records = r.header, list(r)
    with TraceWriter(dst, header, chunk_records=chunk_records) as w:
        bumped = not bump_first_result
        for rec in records:
            ev = rec.event
            if not bumped and type(ev) is Result:
                ev, bumped = Result(ev.rc - 1), True
            w.write(ev, ts=rec.ts)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The real corpus, GENERATED traces of both profiles, a diverging one, a damaged one, a non-trace, a missing file."""
    d = tmp_path_factory.mktemp("fleet")
    gen = d / "gen"
    gen.mkdir()
    for i in range(GENERATED):
        generate_trace(str(gen / f"host{i:04d}.mhpt"), 1000 + i, 40 + (i * 37) % 400, "6.12" if i % 3 == 0 else "6.1")
    _rewrite(str(gen / "host0001.mhpt"), str(gen / "diverged.mhpt"), bump_first_result=True)
    _rewrite(str(gen / "host0002.mhpt"), str(d / "cut.mhpt"), chunk_records=32)
    data = (d / "cut.mhpt").read_bytes()
    (gen / "zz-cut.mhpt").write_bytes(data[: len(data) * 2 // 3])
    (gen / "zz-not-a-trace.mhpt").write_bytes(b"this is not a trace\n" * 10)
    return [*REAL, *sorted(glob.glob(str(gen / "*.mhpt"))), str(d / "missing.mhpt")]


def mhp(*args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "replay.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    return p.returncode, p.stdout, p.stderr


def _release(path: str) -> str:
    try:
        with TraceReader(path) as r:
            return r.header.kernel_release
    except TraceFormatError:
        return ""


def _tally(table: dict[str, Any], key: str, n: int, first: dict[str, Any]) -> None:
    e = table.setdefault(key, {"count": 0, "traces": 0, "first": first})  # traces come in input order: the first stays
    e["count"] += n
    e["traces"] += 1


def expected_fleet(paths: list[str]) -> dict[str, Any]:
    """The fleet report as mhp replay -j 1 --json's per-trace results make it (computed here, independently)."""
    rc, out, _ = mhp("replay", "-j", "1", "--json", *paths)
    assert rc == 2  # the bad inputs
    doc = json.loads(out)
    groups: dict[str, dict[str, Any]] = {"by_release": {}, "by_profile": {}}
    sigs: dict[str, Any] = {}
    kinds: dict[str, Any] = {}
    errors = []
    for t in doc["traces"]:
        rel = _release(t["path"])
        bad, failed = t["error"] is not None, t["error"] is None and bool(t["divergence_count"] or t["finding_count"])
        row = {"traces": 1, "events": t["events"], "observations": t["observations"], "matched": t["matched"], "divergences": t["divergence_count"],
               "findings": t["finding_count"], "failed": int(failed), "errors": int(bad)}  # fmt: skip
        for name, key in (("by_release", rel or "unknown"), ("by_profile", t["profile"] or "unknown")):
            g = groups[name].setdefault(key, {"figures": Counter(), "kinds": Counter(), "sigs": Counter()})
            g["figures"].update(row)
            g["kinds"].update(t["divergences_by_kind"])
            g["sigs"].update(t["finding_signatures"])
        for sig, n in t["finding_signatures"].items():
            f = next(f for f in t["findings"] if f["signature"] == sig)
            _tally(sigs, sig, n, {"path": t["path"], "release": rel, "event_index": f["event_index"], "message": f["message"]})
        for kind, n in t["divergences_by_kind"].items():
            dv = next(d for d in t["divergences"] if d["kind"] == kind)
            _tally(kinds, kind, n, {"path": t["path"], "release": rel, "event_index": dv["index"], "event": dv["event"]})
        if bad:
            errors.append({"path": t["path"], "error": t["error"]})

    def group(g: dict[str, Any]) -> dict[str, Any]:
        by_kind, by_sig = dict(sorted(g["kinds"].items())), dict(sorted(g["sigs"].items()))
        return {**{k: g["figures"][k] for k in FIGURES}, "divergences_by_kind": by_kind, "finding_signatures": by_sig}

    totals = {k: doc["totals"][k] for k in (*FIGURES, "divergences_by_kind", "finding_signatures")}
    totals["divergences_by_kind"] = dict(sorted(totals["divergences_by_kind"].items()))
    totals["finding_signatures"] = dict(sorted(totals["finding_signatures"].items()))
    return {
        "totals": totals,
        **{name: {k: group(g) for k, g in sorted(groups[name].items())} for name in groups},
        "signatures": dict(sorted(sigs.items())),
        "divergence_kinds": dict(sorted(kinds.items())),
        "errors": errors,
    }


@pytest.fixture(scope="module")
def expected(fleet: list[str]) -> dict[str, Any]:
    return expected_fleet(fleet)


def report_of(out: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the fleet report without its run section, the run section)."""
    doc = json.loads(out)
    run = doc.pop("run")
    return doc, run


# --- the cluster: a real dask scheduler and workers on 127.0.0.1 ------------------------------


class DaskCluster:
    """``python -m distributed.cli.dask_scheduler`` and ``dask_worker`` processes; always torn down."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.file = directory / "scheduler.json"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.address = ""

    def _start(self, name: str, module: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.directory / f"{name}.log", "wb")  # noqa: SIM115 - the process holds it
        p = subprocess.Popen([sys.executable, "-m", module, *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        log.close()
        self.procs[name] = p
        return p

    def start_scheduler(self) -> None:
        self._start("scheduler", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(self.file), "--idle-timeout", "600")  # fmt: skip
        deadline = time.monotonic() + WAIT
        while not self.file.exists() or not self.file.read_text().strip():
            assert self.procs["scheduler"].poll() is None, (self.directory / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the dask scheduler did not write its address"
            time.sleep(0.05)
        self.address = json.loads(self.file.read_text())["address"]

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        return self._start(name, "distributed.cli.dask_worker", "--scheduler-file", str(self.file), "--nthreads", "1", "--no-nanny",
                           "--no-dashboard", "--host", "127.0.0.1", "--name", name, "--death-timeout", "60")  # fmt: skip

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaskCluster, Client]]:
    c = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        c.start_scheduler()
        c.start_worker("w1")
        c.start_worker("w2")
        with Client(c.address, timeout=WAIT) as client:
            client.wait_for_workers(2, timeout=WAIT)
            yield c, client
    finally:
        c.close()


def _names(client: Client) -> set[str]:
    return {w["name"] for w in client.scheduler_info()["workers"].values()}


# --- tests ------------------------------------------------------------------------------------


def test_fleet_report_on_a_scheduler_and_two_workers_equals_replay_j1(cluster: tuple[DaskCluster, Client], fleet: list[str], expected: dict[str, Any]) -> None:
    c, client = cluster
    assert _names(client) == {"w1", "w2"}
    gen = os.path.dirname(fleet[len(REAL)])
    # a glob, a directory and a missing file: expanded to exactly the -j 1 inputs, in that order
    rc, out, err = mhp("replay", "--cluster", c.address, "--json", str(ROOT / "corpus" / "real" / "*" / "*.mhpt"), gen, fleet[-1])
    assert rc == 2, err
    got, run = report_of(out)
    assert got == expected
    t = got["totals"]
    assert t["traces"] == len(fleet) == len(REAL) + GENERATED + 4 and t["errors"] == 3 and t["divergences"] >= 1
    real_releases = set()
    for path in REAL:
        with TraceReader(str(path)) as r:
            real_releases.add(r.header.kernel_release)
    assert set(got["by_release"]) >= real_releases | {"6.1.192", "6.12.117", "unknown"}
    assert got["divergence_kinds"]["errno"]["first"]["path"].endswith("gen/diverged.mhpt")
    assert [e["path"] for e in got["errors"]] == [fleet[-3], fleet[-2], fleet[-1]]
    assert run["workers"] == 2 and run["replayed"] == len(fleet) and run["skipped"] == 0
    # the text summary says the same
    rc, text, _ = mhp("replay", "--cluster", c.address, *fleet)
    assert rc == 2
    assert f"fleet: {t['traces']:,} traces, {t['events']:,} events" in text
    assert "traces that could not be read (3):" in text and "zz-not-a-trace.mhpt" in text and "cannot open" in text
    assert "by kernel release:" in text and "6.12.117+deb12-amd64" in text and "finding signatures:" in text


def test_a_worker_killed_mid_run_loses_nothing_and_doubles_nothing(
    cluster: tuple[DaskCluster, Client], fleet: list[str], expected: dict[str, Any], tmp_path: Path
) -> None:
    c, client = cluster
    victim = c.start_worker("victim")
    deadline = time.monotonic() + WAIT
    while "victim" not in _names(client):
        assert time.monotonic() < deadline, "the third worker did not join"
        time.sleep(0.05)
    address = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "victim")
    held: list[Any] = []

    def kill_when_busy() -> None:  # kill -9 the victim while the scheduler has tasks processing on it
        end = time.monotonic() + WAIT
        while time.monotonic() < end and victim.poll() is None:
            keys = client.processing([address]).get(address, [])
            if keys:
                held.extend(keys)
                victim.send_signal(signal.SIGKILL)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        rc, out, err = mhp("replay", "--cluster", c.address, "--json", "--results", str(tmp_path / "res"), *fleet)
    finally:
        killer.join(timeout=WAIT)
    assert victim.wait(timeout=WAIT) == -signal.SIGKILL and held, "the victim was not killed while it held tasks"
    assert rc == 2, err
    got, run = report_of(out)
    assert got == expected
    assert run["replayed"] == len(fleet) and run["workers"] == 3
    # every batch the victim held was finished elsewhere: each input counted once, one result file each
    # (the missing file has none: it is retried on a rerun)
    assert len(list((tmp_path / "res").glob("*.json"))) == len(fleet) - 1
    deadline = time.monotonic() + WAIT
    while "victim" in _names(client):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert _names(client) == {"w1", "w2"}
    # the scheduler's own log: each task the victim held went to processing again and finished elsewhere
    story = client.run_on_scheduler(lambda dask_scheduler: [(t[0], t[1], t[2]) for k in held for t in dask_scheduler.story(k)])
    for key in held:
        steps = [(start, finish) for k, start, finish in story if k == key]
        assert sum(finish == "processing" for _, finish in steps) >= 2 and ("processing", "memory") in steps, steps


def test_a_killed_client_loses_nothing_that_finished(cluster: tuple[DaskCluster, Client], fleet: list[str], expected: dict[str, Any], tmp_path: Path) -> None:
    c, _ = cluster
    res = tmp_path / "res"
    p = subprocess.Popen([sys.executable, "-m", "replay.cli", "replay", "--cluster", c.address, "--json", "--results", str(res), *fleet],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + WAIT
        while p.poll() is None and len(list(res.glob("*.json"))) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait(timeout=WAIT)
    stored = {f.name for f in res.glob("*.json")}
    assert p.returncode == -signal.SIGKILL and 20 <= len(stored) < len(fleet) - 1, len(stored)
    for f in res.glob("*.json"):
        json.loads(f.read_text())  # atomic: every file whole
    rc, out, _ = mhp("replay", "--cluster", c.address, "--json", "--results", str(res), *fleet)
    got, run = report_of(out)
    assert rc == 2 and got == expected
    assert run["skipped"] == len(stored) and run["replayed"] == len(fleet) - len(stored)


def test_local_cluster_over_file_urls_resumes_from_results(fleet: list[str], tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    for p in [*fleet[:20], *fleet[len(REAL) : len(REAL) + 20]]:  # real traces (of both kernels: names repeat) and generated ones
        (traces / os.path.basename(p)).write_bytes(Path(p).read_bytes())
    res = tmp_path / "res"
    url = f"file://{traces}/*.mhpt"
    rc, out, err = mhp("replay", "--cluster", "local:2", "--json", "--results", str(res), url)
    first, run = report_of(out)
    n = len(list(traces.iterdir()))
    assert rc == 1, err
    assert run["workers"] == 2 and run["replayed"] == n and run["skipped"] == 0 and len(list(res.glob("*.json"))) == n
    assert first["totals"]["traces"] == n and all(e["first"]["path"].startswith("file://") for e in first["signatures"].values())
    # a rerun replays nothing: same path, same content
    rc, out, _ = mhp("replay", "--cluster", "local:2", "--json", "--results", str(res), url)
    again, run = report_of(out)
    assert rc == 1 and again == first and run["skipped"] == n and run["replayed"] == 0
    # a trace whose content changed is replayed again; the others are not
    generate_trace(str(traces / "host0005.mhpt"), 7, 100)
    rc, out, _ = mhp("replay", "--cluster", "local:2", "--json", "--results", str(res), url)
    changed, run = report_of(out)
    assert run["skipped"] == n - 1 and run["replayed"] == 1
    assert changed["totals"]["traces"] == n and changed["totals"]["events"] != first["totals"]["events"]
    # other replay options are other results
    rc, out, _ = mhp("replay", "--cluster", "local:1", "--json", "--results", str(res), "--profile", "6.12", url)
    assert report_of(out)[1]["replayed"] == n


def test_progress_comes_from_the_futures_as_they_complete(cluster: tuple[DaskCluster, Client], capsys: pytest.CaptureFixture[str]) -> None:
    c, _ = cluster
    report = run_fleet(REAL, c.address, progress=True)
    err = capsys.readouterr().err
    assert f"fleet:   0%|          | 0/{len(REAL)}" in err and "trace/s" in err
    assert report.total.figures["traces"] == len(REAL) and report.run["replayed"] == len(REAL)


def test_fleet_plot(fleet: list[str], expected: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "fleet.json"
    report.write_text(json.dumps({**expected, "run": {}}))
    out = tmp_path / "fleet.png"
    assert main(["plot", "--fleet", str(report), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert main(["plot", "--fleet", fleet[0], "-o", str(out)]) == 2  # a trace is not a report
    assert "not JSON" in capsys.readouterr().err
    report.write_text("{}")
    assert main(["plot", "--fleet", str(report), "-o", str(out)]) == 2
    assert "not a fleet report" in capsys.readouterr().err


def test_fleet_arguments_and_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["replay", "--cluster", "local:0", REAL[0]], "expected local or local:N"),
        (["replay", "--cluster", "somewhere", REAL[0]], "tcp://HOST:PORT"),
        (["replay", "--cluster", "local:2", "-j", "2", REAL[0]], "-j and --cluster"),
        (["replay", "--results", str(tmp_path), REAL[0]], "--results needs --cluster"),
        (["replay", "--cluster", "local:1", "-"], "standard input"),
        (["replay", "--cluster", "local:1", str(tmp_path / "*.mhpt")], "no trace matches"),
        (["replay", "--cluster", "local:1", "nosuch://bucket/x.mhpt"], "Protocol not known"),
        (["plot", "-o", str(tmp_path / "x.png")], "give a TRACE or --fleet"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    if importlib.util.find_spec("s3fs") is None:  # the s3 extra is not installed: the error names it
        with pytest.raises(ValueError, match=r"s3:// protocol needs an fsspec package .*mhp-replay\[s3\]"):
            expand(["s3://bucket/fleet/*.mhpt"])
    else:  # installed: a plain object URL is taken as it is, for a worker to open
        assert [s.url for s in expand(["s3://bucket/host1.mhpt"])] == ["s3://bucket/host1.mhpt"]
    assert parse_cluster("local") == ("local", None) and parse_cluster("local:3") == ("local", 3)
    assert parse_cluster("tcp://10.0.0.1:8786") == ("tcp://10.0.0.1:8786", None)
    assert [batch_size(n, 2) for n in (1, 8, 9, 100, 1000, 10**6)] == [1, 1, 2, 13, 64, 64]
    # duplicates are replayed once; a directory is its *.mhpt files, recursively
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.mhpt", "a/b/y.mhpt", "a/b/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    got = [s.path for s in expand([str(tmp_path / "a"), str(tmp_path / "a" / "x.mhpt")])]
    assert got == [str(tmp_path / "a" / "b" / "y.mhpt"), str(tmp_path / "a" / "x.mhpt")]
    assert [s.url for s in expand([f"file://{tmp_path}/a"])] == [f"file://{tmp_path}/a/b/y.mhpt", f"file://{tmp_path}/a/x.mhpt"]
