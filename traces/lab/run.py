"""Run a scenario on a real Debian kernel under QEMU and record what the guest showed after boot and after every step.

The observation has the format of corpus/observed/*.json: ``scenario`` (the set-up) and ``results`` (boot, then
one entry per step with ``rc``, ``blocks``, ``zones``, ``params``). Guest steps also carry ``writes``: every
sysfs write of the step as ``[block, exit status, shell message]`` (block is null for parameter writes).
``run_trace`` also runs the guest's own ``mhp record`` for the whole scenario (from step ``record_from`` on)
and keeps the trace it streamed out: a mark before every step, and the guest's observations at every mark.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traces.atomic import atomic_write
from traces.lab.initramfs import build_initramfs
from traces.lab.qemu import Guest, GuestConfig, LabError, QmpCommandError
from traces.lab.setup import KERNELS, KernelPaths, LabSetupError, cached_kernel
from traces.machines import MachinePreset
from traces.scenario import Scenario, ScenarioError, Step, load_scenario

MEM = "/sys/devices/system/memory"
PARAM_DIR = "/sys/module/memory_hotplug/parameters"
PARAM_ORDER = ("online_policy", "auto_movable_ratio", "auto_movable_numa_aware", "auto_online_blocks", "block_size_bytes")

# Settling: guest samples are taken until two in a row agree; devices are polled, never slept on blindly.
SAMPLE_GAP_S = 0.3
GUEST_SETTLE_MAX_S = 60.0
DIMM_EVENT_MAX_S = 90.0
UNPLUG_MAX_S = 180.0
VMEM_STALL_S = 15.0  # virtio-mem size unchanged this long (and short of the request): the device has settled
VMEM_MAX_S = 300.0
RUN_MAX_S = 600.0  # a scenario's guest command (run = "...")
# ACPI _OST status codes that are not a refusal: 0 success, 0x84 "ejection in progress" (sent when the guest starts).
OST_NOT_FAILED = (0, 0x84)


def size_text(n: int) -> str:
    """Bytes as the scenario would write them: '4G', '128M', or a byte count."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


@dataclass(slots=True)
class Performed:
    """What doing a step gave: ``rc`` (0, a shell status or QEMU's text); guest steps: each write and when it returned."""

    rc: int | str
    writes: list[list[Any]] | None = None  # [block or None, exit status, shell message] per sysfs write
    times: list[int] = field(default_factory=list)  # time.monotonic_ns() after each write
    device: str = ""  # host steps: the DIMM or virtio-mem device id


def step_record(step: Step) -> dict[str, Any]:
    """A step in the observation format: host steps as written, guest steps as {"guest": "online N TYPE" ...}."""
    a, raw = step.args, step.raw
    if step.action == "dimm":
        out: dict[str, Any] = {"dimm": raw["dimm"]}
        out.update({k: raw[k] for k in ("node", "id") if k in raw})
        return out
    if step.action == "vmem":
        return {"vmem": a["vmem"], "size": raw["size"]}
    if step.action == "unplug":
        return {"unplug": a["unplug"]}
    if step.action in ("online", "offline"):
        first, last = a[step.action]
        blocks = str(first) if first == last else f"{first}-{last}"
        text = f"{step.action} {blocks}"
        if step.action == "online" and a["attr"] == "state":
            text += f" {a['type'].label}"
        out = {"guest": text}
        if a["attr"] == "online":
            out["attr"] = "online"
        if "fails" in raw:
            out["fails"] = raw["fails"]
        return out
    if step.action == "param":
        return {"guest": f"param {a['param']} {a['value']}"}
    if step.action == "auto_online":
        return {"guest": f"auto {a['auto_online'].label}"}
    if step.action == "mark":
        return {"mark": a["mark"]}  # performs nothing: labels the layout
    if step.action == "run":
        return {"guest": f"run {a['run']}"}
    raise ScenarioError(f"{step.action}: unknown step action")


def guest_writes(step: Step) -> list[tuple[int | None, str, str]]:
    """The sysfs writes a guest step makes: (block or None, path, value)."""
    a = step.args
    if step.action in ("online", "offline"):
        first, last = a[step.action]
        out: list[tuple[int | None, str, str]] = []
        for b in range(first, last + 1):
            if a["attr"] == "online":
                out.append((b, f"{MEM}/memory{b}/online", "1" if step.action == "online" else "0"))
            else:
                out.append((b, f"{MEM}/memory{b}/state", a["type"].label if step.action == "online" else "offline"))
        return out
    if step.action == "param":
        return [(None, f"{PARAM_DIR}/{a['param']}", a["value"])]
    if step.action == "auto_online":
        return [(None, f"{MEM}/auto_online_blocks", a["auto_online"].label)]
    raise ValueError(f"{step.action} is not a guest step")


