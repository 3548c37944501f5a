"""Booted guests kept as QEMU migration streams: boot once per configuration, restore for every run.

A snapshot is the migration stream (``migrate exec:cat > FILE``) of a guest that booted and settled (two equal
samples in a row), taken before anything else happened in it: no DIMM, every virtio-mem device at size 0, the
recorder not started. A run restores it with ``-incoming exec:cat FILE`` into a fresh QEMU whose chardevs live in a
new work folder, so the trace port writes into a new file each time (the recorder starts after the restore). The
snapshot key is the whole QEMU command line (kernel, initramfs, machine preset, kernel command line, devices) with
the work folder left out, and the QEMU version: another configuration boots its own snapshot.

After a restore the guest's clock still reads the snapshot's time (the trace header's wall time comes from it), so
it is set from the host's; a ``vmgenid`` device, whose id QEMU makes anew at every start, makes the guest kernel
reseed its random generator on restore (drivers/virt/vmgenid.c), so restored guests do not share random numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from traces.atomic import atomic_write
from traces.lab.qemu import QEMU, Guest, GuestConfig, LabError, qemu_command
from traces.lab.run import LabRun
from traces.lab.setup import cache_dir
from traces.scenario import Scenario

VMGENID = ("-device", "vmgenid,guid=auto")
KEEP = 24  # snapshots kept in the cache (about 250 MB each; the corpus seeds have 19 configurations); the least recently used go first
MIGRATE_MAX_S = 120.0


def snapshot_dir() -> Path:
    """Where snapshots are cached: next to the kernels."""
    return cache_dir().parent / "snapshots"


def snapshot_config(cfg: GuestConfig) -> GuestConfig:
    """The configuration a snapshot boots and every restore runs (the guest's with the vmgenid device)."""
    return cfg if VMGENID[1] in cfg.extra_args else dataclasses.replace(cfg, extra_args=(*cfg.extra_args, *VMGENID))


@functools.cache
def qemu_version() -> str:
    """The first line of ``qemu-system-x86_64 --version`` (a stream loads only into the QEMU that wrote it)."""
    try:
        out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise LabError(f"{QEMU} --version: {e}") from None
    return out.splitlines()[0] if out else ""


def snapshot_key(cfg: GuestConfig) -> str:
    """A digest of everything that makes a booted guest what it is: the QEMU command line without the work folder
    (kernel, initramfs, preset, kernel command line, devices; the initramfs's name holds its content's digest), the
    kernel's size, QEMU's version."""
    cfg = snapshot_config(cfg)
    h = hashlib.sha256()
    for part in qemu_command(cfg, Path("/WORKDIR")):
        h.update(part.encode() + b"\0")
    h.update(f"{cfg.vmlinuz.stat().st_size}\0".encode())
    h.update(qemu_version().encode())
    return h.hexdigest()[:20]


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """A stored booted guest: the stream, its configuration and what the guest showed when it was taken."""

    path: Path
    cfg: GuestConfig
    boot: dict[str, Any]  # the settled sample (traces/lab/run.py parse_sample) at the snapshot
    boot_s: float  # QEMU start to the agent's first answer, when it was booted
    save_s: float  # the migration to the file
    created: bool  # booted for this run (False: found in the cache)


def _paths(cfg: GuestConfig, directory: Path | None) -> tuple[Path, Path]:
    """The stream and its description (``<key>.mig``, ``<key>.json``) of a configuration's snapshot."""
    top = directory or snapshot_dir()
    top.mkdir(parents=True, exist_ok=True)
    key = snapshot_key(cfg)
    return top / f"{key}.mig", top / f"{key}.json"


def cached_snapshot(cfg: GuestConfig, directory: Path | None = None) -> Snapshot | None:
    """The snapshot of ``cfg`` if the cache has it (marked as just used), else None."""
    cfg = snapshot_config(cfg)
    path, meta = _paths(cfg, directory)
    with _locked(path.with_suffix(".lock")):
        if not (path.is_file() and meta.is_file()):
            return None
        os.utime(path)
        info = json.loads(meta.read_text())
    return Snapshot(path, cfg, info["boot"], info["boot_s"], info["save_s"], False)


def ensure_snapshot(cfg: GuestConfig, scenario: Scenario, directory: Path | None = None, verbose: bool = False) -> Snapshot:
    """The snapshot of ``cfg``: from the cache, else booted and saved now."""
    snap = cached_snapshot(cfg, directory)
    if snap is not None:
        return snap
    guest = SnapshottingGuest(cfg, scenario, directory, verbose=verbose)
    with guest:
        assert guest.snapshot is not None
        return guest.snapshot


def guest_for(cfg: GuestConfig, scenario: Scenario, directory: Path | None = None, verbose: bool = False) -> Guest:
    """The guest to run ``scenario`` in: restored from the cached snapshot of ``cfg``, else one that boots, saves the
    snapshot and then goes on as the run's guest (a first time costs a boot and a save, not a boot, a save and a restore)."""
    snap = cached_snapshot(cfg, directory)
    return RestoredGuest(snap, verbose=verbose) if snap is not None else SnapshottingGuest(cfg, scenario, directory, verbose=verbose)


class SnapshottingGuest(Guest):
    """A guest that boots, settles, saves its snapshot (unless another process saved it meanwhile), then runs on."""

    def __init__(self, cfg: GuestConfig, scenario: Scenario, directory: Path | None = None, boot_timeout: float = 240.0, verbose: bool = False) -> None:
        super().__init__(snapshot_config(cfg), boot_timeout, verbose)
        self.scenario = scenario
        self.directory = directory
        self.snapshot: Snapshot | None = None

    def start(self) -> None:
        """Boot, sample until settled, migrate into the cache's file, and continue the guest (``cont``)."""
        super().start()
        boot = LabRun(self, self.scenario).settled()
        path, meta = _paths(self.cfg, self.directory)
        with _locked(path.with_suffix(".lock")):
            saved = not (path.is_file() and meta.is_file())
            save_s = save_stream(self, path) if saved else 0.0
            if saved:
                info = {"boot": boot, "boot_s": round(self.boot_s, 2), "save_s": round(save_s, 2), "bytes": path.stat().st_size}
                atomic_write(meta, json.dumps(info) + "\n")
        self.snapshot = Snapshot(path, self.cfg, boot, self.boot_s, save_s, saved)
        if saved:
            self.execute("cont")  # a source stays paused after its migration completed
            prune(path.parent, KEEP)


def save_stream(g: Guest, path: Path) -> float:
    """Migrate the running guest into ``path`` (written whole, then renamed); the seconds it took."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    t0 = time.monotonic()
    g.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(tmp))}"})
    end = t0 + MIGRATE_MAX_S
    while True:
        st = g.execute("query-migrate")
        if st.get("status") == "completed":
            break
        if st.get("status") in ("failed", "cancelled") or time.monotonic() > end:
            tmp.unlink(missing_ok=True)
            raise LabError(f"migration to {path}: {st.get('status')} {st.get('error-desc', '')}".rstrip())
        time.sleep(0.05)
    tmp.replace(path)
    return time.monotonic() - t0


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prune(top: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used snapshots (a QEMU still reading one keeps its open file)."""
    streams = sorted(top.glob("*.mig"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in streams[keep:]:
        with _locked(old.with_suffix(".lock")):
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)


class RestoredGuest(Guest):
    """A guest started from a snapshot (``-incoming``) instead of booting; ``boot_s`` is the restore's time."""

    def __init__(self, snap: Snapshot, boot_timeout: float = 120.0, verbose: bool = False) -> None:
        incoming = ("-incoming", f"exec:cat {shlex.quote(str(snap.path))}")
        super().__init__(dataclasses.replace(snap.cfg, extra_args=(*snap.cfg.extra_args, *incoming)), boot_timeout, verbose)
        self.snapshot = snap

    def start(self) -> None:
        """Load the stream, wait for the agent, set the guest's clock to the host's."""
        super().start()
        rc, out = self.agent(f"date -u -s @{int(time.time())}")
        if rc:
            raise LabError(f"guest: setting the clock after the restore failed (status {rc}): {out}")
