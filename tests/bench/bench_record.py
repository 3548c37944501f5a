#!/usr/bin/env python3
"""Benchmark of ``mhp record`` inside a real kernel (not a test; prints figures). Needs root and the lab set up.

Boots a Debian kernel under QEMU (TCG, traces/lab), starts the guest's own ``mhp record`` (the agent's
``record_start``) and leaves the guest idle for ``--idle`` seconds; the recorder's CPU time (utime+stime of
/proc/PID/stat) and memory (VmHWM, VmRSS of /proc/PID/status) are read through the agent before and after.
Then it offlines and onlines one block ``--cycles`` times by guest sysfs writes, taking the guest's wall clock
(busybox ash's ``$EPOCHREALTIME``, no process started) just before and right after each write, and finds
each write's request record in the trace the guest streamed out: its wall time is the header's clock
``wall_ns`` plus the record's ``ts``. The kernel sends the block's uevent inside the write (device_offline /
device_online), so the time after the write bounds the uevent from above. In the same guest it times the
recorder's ``handle()`` of one such uevent and the read of the block and the zones that follows it, in a
Python process of its own: the delay beyond ``QUIET_S`` and that processing is waking up and scheduling.
Target (issue 12): report the figures.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass

from traces.events import BlockObserved, OfflineBlock, OnlineBlock
from traces.lab.initramfs import build_initramfs
from traces.lab.qemu import TRACE_FILE, Guest, GuestConfig, LabError
from traces.lab.run import guest_call, start_recorder
from traces.lab.setup import KERNELS, LabSetupError, cached_kernel, lab_ready
from traces.machines import PRESETS
from traces.reader import TraceReader
from traces.record import QUIET_S

MEM = "/sys/devices/system/memory"
# One agent line: the recorder's clock ticks, CPU, memory and age, and the guest's CPU totals, at one wall time.
READ_PROC = (
    'p=$(cat /run/mhp-record.pid); echo "T $EPOCHREALTIME"; echo "S $(cat /proc/$p/stat)"; grep -E "^Vm(HWM|RSS):" /proc/$p/status; '
    'echo "U $(cat /proc/uptime)"; head -n 1 /proc/stat; echo "K $(getconf CLK_TCK 2>/dev/null || echo 100)"'
)
# Times the recorder's own handling of one uevent on the live guest (its writer goes to /dev/null).
HANDLE_TIMER = """
import statistics, sys, time
from traces.host import Host
from traces.record import Recorder, header_for
from traces.writer import TraceWriter
block, reps = int(sys.argv[1]), int(sys.argv[2])
host = Host("/")
snap = host.snapshot()
rec = Recorder(host, TraceWriter(open("/dev/null", "wb"), header_for(snap, "bench")), snap)
for action in ("offline", "online"):
    ev = {"ACTION": action, "SUBSYSTEM": "memory", "DEVPATH": f"/devices/system/memory/memory{block}", "SEQNUM": "1"}
    handle, observe = [], []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        rec.handle([ev])
        t1 = time.perf_counter_ns()
        rec.observations(False)
        observe.append(time.perf_counter_ns() - t1)
        handle.append(t1 - t0)
        rec.touched.clear()
    print("H", action, statistics.median(handle), statistics.median(observe))
"""


@dataclass(frozen=True, slots=True)
class ProcReading:
    """One reading of the guest recorder: guest wall time, CPU ticks, memory, age, and the guest's CPU totals."""

    wall_ns: int
    cpu_ticks: int  # utime + stime
    hwm_kib: int
    rss_kib: int
    age_s: float  # since the process started
    guest_busy: int  # /proc/stat ticks: all but idle and iowait
    guest_total: int
    clk_tck: int


@dataclass(frozen=True, slots=True)
class Write:
    """One sysfs write: offline or online, exit status, guest wall time before and after (ns)."""

    action: str
    rc: int
    before_ns: int
    after_ns: int
    message: str


def epoch_ns(text: str) -> int:
    """``$EPOCHREALTIME`` (seconds.microseconds) as ns; LabError for anything else (a busybox without it)."""
    sec, dot, usec = text.partition(".")
    if not dot or not sec.isdigit() or not usec.isdigit():
        raise LabError(f"guest $EPOCHREALTIME is {text!r}, not seconds.microseconds (busybox ash too old?)")
    return int(sec) * 1_000_000_000 + int(usec.ljust(6, "0")[:6]) * 1000