def write_command(path: str, value: str) -> str:
    """The guest shell command writing ``value`` to ``path``: both quoted, so a scenario's value is
    data and never shell syntax."""
    return f"echo {shlex.quote(value)} > {shlex.quote(path)}"


def machine_record(m: MachinePreset) -> dict[str, Any]:
    """machine / mem / numa of the observation header, read from the preset's QEMU options."""
    args = list(m.qemu_args)
    out: dict[str, Any] = {}
    if "-machine" in args:
        out["machine"] = args[args.index("-machine") + 1].split(",")[0]
    out["mem"] = m.mem
    sizes = {}
    for i, a in enumerate(args[:-1]):
        if a == "-object" and args[i + 1].startswith("memory-backend-ram,"):
            opts = dict(kv.split("=", 1) for kv in args[i + 1].split(",")[1:] if "=" in kv)
            sizes[opts.get("id", "")] = opts.get("size", "")
    numa = []
    for i, a in enumerate(args[:-1]):
        if a == "-numa" and args[i + 1].startswith("node,"):
            opts = dict(kv.split("=", 1) for kv in args[i + 1].split(",")[1:] if "=" in kv)
            numa.append(sizes.get(opts.get("memdev", ""), "0"))
    if numa:
        out["numa"] = numa
    return out


def header(sc: Scenario, kernel: KernelPaths, release: str) -> dict[str, Any]:
    """The observation's ``scenario`` entry."""
    h: dict[str, Any] = {"name": sc.name, "kernel": kernel.series, "release": release, "package": f"{kernel.package} {kernel.version}"}
    h.update(machine_record(sc.machine))
    h["cmdline"] = sc.cmdline
    if sc.devices:
        h["virtio_mem"] = [
            {"id": d.id, "node": d.node, "size": size_text(d.max_size), **({"block_size": size_text(d.block_size)} if d.block_size != 2 << 20 else {})}
            for d in sc.devices
        ]
    h["steps"] = [step_record(s) for s in sc.steps]
    return h


def parse_sample(text: str) -> dict[str, Any]:
    """The agent's ``sample`` output -> {blocks, zones, params} in the observation format."""
    blocks: dict[int, dict[str, Any]] = {}
    zones: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("B "):
            parts = line.split()
            if len(parts) < 4:
                raise LabError(f"guest sample: bad block line {line!r}")
            state = "" if parts[3] == "-" else parts[3]
            blocks[int(parts[1])] = {"state": state, "zones": ",".join(parts[4:]), "node": int(parts[2])}
        elif line.startswith("Node "):
            m = re.match(r"Node (\d+), zone\s+(\S+)", line)
            if not m:
                raise LabError(f"guest sample: bad zoneinfo line {line!r}")
            zones.append({"node": int(m.group(1)), "zone": m.group(2), "present": 0, "managed": 0})
        elif line.startswith("P "):
            _, name, *value = line.split(" ", 2)
            params[name] = value[0] if value else ""
        else:
            m = re.match(r"^\s+(present|managed)\s+(\d+)$", line)
            if m and zones:
                zones[-1][m.group(1)] = int(m.group(2))
    missing = [p for p in PARAM_ORDER if p not in params]
    if missing or not blocks or not zones:
        raise LabError(f"guest sample incomplete (missing {missing or 'blocks/zones'}): {text[-500:]!r}")
    return {"blocks": {str(b): blocks[b] for b in sorted(blocks)}, "zones": zones, "params": [params[p] for p in PARAM_ORDER]}


