"""One QEMU guest (TCG) booting a Debian kernel with the lab's initramfs: its command line, QMP and the guest agent.

``Guest`` is a context manager: QEMU is always killed when the block ends, on errors too, and (through
PR_SET_PDEATHSIG) when this process dies. QMP goes through ``qemu.qmp``; the agent is a line protocol on a
virtio-serial port (see traces/lab/initramfs.py). Both run on one private asyncio loop behind a blocking API.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from qemu.qmp import EventListener, ExecuteError, Message, QMPClient

from traces.header import TRAILER_MAGIC
from traces.lab.initramfs import AGENT_PORT, TRACE_PORT
from traces.machines import MachinePreset
from traces.scenario import VirtioMemSpec

QEMU = "qemu-system-x86_64"
# nokaslr: the kernel image always lands at the same physical address, so zone "managed" counts repeat across boots.
BASE_APPEND = "console=ttyS0 panic=-1 nokaslr"
TRACE_FILE = "trace.mhpt"  # in the guest's work folder: what the guest's recorder streamed out


class LabError(RuntimeError):
    """The guest or QEMU failed; the message ends with the tail of the guest console where useful."""


class QmpCommandError(LabError):
    """A QMP command returned an error; ``desc`` is QEMU's text."""

    def __init__(self, cmd: str, desc: str) -> None:
        self.cmd = cmd
        self.desc = desc
        super().__init__(f"QMP {cmd}: {desc}")


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """What to boot: kernel, initramfs, machine preset, extra kernel parameters, virtio-mem devices."""

    vmlinuz: Path
    initrd: Path
    machine: MachinePreset
    cmdline: str = ""
    devices: tuple[VirtioMemSpec, ...] = ()
    extra_args: tuple[str, ...] = field(default=())


def kernel_append(cfg: GuestConfig) -> str:
    """The kernel command line: serial console, panic exits, the scenario's parameters, virtio_mem module options."""
    parts = [BASE_APPEND]
    if cfg.cmdline.strip():
        parts.append(" ".join(cfg.cmdline.split()))
    unplug = {d.unplug_online for d in cfg.devices}
    if len(unplug) > 1:
        raise LabError("virtio-mem devices disagree on unplug_online; the guest driver has one global virtio_mem.unplug_online")
    if unplug == {False}:
        parts.append("virtio_mem.unplug_online=0")
    return " ".join(parts)


def virtio_mem_args(dev: VirtioMemSpec) -> list[str]:
    """-object/-device options of one virtio-mem device (backend with reserve=off, requested-size 0)."""
    return [
        "-object",
        f"memory-backend-ram,id=mem-{dev.id},size={dev.max_size},reserve=off",
        "-device",
        f"virtio-mem-pci,id={dev.id},memdev=mem-{dev.id},node={dev.node},requested-size=0,block-size={dev.block_size}",
    ]


def qemu_command(cfg: GuestConfig, workdir: Path, qemu: str = QEMU) -> list[str]:
    """The full QEMU command line for a guest whose sockets and console log live in ``workdir``."""
    if not cfg.machine.qemu_args:
        raise LabError(f"machine {cfg.machine.name!r} has no QEMU options: only presets (traces/machines.py) can run in the lab")
    args = [qemu, "-no-user-config", "-display", "none", "-no-reboot", "-nic", "none"]  # no network in the guest
    args += list(cfg.machine.qemu_args)
    args += ["-kernel", str(cfg.vmlinuz), "-initrd", str(cfg.initrd), "-append", kernel_append(cfg)]
    args += ["-chardev", f"file,id=con,path={workdir / 'console.log'}", "-serial", "chardev:con"]
    args += ["-chardev", f"socket,id=qmp,path={workdir / 'qmp.sock'},server=on,wait=off", "-mon", "chardev=qmp,mode=control"]
    args += ["-device", "virtio-serial-pci,id=vser"]
    args += ["-chardev", f"socket,id=agent,path={workdir / 'agent.sock'},server=on,wait=off"]
    args += ["-device", f"virtserialport,bus=vser.0,chardev=agent,name={AGENT_PORT}"]
    args += ["-chardev", f"file,id=trace,path={workdir / TRACE_FILE}", "-device", f"virtserialport,bus=vser.0,chardev=trace,name={TRACE_PORT}"]
    for dev in cfg.devices:
        args += virtio_mem_args(dev)
    args += list(cfg.extra_args)
    return args


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