def parse_reading(text: str) -> ProcReading:
    """The READ_PROC output -> ProcReading."""
    got: dict[str, str] = {}
    for line in text.splitlines():
        key, *rest = line.split(None, 1)
        got[key.rstrip(":")] = rest[0].strip() if rest else ""
    try:
        stat = got["S"].rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        utime, stime, start = int(stat[11]), int(stat[12]), int(stat[19])  # fields 14, 15, 22 of proc_pid_stat(5)
        cpu = [int(x) for x in got["cpu"].split()]
        clk = int(got["K"])
        return ProcReading(
            epoch_ns(got["T"]),
            utime + stime,
            int(got["VmHWM"].split()[0]),
            int(got["VmRSS"].split()[0]),
            float(got["U"].split()[0]) - start / clk,
            sum(cpu) - cpu[3] - cpu[4],
            sum(cpu),
            clk,
        )
    except (KeyError, IndexError, ValueError) as e:
        raise LabError(f"guest recorder reading incomplete ({e!r}): {text[-800:]!r}") from None


def read_proc(g: Guest) -> ProcReading:
    return parse_reading(guest_call(g, READ_PROC))


def sysfs_write(g: Guest, block: int, action: str) -> Write:
    """Offline or online ``block`` through its state file, timed in the guest around the write alone."""
    path = shlex.quote(f"{MEM}/memory{block}/state")
    rc, out = g.agent(f't0=$EPOCHREALTIME; echo {action} >{path}; rc=$?; t1=$EPOCHREALTIME; echo "W $rc $t0 $t1"')
    last = out.strip().splitlines()[-1] if out.strip() else ""
    parts = last.split()
    if rc or len(parts) != 4 or parts[0] != "W":
        raise LabError(f"guest write of {action} to memory{block}: agent status {rc}, output {out[-500:]!r}")
    return Write(action, int(parts[1]), epoch_ns(parts[2]), epoch_ns(parts[3]), "\n".join(out.strip().splitlines()[:-1]))