class LabRun:
    """One scenario on one booted guest: performs steps and samples the guest after each."""

    def __init__(self, guest: Guest, scenario: Scenario, log: Callable[[str], None] | None = None) -> None:
        self.g = guest
        self.sc = scenario
        self.dimms: dict[str, int] = {}  # plugged DIMM id -> size
        self.log = log or (lambda _msg: None)

    def sample(self) -> dict[str, Any]:
        """One reading of the guest's blocks, zones and parameters."""
        rc, out = self.g.agent("sample")
        if rc:
            raise LabError(f"guest sample failed (status {rc}): {out[-500:]}")
        return parse_sample(out)

    def settled(self, max_s: float = GUEST_SETTLE_MAX_S) -> dict[str, Any]:
        """Sample until two readings in a row agree (or ``max_s`` passed: the last reading)."""
        prev = self.sample()
        end = time.monotonic() + max_s
        while time.monotonic() < end:
            time.sleep(SAMPLE_GAP_S)
            cur = self.sample()
            if cur == prev:
                return cur
            prev = cur
        self.log(f"  guest still changing after {max_s:.0f} s; recording the last sample")
        return prev

    def boot_result(self) -> dict[str, Any]:
        """The boot entry (``boot_s`` = QEMU start to the agent's first answer)."""
        s = self.settled()
        return {"step": "boot", "boot_s": round(self.g.boot_s, 1), **s}

    def step_result(self, step: Step) -> dict[str, Any]:
        """Perform one step; its entry with ``rc`` and the settled guest state."""
        done = self.perform(step)
        extra: dict[str, Any] = {"writes": done.writes} if done.writes is not None else {}
        return {"step": step_record(step), "rc": done.rc, **self.settled(), **extra}

    def perform(self, step: Step) -> Performed:
        """Do one step (host: QMP, guest: sysfs writes through the agent) without sampling the guest."""
        if step.action == "dimm":
            name = step.args["id"] or f"dimm{len(self.dimms)}"  # the simulator's naming
            return Performed(self.plug_dimm(step, name), device=name)
        if step.action == "unplug":
            return Performed(self.unplug_dimm(step.args["unplug"]), device=step.args["unplug"])
        if step.action == "vmem":
            return Performed(self.resize_vmem(step.args["vmem"], step.args["size"]), device=step.args["vmem"])
        if step.action == "run":  # the scenario's own shell command, run in the guest as its author wrote it
            status, out = self.g.agent(step.args["run"], timeout=RUN_MAX_S)
            return Performed(status, [[None, status, out.strip()[-2000:]]], [time.monotonic_ns()])
        writes: list[list[Any]] = []
        times: list[int] = []
        for block, path, value in guest_writes(step):
            status, out = self.g.agent(write_command(path, value))
            times.append(time.monotonic_ns())
            writes.append([block, status, out.strip()])
        return Performed(next((w[1] for w in writes if w[1]), 0), writes, times)

    def plug_dimm(self, step: Step, name: str) -> int | str:
        """object-add a RAM backend and device_add pc-dimm ``name``; wait for the guest's ACPI _OST (0 or QMP error text)."""
        a = step.args
        mem = f"mem-{name}"
        try:
            self.g.execute("object-add", {"qom-type": "memory-backend-ram", "id": mem, "size": a["dimm"], "reserve": False})
        except QmpCommandError as e:
            return e.desc
        self.g.drain_events()
        try:
            self.g.execute("device_add", {"driver": "pc-dimm", "id": name, "memdev": mem, "node": a["node"]})
        except QmpCommandError as e:
            self.g.execute("object-del", {"id": mem})
            return e.desc
        self.dimms[name] = a["dimm"]
        ev = self.g.wait_event(lambda e: e["event"] == "ACPI_DEVICE_OST" and e["data"]["info"].get("device") == name, DIMM_EVENT_MAX_S)
        if ev is None:
            self.log(f"  no ACPI _OST for {name} in {DIMM_EVENT_MAX_S:.0f} s")
        elif ev["data"]["info"].get("status") not in OST_NOT_FAILED:
            return f"ACPI _OST status {ev['data']['info']['status']:#x}"
        return 0

    def unplug_dimm(self, name: str) -> int | str:
        """device_del a DIMM and wait until QEMU deleted it (0) or the guest refused the eject (its _OST status)."""
        self.g.drain_events()
        try:
            self.g.execute("device_del", {"id": name})
        except QmpCommandError as e:
            return e.desc

        def done(e: Any) -> bool:
            if e["event"] == "DEVICE_DELETED":
                return bool(e["data"].get("device") == name)
            if e["event"] == "ACPI_DEVICE_OST":
                info = e["data"]["info"]
                return info.get("device") == name and info.get("status", 0) not in OST_NOT_FAILED
            return False

        ev = self.g.wait_event(done, UNPLUG_MAX_S)
        if ev is None:
            return f"unplug of {name}: neither deleted nor refused in {UNPLUG_MAX_S:.0f} s"
        if ev["event"] == "ACPI_DEVICE_OST":
            return f"eject refused: ACPI _OST status {ev['data']['info']['status']:#x}"
        self.dimms.pop(name, None)
        try:
            self.g.execute("object-del", {"id": f"mem-{name}"})
        except QmpCommandError as e:
            self.log(f"  object-del mem-{name}: {e.desc}")
        return 0

    def resize_vmem(self, dev: str, size: int) -> int | str:
        """qom-set requested-size; poll size until it equals the request or stops changing."""
        path = f"/machine/peripheral/{dev}"
        try:
            self.g.execute("qom-set", {"path": path, "property": "requested-size", "value": size})
        except QmpCommandError as e:
            return e.desc
        start = last_change = time.monotonic()
        last = self.g.execute("qom-get", {"path": path, "property": "size"})
        while last != size:
            time.sleep(0.5)
            cur = self.g.execute("qom-get", {"path": path, "property": "size"})
            now = time.monotonic()
            if cur != last:
                last, last_change = cur, now
            elif now - last_change > VMEM_STALL_S:
                self.log(f"  {dev}: size stopped at {size_text(cur)} (requested {size_text(size)})")
                break
            if now - start > VMEM_MAX_S:
                self.log(f"  {dev}: size {size_text(cur)} after {VMEM_MAX_S:.0f} s (requested {size_text(size)})")
                break
        return 0


