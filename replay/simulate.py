"""Scenario -> events -> model -> layouts: run a scenario file through the model."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version

from replay.layout import Run, block_runs, format_runs, format_zone_rows, zone_table
from replay.model.drivers import AcpiDimm, VirtioMem
from replay.model.findings import Finding
from replay.model.kernel import Kernel, SnapshotError
from replay.model.outcome import Outcome, Unknowable
from replay.model.params import boot_params_from_cmdline, module_params, params_text
from replay.model.profiles import Profile, get_profile
from replay.observe import model_digest, observe_outcome, observe_zones
from traces.events import Attr, BlockState, Event, InjectFailure, Mark, OfflineBlock, OnlineBlock, Op, Param, ParamWrite, Source
from traces.header import Capture, TraceHeader
from traces.scenario import Scenario, ScenarioError, Step
from traces.writer import TraceWriter

PARAM_IDS = {"online_policy": Param.ONLINE_POLICY, "auto_movable_ratio": Param.AUTO_MOVABLE_RATIO, "auto_movable_numa_aware": Param.AUTO_MOVABLE_NUMA_AWARE}


@dataclass(slots=True)
class StepResult:
    """The state after one step (step 0 is boot)."""

    index: int
    label: str
    rc: int
    runs: list[Run]
    zones: list[dict[str, object]]
    findings: list[Finding]
    params: dict[str, str] = field(default_factory=dict)  # memory_hotplug module parameters and auto_online_blocks, as read
    block_size: int = 0
    unknowable: list[Unknowable] = field(default_factory=list)  # outcomes the model cannot predict, in step order

    @property
    def errno(self) -> str | None:
        """The step's errno name (its first failure), None on success."""
        return errno.errorcode.get(-self.rc, str(self.rc)) if self.rc < 0 else None

    def to_json(self) -> dict[str, object]:
        return {
            "step": self.index,
            "label": self.label,
            "rc": self.rc,
            "errno": self.errno,
            "unknowable": [u.to_json() for u in self.unknowable],
            "params": self.params,
            "block_size": self.block_size,
            "runs": [r.to_json() for r in self.runs],
            "zones": self.zones,
            "findings": [f.to_json() for f in self.findings],
        }

    def lines(self, multi_node: bool) -> list[str]:
        """The step as text: its layout, populated zones, outcomes the model cannot predict, findings."""
        rc = f"  (rc {self.rc} {self.errno})" if self.rc else ""
        out = [f"== step {self.index}: {self.label}{rc}", *format_runs(self.runs, multi_node), *format_zone_rows(self.zones)]
        out += [f"   unknowable: {u.describe()}" for u in self.unknowable]
        return out + [f"   finding {f.signature}: {f.message}" for f in self.findings]


