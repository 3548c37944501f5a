"""Realistic synthetic workloads: VMs resized with DIMMs and virtio-mem (SBM/BBM), grow/shrink
cycles, NUMA, user-space onlining in any order, parameter changes and failing offlines.

The generator drives the same Simulation (scenario steps -> drivers -> events -> model) as
``mhp simulate``; the model fills in the outcomes, so a generated trace replays without divergence.
"""

from __future__ import annotations

import dataclasses
import errno
import random
from collections.abc import Callable

from replay.model.profiles import Profile, get_profile
from replay.simulate import Simulation, trace_header
from traces.events import Event, OnlineType
from traces.header import Capture
from traces.machines import PRESETS
from traces.scenario import Scenario, Step, VirtioMemSpec
from traces.writer import TraceWriter

GIB = 1 << 30
MIB = 1 << 20
RATIOS = (301, 301, 301, 200, 100, 500, 1000, 50)


class _Enough(Exception):
    """The sink has all the events it wants."""


MIXED_PRESETS = ("qemu-q35-4G", "qemu-q35-4G-2node", "qemu-q35-4G-memless1")  # the default machines, weighted 6:3:1
HIGH = 4 * GIB  # users online and offline blocks from here up: boot memory below 4 GiB stays as booted


def random_scenario(rng: random.Random, preset: str | None = None) -> Scenario:
    """A machine (``preset``, else one of MIXED_PRESETS), a command line and virtio-mem devices."""
    machine = PRESETS[preset if preset is not None else rng.choices(MIXED_PRESETS, (6, 3, 1))[0]]
    nodes = [n for n in range(64) if machine.events[0].possible_nodes >> n & 1]  # type: ignore[union-attr]
    policy = "auto-movable" if rng.random() < 0.85 else "contig-zones"
    parts = [
        f"memhp_default_state={rng.choice(('online', 'online', 'online', 'offline'))}",
        f"memory_hotplug.online_policy={policy}",
        f"memory_hotplug.auto_movable_ratio={rng.choice(RATIOS)}",
        f"memory_hotplug.auto_movable_numa_aware={rng.choice('YN')}",
    ]
    if rng.random() < 0.15:
        parts.append("memory_hotplug.memmap_on_memory=1")
    devices = [
        VirtioMemSpec(f"vm{i}", rng.choice(nodes), rng.choice((8, 16, 32)) * GIB, rng.choice((2 * MIB, 2 * MIB, 2 * MIB, 256 * MIB, GIB)))
        for i in range(rng.choice((0, 1, 1, 2, 3)))
    ]
    return Scenario("generated", "generated", "mhp gen", machine, None, " ".join(parts), devices)