def _prepare(
    scenario_path: str | Path, kernel: str, verbose: bool, scenario: Scenario | None
) -> tuple[Scenario, KernelPaths, GuestConfig, Callable[[str], None]]:
    """The scenario, the cached kernel, the guest's configuration and a logger; ScenarioError for what cannot run."""
    if kernel not in KERNELS:
        raise ScenarioError(f"unknown kernel {kernel!r}; expected one of {', '.join(KERNELS)}")
    sc = scenario or load_scenario(scenario_path)
    if not sc.machine.qemu_args:
        raise ScenarioError(f"{sc.path}: machine {sc.machine.name!r} has no QEMU options; the lab runs only machine presets")
    kp = cached_kernel(kernel)
    log: Callable[[str], None] = (lambda msg: print(msg, flush=True)) if verbose else (lambda _msg: None)
    return sc, kp, GuestConfig(kp.vmlinuz, build_initramfs(kp), sc.machine, sc.cmdline, tuple(sc.devices)), log


def run_scenario(
    scenario_path: str | Path, kernel: str, out_path: str | Path | None = None, verbose: bool = False, scenario: Scenario | None = None
) -> dict[str, Any]:
    """Boot ``kernel`` ("6.1" or "6.12") under QEMU, run the scenario's steps, return (and write) the observation."""
    sc, kp, cfg, log = _prepare(scenario_path, kernel, verbose, scenario)
    t0 = time.monotonic()
    with Guest(cfg, verbose=verbose) as g:
        log(f"{sc.name} on {kernel}: booted in {g.boot_s:.1f} s ({g.release})")
        run = LabRun(g, sc, log)
        results = [run.boot_result()]
        for i, step in enumerate(sc.steps, 1):
            ts = time.monotonic()
            results.append(run.step_result(step))
            log(f"  step {i} {step.describe()}: rc {results[-1]['rc']!r} ({time.monotonic() - ts:.1f} s)")
        obs = {"scenario": header(sc, kp, g.release), "results": results, "wall_s": round(time.monotonic() - t0, 1)}
    if out_path is not None:
        write_json(obs, Path(out_path))
    return obs