class Guest:
    """A running QEMU guest; use as ``with Guest(cfg) as g:``."""

    def __init__(self, cfg: GuestConfig, boot_timeout: float = 240.0, verbose: bool = False) -> None:
        self.cfg = cfg
        self.boot_timeout = boot_timeout
        self.verbose = verbose
        self.workdir = Path(tempfile.mkdtemp(prefix="mhp-lab-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.loop = asyncio.new_event_loop()
        self.qmp = QMPClient("mhp-lab")
        self.events = EventListener()
        self.qmp.register_listener(self.events)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0
        self.boot_s = 0.0
        self.release = ""

    # --- life cycle -------------------------------------------------------------------------------

    def __enter__(self) -> Guest:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Start QEMU, connect QMP and the agent, and wait until the agent answers (``boot_s``)."""
        if not shutil.which(QEMU):
            raise LabError(f"{QEMU} not found: run 'python -m traces.lab --setup' as root")
        cmd = qemu_command(self.cfg, self.workdir)
        t0 = time.monotonic()
        log = (self.workdir / "qemu.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        log.close()
        self._wait_for(lambda: (self.workdir / "qmp.sock").exists() and (self.workdir / "agent.sock").exists(), 30, "QEMU sockets")
        self.loop.run_until_complete(self.qmp.connect(str(self.workdir / "qmp.sock")))
        self._reader, self._writer = self.loop.run_until_complete(asyncio.open_unix_connection(str(self.workdir / "agent.sock")))
        rc, out = self.agent("uname -r", timeout=self.boot_timeout)
        if rc:
            raise LabError(f"guest agent: uname -r failed: {out}")
        self.release = out.strip()
        self.boot_s = time.monotonic() - t0

    def _wait_for(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not cond():
            self.check_alive()
            if time.monotonic() > end:
                raise LabError(f"timed out after {timeout:.0f} s waiting for {what}{self.console_tail()}")
            time.sleep(0.05)

    def check_alive(self) -> None:
        """LabError when QEMU has exited (with its own output and the console tail)."""
        if self.proc is not None and self.proc.poll() is not None:
            qlog = self._tail(self.workdir / "qemu.log", 1500)
            raise LabError(f"QEMU exited with status {self.proc.returncode}: {qlog.strip()}{self.console_tail()}")

    @staticmethod
    def _tail(path: Path, n: int) -> str:
        try:
            return path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def console_tail(self, n: int = 2500) -> str:
        """The end of the guest's serial console, as a message suffix."""
        t = self._tail(self.workdir / "console.log", n)
        return f"\n--- guest console (tail) ---\n{t}" if t else ""

    def console(self) -> str:
        """The whole guest serial console so far."""
        return self._tail(self.workdir / "console.log", 1 << 24)

    def close(self) -> None:
        """Stop QEMU (QMP quit, then SIGTERM, then SIGKILL) and remove the work folder."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.wait_for(self.qmp.execute("quit"), 2))
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(3)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.qmp.disconnect())
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()
        if not os.environ.get("MHP_LAB_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- QMP ---------------------------------------------------------------------------------------

    def execute(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        """Run one QMP command; QmpCommandError with QEMU's text when it fails."""
        self.check_alive()
        try:
            return self.loop.run_until_complete(asyncio.wait_for(self.qmp.execute(cmd, args), timeout))
        except ExecuteError as e:
            raise QmpCommandError(cmd, str(e)) from None  # ExecuteError renders as QEMU's error desc
        except TimeoutError:
            raise LabError(f"QMP {cmd}: no answer in {timeout:.0f} s{self.console_tail()}") from None

    def wait_event(self, match: Callable[[Any], bool], timeout: float) -> Any:
        """The first QMP event (queued or arriving within ``timeout``) for which ``match`` is true, else None.
        An event is a JSON object, read as such (``ev["data"]["info"]``)."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if self.events.empty() and left <= 0:
                return None
            self.check_alive()
            try:
                ev: Any = self.loop.run_until_complete(asyncio.wait_for(self.events.get(), max(0.01, min(left, 0.5))))
            except TimeoutError:
                continue
            if self.verbose:
                print(f"  qmp event {ev['event']} {dict(ev.get('data', {}))}", flush=True)
            if match(ev):
                return ev

    def drain_events(self) -> list[Message]:
        """Every QMP event received so far (they arrive while QMP or the agent is being waited on)."""
        self.loop.run_until_complete(asyncio.sleep(0))
        out = []
        while not self.events.empty():
            out.append(self.loop.run_until_complete(self.events.get()))
        return out

    def streamed_trace(self, timeout: float = 30.0) -> bytes:
        """What the guest's recorder streamed out, once it ends with the index trailer (FORMAT.md) and stopped growing."""
        path = self.workdir / TRACE_FILE
        end = time.monotonic() + timeout
        last = -1
        while True:
            data = path.read_bytes() if path.exists() else b""
            if data.endswith(TRAILER_MAGIC) and len(data) == last:
                return data
            if time.monotonic() > end:
                raise LabError(f"the guest's trace ({len(data)} bytes) did not end with the index trailer in {timeout:.0f} s{self.console_tail()}")
            last = len(data)
            time.sleep(0.2)

    # --- agent ---------------------------------------------------------------------------------------

    def agent(self, command: str, timeout: float = 60.0) -> tuple[int, str]:
        """Run a one-line busybox-sh command in the guest: (exit status, stdout+stderr)."""
        if "\n" in command or "\r" in command:
            raise ValueError("agent commands are one line")
        assert self._reader is not None and self._writer is not None
        self._next_id += 1
        tag = f"@@END {self._next_id} "
        self._writer.write(f"{self._next_id} {command}\n".encode())
        end = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise LabError(f"guest agent: no answer to {command!r} in {timeout:.0f} s{self.console_tail()}")
            self.check_alive()
            try:
                raw = self.loop.run_until_complete(asyncio.wait_for(self._reader.readline(), min(left, 1.0)))
            except TimeoutError:
                continue
            if not raw:
                self.check_alive()
                raise LabError(f"guest agent: channel closed{self.console_tail()}")
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(tag):
                return int(line[len(tag) :]), "\n".join(lines)
            lines.append(line)