class HostLoad:
    """This machine's load while the guest runs: load average samples, all CPUs' busy share, the guest QEMU's CPU."""

    def __init__(self, qemu_pid: int) -> None:
        self.qemu_pid = qemu_pid
        self.loads: list[float] = []
        self.other_qemus: list[int] = []
        self.t0 = time.monotonic()
        self.stat0 = self.cpu_stat()
        self.qemu0 = self.qemu_ticks()

    @staticmethod
    def cpu_stat() -> tuple[int, int]:
        with open("/proc/stat") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
        return sum(cpu) - cpu[3] - cpu[4], sum(cpu)

    def qemu_ticks(self) -> int:
        with open(f"/proc/{self.qemu_pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        return int(stat[11]) + int(stat[12])

    def sample(self) -> None:
        """One load average reading and the number of other QEMU guests running now."""
        self.loads.append(os.getloadavg()[0])
        n = 0
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != self.qemu_pid:
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        n += f.read().strip().startswith("qemu-system")
                except OSError:
                    continue
        self.other_qemus.append(n)

    def summary(self) -> str:
        busy, total = self.cpu_stat()
        share = 100 * (busy - self.stat0[0]) / max(total - self.stat0[1], 1)
        qemu = 100 * (self.qemu_ticks() - self.qemu0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - self.t0)
        with_other = sum(1 for n in self.other_qemus if n) / max(len(self.other_qemus), 1)
        return (
            f"{os.cpu_count()} CPUs {share:.0f}% busy; load average (1 min) mean {statistics.mean(self.loads or [0]):.2f}, "
            f"max {max(self.loads or [0]):.2f}; this guest's QEMU {qemu:.0f}% of one CPU; "
            f"another QEMU guest running in {with_other:.0%} of {len(self.other_qemus)} samples"
        )


def idle(g: Guest, seconds: float, load: HostLoad, every: float = 10.0) -> None:
    """Leave the guest alone for ``seconds``, sampling this machine's load."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        load.sample()
        time.sleep(min(every, left))
        g.check_alive()


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))]


def spread(xs: list[float]) -> str:
    return f"min {min(xs):.1f}, median {statistics.median(xs):.1f}, p95 {percentile(xs, 95):.1f}, max {max(xs):.1f} ms"


def request_delays(trace: bytes, block: int, writes: list[Write]) -> tuple[list[float], list[float], list[float]]:
    """Per successful write: ms from the write's return to its request record, to the block's next observation,
    and the write's own duration."""
    with TraceReader(io.BytesIO(trace)) as r:
        wall0 = r.header.wall_ns
        requests: list[tuple[str, int]] = []
        observed: list[int] = []
        for rec in r:
            ev = rec.event
            if isinstance(ev, (OfflineBlock, OnlineBlock)) and ev.block == block:
                requests.append(("offline" if isinstance(ev, OfflineBlock) else "online", wall0 + rec.ts))
            elif isinstance(ev, BlockObserved) and ev.block == block:
                observed.append(wall0 + rec.ts)
    done = [w for w in writes if w.rc == 0]
    if [a for a, _ in requests] != [w.action for w in done]:
        raise LabError(f"trace requests for memory{block} {[a for a, _ in requests]} do not match the writes {[w.action for w in done]}")
    to_record, to_obs, write_ms = [], [], []
    for w, (_a, t) in zip(done, requests, strict=True):
        to_record.append((t - w.after_ns) / 1e6)
        to_obs.append((min((o for o in observed if o >= t), default=t) - w.after_ns) / 1e6)
        write_ms.append((w.after_ns - w.before_ns) / 1e6)
    return to_record, to_obs, write_ms


def handle_cost(g: Guest, block: int, reps: int = 20) -> dict[str, tuple[float, float]]:
    """The recorder's handle() of one offline/online uevent and the observation read after it, in ms (medians)."""
    script = base64.b64encode(HANDLE_TIMER.encode()).decode()
    out = guest_call(g, f"echo {script} | base64 -d >/tmp/handle.py && python3 /tmp/handle.py {block} {reps}", timeout=300)
    got = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "H":
            got[parts[1]] = (float(parts[2]) / 1e6, float(parts[3]) / 1e6)
    if set(got) != {"offline", "online"}:
        raise LabError(f"guest handle() timing gave {out[-800:]!r}")
    return got


def python_speed(g: Guest) -> tuple[float, float]:
    """Seconds for the same small Python loop in the guest and on this machine (TCG's slowdown)."""
    code = "import time; t = time.perf_counter(); sum(i * i for i in range(300000)); print(time.perf_counter() - t)"
    guest = float(guest_call(g, f"python3 -c {shlex.quote(code)}", timeout=300).strip().splitlines()[-1])
    t = time.perf_counter()
    sum(i * i for i in range(300000))
    return guest, time.perf_counter() - t


def run(args: argparse.Namespace) -> int:
    kp = cached_kernel(args.kernel)
    cfg = GuestConfig(kp.vmlinuz, build_initramfs(kp), PRESETS[args.machine], args.cmdline)
    print(f"kernel {kp.package} {kp.version}, machine {args.machine}, idle {args.idle:.0f} s, {args.cycles} offline/online cycles of memory{args.block}")
    with Guest(cfg, verbose=args.verbose) as g:
        assert g.proc is not None
        print(f"guest {g.release} booted in {g.boot_s:.1f} s")
        trace_file = g.workdir / TRACE_FILE
        load = HostLoad(g.proc.pid)
        t = time.monotonic()
        start_recorder(g, f"bench record on {kp.package} {kp.version}")
        start_s = time.monotonic() - t
        a = read_proc(g)
        size_a = trace_file.stat().st_size
        idle(g, args.idle, load)
        b = read_proc(g)
        size_b = trace_file.stat().st_size
        idle_load = load.summary()
        span = (b.wall_ns - a.wall_ns) / 1e9
        cpu = (b.cpu_ticks - a.cpu_ticks) / a.clk_tck
        guest_busy = 100 * (b.guest_busy - a.guest_busy) / max(b.guest_total - a.guest_total, 1)
        load = HostLoad(g.proc.pid)
        writes: list[Write] = []
        for i in range(args.cycles):
            for action in ("offline", "online"):
                writes.append(sysfs_write(g, args.block, action))
                load.sample()
                time.sleep(args.gap)  # longer than QUIET_S and the settle: the recorder handles the uevent undisturbed
                guest_call(g, f"record_mark {shlex.quote(f'bench {i} {action}')}")
        c = read_proc(g)
        cycle_load = load.summary()
        cost = handle_cost(g, args.block)
        speed = python_speed(g)
        guest_call(g, "record_stop")
        trace = g.streamed_trace()
    to_record, to_obs, write_ms = request_delays(trace, args.block, writes)
    failed = [w for w in writes if w.rc]
    print(f"recorder start (record_start until its snapshot is written): {start_s:.1f} s, {a.cpu_ticks / a.clk_tck:.2f} s CPU")
    print(f"idle {span:.0f} s (guest clock): recorder CPU {cpu:.2f} s = {100 * cpu / span:.2f}% of one (emulated) core; whole guest {guest_busy:.1f}% busy")
    print(f"recorder memory after the idle period: VmRSS {b.rss_kib / 1024:.1f} MiB, VmHWM {b.hwm_kib / 1024:.1f} MiB")
    print(f"recorder memory after the cycles: VmRSS {c.rss_kib / 1024:.1f} MiB, VmHWM {c.hwm_kib / 1024:.1f} MiB")
    print(f"trace growth while idle: {size_b - size_a:,} bytes ({(size_b - size_a) / span * 3600 / 1024:.0f} KiB per hour)")
    print(f"this machine while idle: {idle_load}")
    print(f"writes: {len(writes)}, {len(failed)} failed{': ' + failed[0].message if failed else ''}; each write took {spread(write_ms)}")
    print(f"write return -> its request record: {spread(to_record)} (n={len(to_record)})")
    print(f"write start -> its request record (the uevent lies between start and return): {spread([d + w for d, w in zip(to_record, write_ms, strict=True)])}")
    print(f"write return -> the block's next observation: {spread(to_obs)}")
    done = [w.action for w in writes if w.rc == 0]
    for action, (h, o) in cost.items():
        mine = [d for d, a in zip(to_record, done, strict=True) if a == action]
        rest = statistics.median(mine) - QUIET_S * 1000 - h
        print(f"  {action}: median {statistics.median(mine):.1f} ms = QUIET_S {QUIET_S * 1000:.0f} + handle() {h:.1f} + wake-up, scheduling {rest:.1f} ms")
        print(f"    (handle() and the block and zone read after it ({o:.1f} ms) timed in a Python process of their own in the guest, medians)")
    print(f"this machine during the cycles: {cycle_load}")
    print(f"Python in the guest vs here: {speed[0] * 1000:.0f} ms vs {speed[1] * 1000:.0f} ms for the same loop ({speed[0] / speed[1]:.1f}x slower under TCG)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", choices=KERNELS, default="6.12")
    ap.add_argument("--machine", choices=sorted(p for p, m in PRESETS.items() if m.qemu_args), default="qemu-q35-4G")
    ap.add_argument("--cmdline", default="", help="extra kernel parameters")
    ap.add_argument("--idle", type=float, default=600.0, help="seconds the guest stays idle with the recorder running")
    ap.add_argument("--block", type=int, default=40, help="the block offlined and onlined (an early Normal block on q35 4G)")
    ap.add_argument("--cycles", type=int, default=20, help="offline/online cycles")
    ap.add_argument("--gap", type=float, default=1.0, help="seconds after each write before the next (then a mark syncs with the recorder)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench record: needs root (the lab boots QEMU guests with the cached kernels)", file=sys.stderr)
        return 2
    reason = lab_ready(args.kernel)
    if reason:
        print(f"bench record: {reason}", file=sys.stderr)
        return 2
    if args.idle < 1 or args.cycles < 1 or args.gap <= QUIET_S:
        print(f"bench record: --idle >= 1, --cycles >= 1 and --gap > {QUIET_S} (QUIET_S) are needed", file=sys.stderr)
        return 2
    try:
        return run(args)
    except (LabError, LabSetupError) as e:
        print(f"bench record: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
