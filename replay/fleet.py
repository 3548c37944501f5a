"""``mhp replay --cluster``: a fleet's traces replayed on Dask workers into one fleet report.

Inputs are paths, globs, directories (their ``*.mhpt`` files) and fsspec URLs (``file://``,
``s3://`` with ``pip install 'mhp-replay[s3]'``, ...). The client only lists them; each worker
opens its traces itself and replays them with ``replay_file``, so traces stream from storage to the
worker that replays them. The client keeps a bounded number of batches in flight and merges each
trace's summary into a ``FleetReport`` as it arrives; ``--results DIR`` stores the summaries so
that a rerun skips what is done. A batch lost with a killed worker is replayed elsewhere by Dask;
each input index is merged at most once.
"""

from __future__ import annotations

import gc
import glob
import hashlib
import importlib
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from replay.fleet_report import FleetReport, summarise
from replay.fleet_store import ResultStore
from replay.replayer import replay_file
from replay.report import TraceResult
from traces.errors import TraceFormatError
from traces.header import FIXED_HEADER_SIZE, parse_fixed_header, parse_header

_GLOB = re.compile(r"[*?[]")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(::[A-Za-z][A-Za-z0-9+.-]*)*://")
HASH_BLOCK = 1 << 20
GUIDE = 4  # guided self-scheduling: a batch is the traces not yet submitted / (GUIDE x worker threads) ...
MAX_BATCH = 64  # ... but no more than this: large batches early (few tasks), small ones at the end (no long tail)
IN_FLIGHT_PER_THREAD = 4  # batches submitted and not yet merged, per worker thread
LOG_LENGTH = 50  # entries of Dask's low-level logs (recent messages, transitions) in this process


@dataclass(frozen=True, slots=True)
class Source:
    """One input trace: ``path`` as reports name it, ``url`` what a worker opens."""

    path: str
    url: str


# --- inputs (client side) ---------------------------------------------------------------------


def expand(args: list[str]) -> list[Source]:
    """Paths, globs, directories and fsspec URLs -> traces, in argument order, each once."""
    out: dict[str, Source] = {}
    for arg in args:
        if arg == "/dev/stdin":
            raise ValueError("standard input (-) cannot be replayed on a cluster: give paths or URLs")
        found = _expand_url(arg) if _URL.match(arg) else _expand_local(arg)
        if not found:
            raise FileNotFoundError(f"{arg}: no trace matches")
        for s in found:
            out.setdefault(s.path, s)
    return list(out.values())


def _expand_local(arg: str) -> list[Source]:
    if os.path.isdir(arg):
        names = sorted(glob.glob(os.path.join(glob.escape(arg), "**", "*.mhpt"), recursive=True))
    elif _GLOB.search(arg) and not os.path.exists(arg):
        names = sorted(glob.glob(arg, recursive=True))
    else:
        names = [arg]  # a missing file is the worker's "cannot open" error, as for mhp replay
    return [Source(n, os.path.abspath(n)) for n in names]


def _expand_url(arg: str) -> list[Source]:
    fs, path = _filesystem(arg)
    protocol = arg.split("://", 1)[0]
    if _GLOB.search(path):
        names = sorted(fs.glob(path))
    elif fs.isdir(path):
        names = sorted(p for p in fs.find(path) if p.endswith(".mhpt"))
    else:
        return [Source(arg, arg)]
    urls = [_unstrip(protocol, fs, n) for n in names]
    return [Source(u, u) for u in urls]


def _unstrip(protocol: str, fs: Any, name: str) -> str:
    if "::" in protocol:  # a chained URL (simplecache::s3://...): keep the chain
        return f"{protocol.rsplit('::', 1)[0]}::{fs.unstrip_protocol(name)}"
    return str(fs.unstrip_protocol(name))


def _filesystem(url: str) -> tuple[Any, str]:
    """fsspec's filesystem for ``url``; ValueError naming the package a protocol needs."""
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(url)  # type: ignore[no-any-return]
    except ImportError as e:
        protocol = url.split("://", 1)[0].rsplit("::", 1)[-1]
        extra = " (pip install 'mhp-replay[s3]')" if protocol in ("s3", "s3a") else ""
        raise ValueError(f"{url}: the {protocol}:// protocol needs an fsspec package that is not installed: {e}{extra}") from None
    except ValueError as e:
        raise ValueError(f"{url}: {e}") from None


# --- one trace (worker side) -----------------------------------------------------------------