class Workload:
    """Chooses the next step from the model's current state."""

    def __init__(self, sim: Simulation, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng
        self.nodes = sorted(n for n, node in sim.kernel.m.nodes.items() if node.online)
        self.dimm_no = 0

    def step(self) -> Step:
        rng, sim = self.rng, self.sim
        size = sim.kernel.m.block_size
        blocks = sorted(b for b in sim.kernel.m.blocks if b * size >= HIGH)
        choices: list[tuple[float, Callable[[], Step]]] = [
            (3.0 if sim.vmems else 0.0, self._resize),
            (1.0 if len(sim.dimms) < 6 and self._room() >= self._unit() else 0.0, self._plug),
            (0.8 if sim.dimms else 0.0, self._unplug),
            (3.5 if blocks else 0.0, lambda: self._user(blocks)),
            (0.4, self._param),
            (0.3, lambda: _step("auto_online", auto_online=rng.choice(list(OnlineType)))),
        ]
        weights = [w for w, _ in choices]
        return rng.choices([f for _, f in choices], weights)[0]()

    def _resize(self) -> Step:
        vm = self.sim.vmems[self.rng.choice(sorted(self.sim.vmems))]
        size = self.rng.randrange(0, vm.max_size // vm.sb + 1) * vm.sb
        return _step("vmem", vmem=vm.name, size=size)

    def _unit(self) -> int:
        """The DIMM size unit: whole memory blocks, at least 128 MiB."""
        return max(128 * MIB, self.sim.kernel.m.block_size)

    def _room(self) -> int:
        """Bytes of DIMMs the machine can still take: its QEMU maxmem less boot RAM, the virtio-mem devices' maximum
        sizes and the DIMMs plugged."""
        sim = self.sim
        return sim.scenario.machine.hotplug_room - sum(vm.max_size for vm in sim.vmems.values()) - sum(d.size for d in sim.dimms.values())

    def _fits(self, size: int) -> bool:
        """QEMU's first fit finds a place for a DIMM of ``size`` bytes inside its device memory region."""
        return self.sim.place(size, self.sim.kernel.m.block_size) + size <= self.sim.scenario.machine.device_memory_end

    def _plug(self) -> Step:
        """A DIMM as large as the machine has room for, and a place: else an unplug (a full machine frees memory first)."""
        self.dimm_no += 1
        unit = self._unit()
        size = min(self.rng.choice((1, 2, 4, 8, 16, 32)) * unit, self._room() // unit * unit)
        while size > unit and not self._fits(size):
            size -= unit
        if not self._fits(size):
            return self._unplug() if self.sim.dimms else self._param()
        return _step("dimm", dimm=size, node=self.rng.choice(self.nodes), id=f"dimm{self.dimm_no}")

    def _unplug(self) -> Step:
        return _step("unplug", unplug=self.rng.choice(sorted(self.sim.dimms)))

    def _user(self, blocks: list[int]) -> Step:
        rng = self.rng
        first = rng.choice(blocks)
        last = min(first + rng.choice((0, 0, 0, 3, 7)), blocks[-1])
        attr = rng.choice(("state", "state", "state", "online"))
        if rng.random() < 0.5:
            fails = rng.choice((errno.EBUSY, errno.EINTR)) if rng.random() < 0.15 else 0
            return _step("offline", offline=(first, last), attr=attr, fails=fails)
        kind = rng.choice((OnlineType.ONLINE, OnlineType.ONLINE, OnlineType.ONLINE_KERNEL, OnlineType.ONLINE_MOVABLE))
        fails = errno.ENOMEM if rng.random() < 0.03 else 0
        return _step("online", online=(first, last), type=kind, attr=attr, fails=fails)

    def _param(self) -> Step:
        rng = self.rng
        name = rng.choice(("auto_movable_ratio", "auto_movable_ratio", "auto_movable_numa_aware", "online_policy"))
        value = {
            "auto_movable_ratio": str(rng.choice(RATIOS)),
            "auto_movable_numa_aware": rng.choice("YN"),
            "online_policy": rng.choice(("auto-movable", "contig-zones")),
        }[name]
        return _step("param", param=name, value=value)


def _step(action: str, **args: object) -> Step:
    return Step(action, args, 0, {k: v for k, v in args.items() if v is not None})


def run_workload(scenario: Scenario, rng: random.Random, events: int, profile: Profile, sink: Callable[[Event], object]) -> None:
    """Boot the scenario and apply random steps until ``events`` events went to ``sink``."""
    count = 0

    def counted(ev: Event) -> None:
        nonlocal count
        if count >= events:
            raise _Enough
        sink(ev)
        count += 1

    sim = Simulation(scenario, profile, sink=counted)
    try:
        sim.boot()
        work = Workload(sim, rng)
        i = 0
        while True:
            i += 1
            sim.apply_step(i, work.step())
            if i % 8 == 0:
                sim.observe_state()
    except _Enough:
        pass


def generate_trace(path: str, seed: int, events: int, profile: str = "6.1", preset: str | None = None) -> int:
    """Write a generated trace (on ``preset``, else a mix of MIXED_PRESETS); returns the number of events."""
    prof = get_profile(profile)
    rng = random.Random(seed)
    scenario = random_scenario(rng, preset)
    booted = Simulation(scenario, prof)  # the header states the booted machine's geometry and parameters
    booted.boot()
    how = f"mhp gen --seed {seed} --profile {prof.name}" + (f" --preset {preset}" if preset else "")
    header = dataclasses.replace(trace_header(booted), source=Capture.GENERATOR, source_detail=how)
    with TraceWriter(path, header) as w:
        ts = 0

        def write(ev: Event) -> None:
            nonlocal ts
            ts += 1000
            w.write(ev, ts=ts)

        run_workload(scenario, rng, events, prof, write)
    return events