def run_trace(
    scenario_path: str | Path,
    kernel: str,
    out_path: str | Path,
    verbose: bool = False,
    scenario: Scenario | None = None,
    obs_path: str | Path | None = None,
    start: Callable[[GuestConfig], Guest] | None = None,
) -> dict[str, Any]:
    """Boot ``kernel`` under QEMU, run the scenario with the guest's ``mhp record`` running from step ``record_from`` on,
    and keep the trace it wrote (``out_path``); the host's own samples after every step go to ``obs_path`` (the
    observation format), an independent check of what the recorder saw. ``start`` gives the guest for the
    configuration instead of booting one (traces/lab/snapshot.py: a restored snapshot).

    Returns a summary: ``boot_s`` (QEMU start to the agent's first answer), ``step_s`` (each step until the guest
    settled), ``wall_s`` (QEMU start to the trace's end), ``bytes``, ``release``.
    """
    sc, kp, cfg, log = _prepare(scenario_path, kernel, verbose, scenario)
    t0 = time.monotonic()
    step_s: list[float] = []
    with start(cfg) if start is not None else Guest(cfg, verbose=verbose) as g:
        log(f"{sc.name} on {kernel}: booted in {g.boot_s:.1f} s ({g.release})")
        run = LabRun(g, sc, log)
        results = [run.boot_result()]
        for i, step in enumerate(sc.steps, 1):
            if i == sc.record_from + 1 or (i == 1 and not sc.record_from):
                start_recorder(g, f"{sc.name} on {kp.package} {kp.version}")
            if i > sc.record_from:
                guest_call(g, f"record_mark {shlex.quote(mark_text(i, step))}")
            ts = time.monotonic()
            results.append(run.step_result(step))
            step_s.append(round(time.monotonic() - ts, 1))
            log(f"  step {i} {step.describe()}: rc {results[-1]['rc']!r} ({step_s[-1]:.1f} s)")
        if sc.record_from == len(sc.steps):
            start_recorder(g, f"{sc.name} on {kp.package} {kp.version}")
        guest_call(g, "record_mark end")
        guest_call(g, "record_stop")
        data = g.streamed_trace()
        obs = {"scenario": header(sc, kp, g.release) | {"record_from": sc.record_from}, "results": results, "wall_s": round(time.monotonic() - t0, 1)}
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_path, data)
    if obs_path is not None:
        write_json(obs, Path(obs_path))
    return {"boot_s": round(g.boot_s, 1), "step_s": step_s, "wall_s": obs["wall_s"], "bytes": len(data), "release": g.release}


def mark_text(i: int, step: Step) -> str:
    """The mark before step ``i`` (a record string holds 255 bytes)."""
    return f"step {i}: {step.describe()}".encode()[:255].decode(errors="ignore")


def start_recorder(g: Guest, detail: str) -> None:
    """Start the guest's ``mhp record`` (it has taken its snapshot when this returns)."""
    guest_call(g, f"record_start --source-detail {shlex.quote(detail[:200])}", timeout=180)


def guest_call(g: Guest, command: str, timeout: float = 120.0) -> str:
    """An agent command that must succeed; LabError with its output otherwise."""
    rc, out = g.agent(command, timeout=timeout)
    if rc:
        raise LabError(f"guest: {command.split()[0]} failed (status {rc}): {out[-1500:]}{g.console_tail()}")
    return out


def write_json(obj: Any, path: Path) -> None:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def run_corpus(
    scenarios: list[str | Path],
    kernels: tuple[str, ...],
    out_dir: str | Path,
    verbose: bool = False,
    log: Callable[[str], None] = print,
    trace: bool = False,
    obs_out_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Run every scenario on every kernel, one guest at a time, writing OUT_DIR/<kernel>/<name>.json (``trace``:
    <name>.mhpt); one summary per run."""
    summary = []
    for kernel in kernels:
        for path in scenarios:
            name = Path(path).stem
            t0 = time.monotonic()
            entry: dict[str, Any] = {"scenario": name, "kernel": kernel}
            try:
                if trace:
                    obs_path = Path(obs_out_dir) / kernel / f"{name}.json" if obs_out_dir else None
                    entry.update(run_trace(path, kernel, Path(out_dir) / kernel / f"{name}.mhpt", verbose, obs_path=obs_path))
                    entry["steps"] = len(entry["step_s"])
                else:
                    obs = run_scenario(path, kernel, Path(out_dir) / kernel / f"{name}.json", verbose)
                    entry.update(boot_s=obs["results"][0]["boot_s"], wall_s=obs["wall_s"], steps=len(obs["results"]) - 1)
            except (LabError, LabSetupError, ScenarioError, OSError) as e:
                entry.update(error=str(e), wall_s=round(time.monotonic() - t0, 1))
                log(f"{kernel} {name}: FAILED after {entry['wall_s']} s: {e}")
            else:
                log(f"{kernel} {name}: {entry['steps']} steps, boot {entry['boot_s']} s, wall {entry['wall_s']} s")
            summary.append(entry)
    return summary