class _Named:
    """A binary file that reports under the trace's input name (error messages name what was given)."""

    def __init__(self, f: Any, name: str) -> None:
        self.f = f
        self.name = name

    def read(self, n: int = -1) -> bytes:
        return self.f.read(n)  # type: ignore[no-any-return]

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.f.seek(pos, whence)  # type: ignore[no-any-return]

    def tell(self) -> int:
        return self.f.tell()  # type: ignore[no-any-return]

    def seekable(self) -> bool:
        return bool(self.f.seekable())

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> _Named:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(url: str) -> BinaryIO:
    """Open a local path or an fsspec URL for reading."""
    if not _URL.match(url):
        return open(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()  # type: ignore[no-any-return]


def content_digest(f: BinaryIO) -> str:
    """blake2b-128 of the file's bytes, read from its start in blocks."""
    h = hashlib.blake2b(digest_size=16)
    f.seek(0)
    while block := f.read(HASH_BLOCK):
        h.update(block)
    return h.hexdigest()


def kernel_release(f: BinaryIO) -> str:
    """The kernel release the trace's header names ("" if the header cannot be read)."""
    f.seek(0)
    try:
        head = f.read(FIXED_HEADER_SIZE)
        length = parse_fixed_header(head)[2]
        return parse_header(head + f.read(length - len(head))).kernel_release
    except (TraceFormatError, ValueError):
        return ""


def failed(path: str, why: str) -> dict[str, Any]:
    """The summary of a trace that could not be replayed at all."""
    return summarise(TraceResult(path, error=str(TraceFormatError(why, path=path))).to_json(), "", "")


def replay_source(path: str, url: str, known: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """Open, digest and replay one trace; ``{"path", "digest", "skipped": True}`` if its digest is ``known``."""
    try:
        f = open_source(url)
    except (OSError, ValueError, ImportError) as e:
        return failed(path, f"cannot open: {getattr(e, 'strerror', None) or e}")
    with cast(BinaryIO, _Named(f, path)) as source:
        try:
            digest = content_digest(source)
        except OSError as e:
            return failed(path, f"cannot read: {e.strerror or e}")
        if digest == known:
            return {"path": path, "digest": digest, "skipped": True}
        release = kernel_release(source)
        source.seek(0)
        try:
            result = replay_file(path, source=source, **options)
        except OSError as e:  # storage went away mid-trace: this trace is unreadable, the batch goes on
            return failed(path, f"cannot read: {e.strerror or e}")
        except Exception as e:  # a bug of the replayer: reported against this trace only (mhp replay -j 1 would stop)
            return failed(path, f"the replay raised {type(e).__name__}: {e}")
    return summarise(result.to_json(), release, digest)


def replay_batch(batch: list[tuple[str, str, str | None]], options: dict[str, Any]) -> list[dict[str, Any]]:
    """The Dask task: several traces, one summary each, in batch order."""
    return [replay_source(path, url, known, options) for path, url, known in batch]


# --- the cluster (client side) ---------------------------------------------------------------


def parse_cluster(spec: str) -> tuple[str, int | None]:
    """``local[:N]`` -> ("local", N or None); ``tcp://HOST:PORT`` (any Dask address) -> (address, None)."""
    if spec == "local" or spec.startswith("local:"):
        n = spec[6:]
        if spec != "local" and not (n.isdigit() and int(n) >= 1):
            raise ValueError(f"--cluster {spec}: expected local or local:N with N >= 1 workers")
        return "local", int(n) if n else None
    if re.match(r"^(tcp|tls|inproc|ucx|ws|wss)://[^/]+$", spec):
        return spec, None
    raise ValueError(f"--cluster {spec}: expected local, local:N or a scheduler address such as tcp://HOST:PORT")


@contextmanager
def connect(spec: str, connect_timeout: float = 10.0) -> Iterator[Any]:
    """A Dask client: on a new LocalCluster of N single-threaded worker processes, or a running scheduler.

    Dask's developer logs of recent messages are kept short (LOG_LENGTH): at their default length
    (1,000) the client's would hold the last thousand batches it submitted, traces and all."""
    import dask
    from distributed import Client, LocalCluster

    address, n = parse_cluster(spec)
    with dask.config.set({"distributed.admin.low-level-log-length": LOG_LENGTH}):
        if address == "local":
            workers = n or os.cpu_count() or 1
            local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.CRITICAL)
            with local as cluster, Client(cluster) as client:
                yield client
            return
        try:
            remote = Client(address, timeout=connect_timeout)
        except (OSError, TimeoutError) as e:
            raise ValueError(f"--cluster {spec}: cannot reach the scheduler: {e}") from None
        with remote as client:
            try:
                client.wait_for_workers(1, timeout=connect_timeout)
            except TimeoutError:
                raise ValueError(f"--cluster {spec}: the scheduler has no workers (waited {connect_timeout:.0f} s)") from None
            yield client


def batch_size(remaining: int, threads: int) -> int:
    """Traces in the next task when ``remaining`` are not yet submitted: guided self-scheduling, so that
    early tasks amortise Dask's cost per task (a few ms of client and scheduler time) and the last
    ones are small enough for every thread to finish at about the same time."""
    return max(1, min(MAX_BATCH, -(-remaining // max(1, threads * GUIDE))))


def run_fleet(
    args: list[str],
    cluster: str,
    *,
    results: str | None = None,
    options: dict[str, Any] | None = None,
    progress: bool = False,
    batch: int | None = None,
) -> FleetReport:
    """Replay every trace ``args`` name on ``cluster`` and merge them into one report."""
    options = dict(options or {})
    sources = expand(args)
    store = ResultStore(results, options) if results else None
    t0 = time.perf_counter()
    with connect(cluster) as client:
        prepare_workers(client, freeze=parse_cluster(cluster)[0] == "local")
        startup = time.perf_counter() - t0
        report = replay_on(client, sources, store=store, options=options, progress=progress, batch=batch)
    report.run = {"cluster": cluster, **report.run, "startup_seconds": round(startup, 3)}
    return report


def prepare_workers(client: Any, freeze: bool) -> None:
    """Load the replayer on every worker now rather than in its first task; ``freeze``: see prepare_worker."""
    client.run(prepare_worker, freeze)


def prepare_worker(freeze: bool) -> None:
    """On a worker: import the replayer; ``freeze`` (workers we started): ``gc.freeze()`` takes the
    worker's objects so far out of the garbage collector's scans: a Dask worker's heap is more than
    twice a replay process's, and scanning it cost about 10% of replay time."""
    importlib.import_module(__name__)
    if freeze:
        gc.collect()
        gc.freeze()


def replay_on(
    client: Any,
    sources: list[Source],
    *,
    store: ResultStore | None = None,
    options: dict[str, Any] | None = None,
    progress: bool = False,
    batch: int | None = None,
) -> FleetReport:
    """Replay ``sources`` on the workers of ``client`` into a report; ``report.run`` says how it went."""
    options = dict(options or {})
    workers = client.scheduler_info()["workers"]
    threads = sum(w["nthreads"] for w in workers.values()) or 1
    report = FleetReport()
    t0 = time.perf_counter()
    figures = _drive(client, sources, store, options, report, batch, threads, progress)
    seconds = time.perf_counter() - t0
    report.run = {
        "workers": len(workers),
        "threads": threads,
        "traces": len(sources),
        **figures,
        "seconds": round(seconds, 3),
        "events_per_s": round(figures["events"] / seconds) if seconds else 0,
    }
    del report.run["events"]
    return report


def _drive(
    client: Any, sources: list[Source], store: ResultStore | None, options: dict[str, Any], report: FleetReport, batch: int | None, threads: int, progress: bool
) -> dict[str, int]:
    """Submit batches (``batch`` traces each, default batch_size), IN_FLIGHT_PER_THREAD per thread at a
    time; merge (and store) each trace once as its batch completes. Returns replayed, skipped, events, tasks, largest batch."""
    from distributed import as_completed

    done = bytearray(len(sources))
    pending: dict[str, tuple[int, list[dict[str, Any] | None]]] = {}  # future key -> (first index, stored summaries)
    queue = as_completed([], with_results=False)
    bar = _bar(len(sources), progress)
    figures = {"replayed": 0, "skipped": 0, "events": 0, "tasks": 0, "batch": 0}
    submitted = 0
    run = f"mhp-replay-{uuid.uuid4().hex}"

    def submit() -> None:
        nonlocal submitted
        start = submitted
        if start >= len(sources):
            return
        size = batch or batch_size(len(sources) - start, threads)
        submitted = min(len(sources), start + size)
        figures["tasks"] += 1
        figures["batch"] = max(figures["batch"], size)
        chunk = sources[start:submitted]
        stored = [store.load(s.path) if store else None for s in chunk]
        work = [(s.path, s.url, st["digest"] if st else None) for s, st in zip(chunk, stored, strict=True)]
        future = client.submit(replay_batch, work, options, key=(run, start))  # one task group per run: the scheduler's records stay small
        pending[future.key] = (start, stored)
        queue.add(future)

    for _ in range(IN_FLIGHT_PER_THREAD * threads):
        submit()
    for future in queue:
        start, stored = pending.pop(future.key)
        try:
            summaries = future.result()
        except Exception as e:  # the batch failed on the cluster (e.g. its workers kept dying): an error per trace, not stored
            why = f"replay failed on the cluster: {type(e).__name__}: {e}"
            summaries = [failed(sources[i].path, why) for i in range(start, start + len(stored))]
        future.release()
        for i, (s, st) in enumerate(zip(summaries, stored, strict=True), start):
            if done[i]:
                continue
            done[i] = 1
            if s.get("skipped") and st is not None:
                s = st
                figures["skipped"] += 1
            else:
                figures["replayed"] += 1
                figures["events"] += s["events"]
                if store and s["digest"]:
                    store.save(s)
            report.add(i, s)
        if bar:
            bar.update(len(summaries))
        submit()
    if bar:
        bar.close()
    return figures


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="fleet", unit="trace", leave=False, file=sys.stderr)