@dataclass(slots=True)
class Simulation:
    """Drives one scenario through a Kernel; every event it issues (with the observations a real
    kernel would give) goes to ``sink``, by default the ``events`` list."""

    scenario: Scenario
    profile: Profile
    kernel: Kernel = field(init=False)
    events: list[Event] = field(default_factory=list)
    sink: Callable[[Event], object] | None = None
    group_names: dict[int, str] = field(default_factory=dict)
    dimms: dict[str, AcpiDimm] = field(default_factory=dict)
    vmems: dict[str, VirtioMem] = field(default_factory=dict)
    used: list[tuple[int, int]] = field(default_factory=list)  # device memory ranges in use
    findings: list[Finding] = field(default_factory=list)
    unknowable: list[Unknowable] = field(default_factory=list)
    driving: bool = False  # a virtio-mem driver's work queue runs (its own onlines notify no retry)
    applying: Event | None = None  # the event the kernel was last given (where a crash of the model happened)

    def __post_init__(self) -> None:
        self.kernel = Kernel(self.profile)
        if self.sink is None:
            self.sink = self.events.append

    def emit(self, ev: Event) -> Outcome:
        """Apply one event, passing it and the observations a real kernel would give to the sink."""
        self.applying = ev
        try:
            out = self.kernel.apply(ev)
        except SnapshotError as e:  # an explicit memory map no machine can have (checked at the first request)
            sc = self.scenario
            raise ScenarioError(f"machine: not a boot layout a kernel can have: {e}", path=sc.path, line=sc.machine_line or 1) from None
        sink = self.sink
        assert sink is not None
        sink(ev)
        for obs in observe_outcome(self.kernel.m, ev, out):
            sink(obs)
        self.findings.extend(out.findings)
        self.unknowable.extend(out.unknowable)
        if out.changes and not self.driving:
            self._memory_online(out)
        return out

    def _memory_online(self, out: Outcome) -> None:
        """virtio-mem's MEM_ONLINE notifier: a device whose block someone onlined may plug again."""
        onlined = {ch.mgid for ch in out.changes if ch.state is BlockState.ONLINE}
        for vm in self.vmems.values():
            if vm.mgid in onlined:
                self.drive(partial(vm.memory_online, self.kernel.m, self.emit))

    def drive(self, work: Callable[[], int]) -> int:
        """Run a driver's work (its hotplug requests do not notify it again)."""
        self.driving, was = True, self.driving
        try:
            return work()
        finally:
            self.driving = was

    def observe_state(self) -> None:
        """Zone counters and the state digest, as a recorder samples them."""
        assert self.sink is not None
        samples: list[Event] = [*observe_zones(self.kernel.m), model_digest(self.kernel.m)]
        for ev in samples:
            self.sink(ev)

    def place(self, size: int, align: int) -> int:
        """Where QEMU's first fit in its device memory region puts a device of ``size`` bytes."""
        addr = self.scenario.machine.device_memory_base
        for start, end in sorted(self.used):
            addr = -(-addr // align) * align
            if addr + size <= start:
                break
            addr = max(addr, end)
        return -(-addr // align) * align

    def allocate(self, size: int, align: int) -> int:
        """The device's place (``place``), now taken."""
        addr = self.place(size, align)
        self.used.append((addr, addr + size))
        return addr

    def boot(self) -> StepResult:
        """Boot snapshot, command-line parameters and the virtio-mem drivers' probe."""
        sc = self.scenario
        for ev in sc.machine.events:
            self.emit(ev)
        self.emit(boot_params_from_cmdline(sc.cmdline, self.profile.default_online_type, self.profile.memmap_force_mode))
        m = self.kernel.m
        for d in sc.devices:
            align = max(d.block_size, m.block_size)
            vm = VirtioMem(d.id, d.node, self.allocate(d.max_size, align), d.max_size, d.block_size, m.block_size, d.unplug_online)
            self.vmems[d.id] = vm
            self.drive(partial(vm.probe, self.emit))
            self.group_names[vm.mgid] = d.id
        return self.snapshot(0, "boot", 0, 0, 0)

    def run_step(self, i: int, step: Step) -> StepResult:
        """Apply scenario step ``i`` (1-based) and return the state after it."""
        start, marks = len(self.findings), len(self.unknowable)
        rc = self.apply_step(i, step)
        return self.snapshot(i, step.describe(), rc, start, marks)

    def apply_step(self, i: int, step: Step) -> int:
        """Mark and apply scenario step ``i``; its return code (the first failure, else 0)."""
        self.emit(Mark(f"step {i}: {step.describe()}"))
        return self._do(step)

    def _do(self, step: Step) -> int:
        m = self.kernel.m
        a = step.args
        if step.action == "dimm":
            name = a["id"] or f"dimm{len(self.dimms)}"
            if name in self.dimms:
                raise ScenarioError(f"DIMM id {name!r} is already plugged", path=self.scenario.path, line=step.line)
            dimm = AcpiDimm(name, a["node"], self.allocate(a["dimm"], m.block_size), a["dimm"])
            self.dimms[name] = dimm
            rc = dimm.plug(m, self.emit)
            self.group_names[dimm.mgid] = name
            return rc
        if step.action == "unplug":
            plugged = self.dimms.get(a["unplug"])
            if plugged is None:
                raise ScenarioError(f"no plugged DIMM {a['unplug']!r}", path=self.scenario.path, line=step.line)
            rc = plugged.unplug(m, self.emit)
            if not rc:
                del self.dimms[plugged.name]
                self.used.remove((plugged.start, plugged.start + plugged.size))
            return rc
        if step.action == "vmem":
            vm = self.vmems[a["vmem"]]
            return self.drive(lambda: vm.resize(m, self.emit, a["size"]))
        if step.action in ("online", "offline"):
            attr = Attr.STATE if a["attr"] == "state" else Attr.ONLINE
            first, last = a[step.action]
            rc = 0
            for b in range(first, last + 1):
                if a["fails"]:
                    self.emit(InjectFailure(b, Op.ONLINE if step.action == "online" else Op.OFFLINE, a["fails"]))
                ev: Event = OnlineBlock(b, a["type"], attr, Source.USER) if step.action == "online" else OfflineBlock(b, attr, Source.USER)
                block_rc = self.emit(ev).rc  # every block, like a shell loop over them: a failure does not stop the rest
                rc = rc or block_rc
            return rc
        if step.action == "param":
            return self.emit(ParamWrite(PARAM_IDS[a["param"]], a["value"])).rc
        if step.action == "mark":
            return 0  # labels the layout only (apply_step's mark carries it)
        if step.action == "run":
            return 0  # a guest workload: it moves no memory block (what it allocates is what the model cannot see)
        return self.emit(ParamWrite(Param.AUTO_ONLINE_BLOCKS, a["auto_online"].label)).rc

    def snapshot(self, index: int, label: str, rc: int, findings_from: int, unknowable_from: int) -> StepResult:
        m = self.kernel.m
        self.observe_state()
        params = {**module_params(m.params), "auto_online_blocks": m.params.auto_online_blocks.label}
        runs, zones = block_runs(m, self.group_names), zone_table(m)
        return StepResult(index, label, rc, runs, zones, self.findings[findings_from:], params, m.block_size, self.unknowable[unknowable_from:])


def simulate(scenario: Scenario, profile: str | None = None, sim: Simulation | None = None) -> Iterator[StepResult]:
    """Boot the scenario's machine and yield the state after boot and after each step.

    Pass ``sim`` (a fresh Simulation) to keep its events, e.g. to write them as a trace.
    """
    sim = sim or Simulation(scenario, get_profile(profile or scenario.profile or "6.1"))
    yield sim.boot()
    for i, step in enumerate(scenario.steps, 1):
        yield sim.run_step(i, step)


def trace_header(sim: Simulation) -> TraceHeader:
    """The header of a trace written from a simulation."""
    params = params_text(sim.kernel.m.params)
    return TraceHeader(
        writer=f"mhp-replay {version('mhp-replay')}",
        kernel_release=sim.profile.release,
        cmdline=sim.scenario.cmdline,
        block_size=sim.kernel.m.block_size,
        params=params,
        source=Capture.SIMULATION,
        source_detail=f"{sim.scenario.path} profile {sim.profile.name}",
    )


def write_trace(sim: Simulation, path: str) -> int:
    """Write a finished simulation's events (with model-filled observations) as a trace."""
    with TraceWriter(path, trace_header(sim)) as w:
        for i, ev in enumerate(sim.events):
            w.write(ev, ts=i * 1000)
    return len(sim.events)
