"""mhp confirm: traces as lab scenarios (what a real machine can produce and why not), the verdicts, the stored verdicts of
the regressions, and one end-to-end run per kernel in the lab."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from replay.cli import main
from replay.confirm import KERNELS, Verdict, confirm, exit_code, judge, kernels_for, order_difference, real_trace_path, with_lab_writes
from replay.model.machine import Machine
from replay.model.params import boot_params_from_cmdline
from replay.model.profiles import PROFILES, get_profile
from replay.observe import model_digest, observe_block, observe_zones
from replay.replayer import replay_file
from replay.simulate import Simulation, simulate, trace_header
from replay.translate import differences, read_records, request_key, simulate_recorded, translate
from tests.helpers import require_lab
from traces.codec import FLAG_INFERRED
from traces.events import (
    AddFlags,
    AddMemory,
    Attr,
    BlockObserved,
    BlockState,
    BootBlocks,
    BootGroup,
    BootMachine,
    BootParams,
    BootZone,
    Event,
    GroupRegister,
    InjectFailure,
    Mark,
    OfflineAndRemoveMemory,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    Op,
    Param,
    ParamWrite,
    RemoveMemory,
    Result,
    Source,
    ZoneType,
)
from traces.lab.agree import marked_observations
from traces.scenario import Scenario, load_scenario, parse_scenario
from traces.writer import TraceWriter

ROOT = Path(__file__).resolve().parent.parent
REGRESSIONS = ROOT / "corpus" / "regressions"
SCENARIOS = ROOT / "corpus" / "scenarios"
REAL = ROOT / "corpus" / "real"
REG_TRACES = sorted(p for p in REGRESSIONS.glob("*.mhpt") if not p.name.endswith(".real.mhpt"))
# Regressions minimised from inputs of real-machine actions (mhp fuzz --target steps): expressible by construction.
STEP_TRACES = [p for p in REG_TRACES if json.loads(p.with_suffix(".json").read_text()).get("expressible")]
INEXPRESSIBLE_TRACES = [p for p in REG_TRACES if p not in STEP_TRACES]
REAL_TRACES = sorted(p for p in REAL.glob("*/*.mhpt") if p.parent.name in PROFILES)
# Real traces no real machine can replay as recorded, and why.
REAL_INEXPRESSIBLE = {"dimm-unplug-attach": "memory freed before the recording left a gap"}  # the DIMM unplugged before it
# Scenarios whose guest workload (run steps) made the kernel answer as it did: a trace does not show the workload, so
# its translation keeps the machine and the requests but cannot bring back the cause (dimm-unplug-busy's slab).
REAL_WORKLOAD = {"dimm-unplug-busy"}

# Why each regression cannot run on a real machine: past its minimised boot snapshot (no preset), the first request
# no real machine issues.
REASONS = {
    "AM-RATIO-NODE_movable-decision": (4, "driver-managed memory in a static group (dax/kmem)"),
    "AM-RATIO-NODE_state": (5, "memory on node 1, which the machine (qemu-q35-2G: nodes 0) lacks"),
    "AM-RATIO_movable-decision": (4, "a group registered smaller than its memory (1 page for 128M)"),
    "AM-RATIO_state": (3, "a group registered smaller than its memory (1 page for 256M)"),
    "AM-STATIC-MIXED_Normal": (7, "a static group without its add_memory right after it"),
    "DIFF_AddMemory_decision_B2-vs-ref": (4, "a group registered smaller than its memory (1 page for 128M)"),
    "DIFF_AddMemory_decision_M6-vs-ref": (3, "on a real machine this step gives add_memory start=0x100000000"),
    "DIFF_AddMemory_decision_M9-vs-ref": (3, "a static group without its add_memory right after it"),
    "DIFF_AddMemory_numbers_M2-vs-ref": (4, "on a real machine this step gives add_memory start=0x100000000"),
    "DIFF_OfflineBlock_rc_M7-vs-ref": (3, "a group registered smaller than its memory (1 page for 512M)"),
    "DIFF_OnlineBlock_decision_M1-vs-ref": (4, "a group registered smaller than its memory (1 page for 1G)"),
    "DIFF_OnlineBlock_numbers_M3-vs-ref": (3, "a group registered smaller than its memory (1 page for 256M)"),
    # new causes of known signatures (fuzz/cause.py), found by the reference model's campaigns on 6.1 and 7.2
    "AM-RATIO-NODE_movable-decision__cause-2": (7, "a static group without its add_memory right after it"),
    "AM-RATIO-NODE_state__cause-2": (4, "a group registered smaller than its memory (1 page for 256M)"),
    "AM-RATIO-NODE_state__cause-3": (1, "a static group of 1 pages holding memory0..memory63"),
    "AM-RATIO-NODE_state__cause-4": (6, "virtio-mem adds one unit (256M) at a time, not 128M"),
    "AM-RATIO-NODE_state__cause-5": (5, "a probe-style add_memory without a driver (no memory group)"),
    "AM-RATIO-NODE_state__cause-6": (8, "virtio-mem adds one unit (512M) at a time, not 256M"),
    "AM-RATIO-NODE_state__cause-7": (6, "memory on node 1, which the machine (qemu-q35-2G: nodes 0) lacks"),
    "AM-RATIO-NODE_state__cause-8": (1, "a static group of 1 pages holding memory0..memory0"),
    "AM-RATIO_movable-decision__cause-2": (7, "a static group without its add_memory right after it"),
    "AM-RATIO_state__cause-2": (1, "a static group of 1 pages holding memory0..memory63"),
    "AM-RATIO_state__cause-3": (6, "virtio-mem adds one unit (256M) at a time, not 128M"),
    "AM-RATIO_state__cause-4": (1, "a static group without memory in the snapshot"),
    "AM-RATIO_state__cause-5": (5, "a probe-style add_memory without a driver (no memory group)"),
    "AM-RATIO_state__cause-6": (8, "virtio-mem adds one unit (512M) at a time, not 256M"),
    "AM-STATIC-MIXED_Normal__cause-2": (1, "a static group of 1 pages holding memory0..memory63"),
    "AM-STATIC-MIXED_Normal__cause-3": (1, "a static group of 262144 pages holding memory32..memory47"),
    "AM-STATIC-MIXED_DMA32": (10, "driver-managed memory in a static group (dax/kmem)"),
}


def _stem(p: Path) -> str:
    return p.name.removesuffix(".mhpt")


def write_events(path: Path, events: list[Event], sim: Simulation) -> str:
    with TraceWriter(str(path), trace_header(sim)) as w:
        for ev in events:
            w.write(ev)
    return str(path)


def simulated(name: str, profile: str = "6.1", extra: list[Event] | None = None) -> tuple[Simulation, list[Event]]:
    """A corpus scenario run through the model (the events a recorder would write)."""
    sc = load_scenario(SCENARIOS / f"{name}.toml")
    sim = Simulation(sc, get_profile(profile))
    for _ in simulate(sc, sim=sim):
        pass
    return sim, sim.events + (extra or [])


def small(tmp_path: Path, mutate: Any, cmdline: str = "memhp_default_state=online memory_hotplug.online_policy=auto-movable") -> str:
    """A one-DIMM scenario's simulated trace (plug 1G, online nothing, a ratio write, offline 48), changed by ``mutate``."""
    doc = {
        "name": "small",
        "machine": {"preset": "qemu-q35-4G"},
        "kernel": {"cmdline": cmdline},
        "step": [{"dimm": "1G"}, {"param": "auto_movable_ratio", "value": "100"}, {"offline": 48}],
    }
    sc = parse_scenario(doc, "small.toml")
    sim = Simulation(sc, get_profile("6.1"))
    for _ in simulate(sc, sim=sim):
        pass
    events = list(sim.events)
    mutate(events)
    return write_events(tmp_path / "small.mhpt", events, sim)


def index_of(events: list[Event], kind: type, nth: int = 0) -> int:
    return [i for i, ev in enumerate(events) if type(ev) is kind][nth]


# --- regressions and real traces ---------------------------------------------------------------------------------


def test_every_regression_has_a_reason() -> None:
    assert {_stem(p) for p in INEXPRESSIBLE_TRACES} == set(REASONS)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("path", STEP_TRACES, ids=_stem)
def test_step_regressions_are_expressible(path: Path, kernel: str) -> None:
    assert translate(str(path), kernel).obstacle is None


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("path", INEXPRESSIBLE_TRACES, ids=_stem)
def test_regressions_are_inexpressible_for_their_reasons(path: Path, kernel: str) -> None:
    tr = translate(str(path), kernel)
    assert tr.obstacle is not None  # the requests are walked on the closest preset, to find their own obstacle
    assert tr.obstacles[0].why.startswith("no machine preset boots into this snapshot: the closest, ")
    index, why = REASONS[_stem(path)]
    assert len(tr.obstacles) == 2 and tr.obstacles[1].index == index and why in tr.obstacles[1].why, tr.obstacles


@pytest.mark.parametrize("path", REAL_TRACES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_real_traces_translate_to_their_scenarios(path: Path) -> None:
    """A real trace translates on its own kernel into a scenario with the original's machine, parameters and devices
    whose simulation issues the original scenario's hot-adds and removals."""
    kernel = path.parent.name
    tr = translate(str(path), kernel)
    if path.stem in REAL_INEXPRESSIBLE:
        assert tr.obstacle is not None and REAL_INEXPRESSIBLE[path.stem] in tr.obstacle.why
        return
    assert tr.obstacle is None, tr.obstacle
    assert tr.scenario is not None
    orig = load_scenario(SCENARIOS / f"{path.stem}.toml")
    if path.stem in REAL_WORKLOAD:
        assert tr.scenario.machine.name == orig.machine.name
        return
    prof = get_profile(kernel)
    assert tr.scenario.machine.name == orig.machine.name
    assert [(d.node, d.block_size) for d in tr.scenario.devices] == [(d.node, d.block_size) for d in orig.devices]
    mine, theirs = simulate_recorded(tr.scenario, prof)[0], simulate_recorded(orig, prof)[0]
    if orig.record_from:  # attached mid-life: the prefix rebuilds the machine the original's steps left
        assert mine is not None and theirs is not None and differences(mine, theirs) == []
    else:
        assert mine is None and boot_params_from_cmdline(tr.scenario.cmdline, prof.default_online_type, prof.memmap_force_mode) == boot_params_from_cmdline(
            orig.cmdline, prof.default_online_type, prof.memmap_force_mode
        )
    assert _keys(tr.scenario, kernel, drivers_only=True) == _keys(orig, kernel, drivers_only=True)


def _keys(sc: Scenario, kernel: str, drivers_only: bool = False) -> list[Any]:
    """The requests (and results) a scenario's simulation issues once the recorder runs; ``drivers_only``: the drivers'
    (user writes in a recorder's trace differ in form: it infers them from the zone a block went to)."""
    memmap = "memmap_on_memory=1" in sc.cmdline
    keys = [(k, rc) for ev, rc in simulate_recorded(sc, get_profile(kernel))[1] if (k := request_key(ev, memmap)) is not None]
    return [(k, rc) for k, rc in keys if not drivers_only or k[0] in ("group_register", "group_unregister", "add_memory", "remove_memory")]


def snapshot_of(m: Machine) -> list[Event]:
    """A boot snapshot of a model machine as mhp record writes one mid-life (groups, hot-plugged blocks and all)."""
    p = m.params
    out: list[Event] = [
        BootMachine(m.block_size, sum(1 << n for n in m.possible_nodes), sum(1 << n for n in m.cpu_nodes)),
        BootParams(p.online_policy, p.auto_movable_ratio, p.auto_movable_numa_aware, p.auto_online_blocks, p.memmap_on_memory, p.movable_node),
    ]
    out += [BootGroup(g.mgid, g.nid, g.is_dynamic, g.pages) for g in sorted(m.groups.values(), key=lambda g: g.mgid)]
    for nid, node in sorted(m.nodes.items()):
        if node.online:
            out += [
                BootZone(nid, z.idx, z.zone_start_pfn if z.spanned_pages else 0, z.spanned_pages, z.present_pages, z.present_early_pages, z.cma_pages)
                for z in node.zones
            ]
    for b, mem in sorted(m.blocks.items()):
        zone = mem.zone.idx if mem.state is BlockState.ONLINE and mem.zone is not None else ZoneType.NONE
        out.append(BootBlocks(b, 1, mem.nid, mem.state, zone, mem.early, mem.group.mgid if mem.group else -1, mem.nr_vmemmap_pages, mem.present_pages))
    return out


ATTACH = sorted(p.stem for p in SCENARIOS.glob("*.toml") if load_scenario(p).record_from)


@pytest.mark.parametrize("profile", KERNELS)
@pytest.mark.parametrize("name", ATTACH)
def test_a_recording_attached_mid_life_gets_a_prefix(name: str, profile: str, tmp_path: Path) -> None:
    """A trace whose snapshot already holds hot-plugged memory (the attach scenarios, the snapshot taken after their
    record_from steps) becomes a prefix that rebuilds the snapshot from boot, then the recorded steps; a DIMM left behind
    a gap (memory unplugged before the recording) cannot be rebuilt."""
    sc = load_scenario(SCENARIOS / f"{name}.toml")
    sim = Simulation(sc, get_profile(profile))
    sim.boot()
    for i, step in enumerate(sc.steps[: sc.record_from], 1):
        sim.run_step(i, step)
    events = snapshot_of(sim.kernel.m)
    start = len(sim.events)
    for i, step in enumerate(sc.steps[sc.record_from :], sc.record_from + 1):
        sim.run_step(i, step)
    tr = translate(write_events(tmp_path / f"{name}.mhpt", events + sim.events[start:], sim), profile)
    if name == "dimm-unplug-attach":
        assert tr.obstacle is not None and "memory freed before the recording left a gap" in tr.obstacle.why
        return
    assert tr.obstacle is None, tr.obstacles
    assert tr.scenario is not None and tr.scenario.record_from > 0
    assert tr.doc["kernel"]["cmdline"].startswith("memhp_default_state=offline")  # the prefix onlines each block to its zone
    assert _keys(tr.scenario, profile) == _keys(sc, profile)


@pytest.mark.parametrize("profile", KERNELS)
@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_simulated_scenarios_translate_back(path: Path, profile: str, tmp_path: Path) -> None:
    """Every corpus scenario's simulated trace is expressible, except where the simulator injects a kernel's failure."""
    sim, events = simulated(path.stem, profile)
    tr = translate(write_events(tmp_path / "t.mhpt", events, sim), profile)
    if any(isinstance(ev, InjectFailure) for ev in events):
        assert tr.obstacle is not None and tr.obstacle.why.startswith("an injected failure") and tr.obstacle.index == index_of(events, InjectFailure)
        return
    assert tr.obstacle is None, tr.obstacle
    assert tr.scenario is not None and tr.scenario.machine is sim.scenario.machine
    assert tomllib.loads(tr.toml) == json.loads(json.dumps(tr.doc))  # the TOML text is the document


# --- what no real machine does ---------------------------------------------------------------------------------------


def _shift_dimm(ev: list[Event]) -> None:
    i = index_of(ev, AddMemory)
    ev[i] = ev[i]._replace(start=ev[i].start + (1 << 30))


def _insert(at_type: type, new: Event, after: bool = False) -> Any:
    def mutate(ev: list[Event]) -> None:
        ev.insert(index_of(ev, at_type) + after, new)

    return mutate


def _replace(kind: type, **fields: Any) -> Any:
    def mutate(ev: list[Event]) -> None:
        i = index_of(ev, kind)
        ev[i] = ev[i]._replace(**fields)

    return mutate


def _probe(ev: list[Event]) -> None:
    del ev[index_of(ev, GroupRegister)]
    i = index_of(ev, AddMemory)
    ev[i] = ev[i]._replace(flags=AddFlags.NONE, nid=0)


def _half_remove(ev: list[Event]) -> None:
    ev.append(RemoveMemory(0x180000000, 1 << 29))


def _vmem_remove_of_dimm(ev: list[Event]) -> None:
    ev.append(OfflineAndRemoveMemory(0x180000000, 1 << 30))


def _first(kind: type, nth: int = 0) -> Any:
    return lambda ev: index_of(ev, kind, nth)


def _last(ev: list[Event]) -> int:
    return len(ev) - 1


# case -> (how the small trace is changed, where the obstacle is, why)
CASES: dict[str, tuple[Any, Any, str]] = {
    "address": (_shift_dimm, _first(AddMemory), "QEMU places the DIMM at 0x180000000, not 0x1c0000000"),
    "inject": (_insert(ParamWrite, InjectFailure(48, Op.OFFLINE, 16)), _first(InjectFailure), "an injected failure"),
    "small-group": (_replace(GroupRegister, pages=1 << 17), _first(AddMemory), "a group registered smaller than its memory (131072 pages for 1G)"),
    "probe": (_probe, _first(AddMemory), "a probe-style add_memory without a driver"),
    "node": (_replace(GroupRegister, node=1), _first(GroupRegister), "memory on node 1, which the machine (qemu-q35-4G: nodes 0) lacks"),
    "late-vmem": (_insert(ParamWrite, GroupRegister(True, 0, 32768)), _first(GroupRegister, 1), "a virtio-mem device probed after boot"),
    "auto-online": (_insert(ParamWrite, ParamWrite(Param.AUTO_ONLINE_BLOCKS, "sometimes")), _first(ParamWrite), "the lab writes only the online types"),
    "kernel-online": (_insert(ParamWrite, OnlineBlock(49, 1, 0, Source.KERNEL)), _first(OnlineBlock), "an online request by the kernel"),
    "part-of-dimm": (_half_remove, _last, "removal of part of DIMM d0 (0x180000000+1G)"),
    "vmem-call": (_vmem_remove_of_dimm, _last, "offline_and_remove_memory of a DIMM: that is virtio-mem's call"),
}


@pytest.mark.parametrize("case", CASES)
def test_what_no_real_machine_does(case: str, tmp_path: Path) -> None:
    mutate, where, why = CASES[case]
    path = small(tmp_path, mutate)
    tr = translate(path, "6.1")
    assert tr.obstacle is not None and why in tr.obstacle.why, tr.obstacles
    assert tr.obstacle.index == where([r.event for r in read_records(path)[1]])


def test_the_small_trace_itself_is_expressible(tmp_path: Path) -> None:
    tr = translate(small(tmp_path, lambda ev: None), "6.1")
    assert tr.obstacle is None
    assert tr.doc["step"] == [{"dimm": "1G", "node": 0, "id": "d0"}, {"param": "auto_movable_ratio", "value": "100"}, {"offline": 48}]
    assert tr.doc["kernel"]["cmdline"].startswith("memhp_default_state=online memory_hotplug.online_policy=auto-movable memory_hotplug.auto_movable_ratio=301")


def test_a_boot_snapshot_no_preset_has_names_its_record(tmp_path: Path) -> None:
    def mutate(ev: list[Event]) -> None:
        i = next(i for i, e in enumerate(ev) if isinstance(e, BootZone) and e.zone is ZoneType.DMA)
        ev[i] = ev[i]._replace(present=3997, present_early=3997)

    path = small(tmp_path, mutate)
    tr = translate(path, "6.1")
    events = [r.event for r in read_records(path)[1]]
    assert tr.obstacle is not None and "zone DMA of node 0 (1, 4095, 3997, 3997, 0) vs (1, 4095, 3998, 3998, 0)" in tr.obstacle.why
    assert isinstance(events[tr.obstacle.index], BootZone) and events[tr.obstacle.index].zone is ZoneType.DMA


def test_hot_plugged_blocks_need_their_group(tmp_path: Path) -> None:
    def mutate(ev: list[Event]) -> None:
        ev.insert(0, BootBlocks(60, 1, 0, BlockState.OFFLINE, ZoneType.NONE, False, 0, 0, 32768))

    tr = translate(small(tmp_path, mutate), "6.1")
    assert tr.obstacle is not None and tr.obstacle.index == 0 and "blocks of group 0, which the snapshot does not define" in tr.obstacle.why


def test_kernels_for_the_header() -> None:
    assert kernels_for("6.1.0-56-amd64") == ["6.1"]
    assert kernels_for("6.12.117") == ["6.12"]
    assert kernels_for("5.10.0-30-amd64") == list(KERNELS) == kernels_for("")


# --- the verdict of a run (judged without the lab: the model's simulation stands in for the guest's trace) ------------


def stand_in(tmp_path: Path, trace: str, kernel: str, tamper: Any = None) -> tuple[str, dict[str, Any]]:
    """What a lab run of the trace's translation would leave if the kernel were the model: a recorder's trace of the
    simulation (user writes inferred from the zone they gave, failed ones unseen, no results; marks, an ``end`` mark) and
    the host's observation JSON (each write's exit status and the shell's message)."""
    tr = translate(trace, kernel)
    assert tr.scenario is not None
    sim = Simulation(tr.scenario, get_profile(kernel))
    sim.boot()
    rcs = []
    for i, step in enumerate([*tr.scenario.steps, None], 1):  # a mark, the full observation of the moment, the step
        sim.emit(Mark(f"step {i}: {step.describe()}" if step else "end"))
        m = sim.kernel.m
        for ev in (*(observe_block(m, b) for b in sorted(m.blocks)), *observe_zones(m), model_digest(m)):
            assert sim.sink is not None
            sim.sink(ev)
        if step is not None:
            rcs.append(sim._do(step))
    if tamper is not None:
        tamper(sim.events)
    writes: dict[int, list[list[Any]]] = {}
    step = 0
    path = tmp_path / "real.mhpt"
    with TraceWriter(str(path), trace_header(sim)) as w:
        events = sim.events
        for i, ev in enumerate(events):
            if isinstance(ev, Mark):
                step = int(ev.text.split(":")[0][5:]) if ev.text.startswith("step ") else 0
            user = isinstance(ev, (OnlineBlock, OfflineBlock, ParamWrite)) and getattr(ev, "source", Source.USER) is Source.USER
            if isinstance(ev, Result):
                continue  # a recorder sees no results
            if not user:
                w.write(ev, flags=FLAG_INFERRED if ev.KIND == "request" else 0)  # the drivers' calls, reconstructed
                continue
            rc = events[i + 1].rc
            block = getattr(ev, "block", None)
            writes.setdefault(step, []).append([block, 0 if rc == 0 else 1, "" if rc == 0 else f"sh: write error: {os.strerror(-rc)}"])
            if rc:
                continue  # no uevent
            if isinstance(ev, OnlineBlock):
                seen = next(e for e in events[i:] if isinstance(e, BlockObserved) and e.block == ev.block)
                kind = OnlineType.ONLINE_MOVABLE if seen.valid_zones == (ZoneType.MOVABLE,) else OnlineType.ONLINE_KERNEL
                ev = OnlineBlock(ev.block, kind, Attr.STATE, Source.USER)
            elif isinstance(ev, OfflineBlock):
                ev = OfflineBlock(ev.block, Attr.STATE, Source.USER)
            w.write(ev, flags=FLAG_INFERRED)
    seen_at = dict(marked_observations(str(path)))
    marks = [t for t in seen_at if t.startswith("step ")] + ["end"]
    results: list[dict[str, Any]] = [{"step": "boot", **seen_at[marks[0]]}]
    for k, rc in enumerate(rcs, 1):
        results.append({"rc": rc, **seen_at[marks[k]], "writes": writes.get(k)})
    return str(path), {"scenario": {"record_from": 0}, "results": results}


def quirk_trace(directory: Path, profile: str = "6.1") -> str:
    """The stale-online-type scenario (quirk Q1: a failed online_movable write sticks) as the model plays it."""
    sim, events = simulated("stale-online-type", profile)
    return write_events(directory / "stale-online-type.mhpt", events, sim)


@pytest.fixture(scope="module")
def quirk(tmp_path_factory: pytest.TempPathFactory) -> str:
    """quirk_trace: the trace the judge tests confirm."""
    return quirk_trace(tmp_path_factory.mktemp("quirk"))


def judged(tmp_path: Path, trace: str, expected: list[str], tamper: Any = None, obs_tamper: Any = None) -> Verdict:
    """confirm()'s judgement of a stand-in run: the lab's writes put back into the recorder's trace, then judge."""
    real, obs = stand_in(tmp_path, trace, "6.1", tamper)
    if obs_tamper is not None:
        obs_tamper(obs)
    tr = translate(trace, "6.1")
    recs = read_records(trace)[1]
    exact = str(tmp_path / "exact.mhpt")
    with_lab_writes(real, exact, tr, recs, obs)
    return judge(Verdict(trace, "6.1", "error", expected), tr, recs, exact, obs)


def test_the_lab_writes_replace_the_recorders_inferences(tmp_path: Path, quirk: str) -> None:
    """The exact trace holds the lab's writes as issued (types, attrs, failed ones) with the kernel's results, where the
    recorder inferred writes from zones: the same requests the input trace makes."""
    real, obs = stand_in(tmp_path, quirk, "6.1")
    tr = translate(quirk, "6.1")
    recs = read_records(quirk)[1]
    exact = str(tmp_path / "exact.mhpt")
    assert with_lab_writes(real, exact, tr, recs, obs) == 5
    user = (OnlineBlock, OfflineBlock)
    mine = [r.event for r in recs if isinstance(r.event, user)]
    put = [(r.event, r.flags) for r in read_records(exact)[1] if isinstance(r.event, (*user, Result))]
    assert [e for e, f in put if isinstance(e, user)] == mine and not any(f & FLAG_INFERRED for _, f in put)
    assert [e.rc for e, _ in put if isinstance(e, Result)] == [-22, 0, 0, 0, 0]
    inferred = [r.event for r in read_records(real)[1] if isinstance(r.event, user)]
    assert inferred[-1] == OnlineBlock(49, OnlineType.ONLINE_KERNEL, Attr.STATE, Source.USER) and len(inferred) == 4  # the failed write is unseen


def test_judge_confirms_what_the_model_agrees_with(tmp_path: Path, quirk: str) -> None:
    v = judged(tmp_path, quirk, ["AM-RATIO-NODE:state", "AM-RATIO:state"])
    assert v.verdict == "confirmed", v
    assert {"AM-RATIO:state", "AM-RATIO-NODE:state"} <= set(v.signatures_real)
    assert exit_code([v]) == 0


def test_judge_refutes_a_divergence(tmp_path: Path, quirk: str) -> None:
    def tamper(events: list[Event]) -> None:  # the kernel "shows" memory48 in Normal after its stale-type online
        i = max(i for i, e in enumerate(events) if isinstance(e, BlockObserved) and e.block == 48 and e.valid_zones == (ZoneType.MOVABLE,))
        events[i] = events[i]._replace(valid_zones=(ZoneType.NORMAL,))

    v = judged(tmp_path, quirk, [], tamper)
    assert v.verdict == "refuted" and v.divergence is not None and v.divergence["kind"] == "decision"
    assert exit_code([v]) == 1


def test_judge_refutes_a_result_the_model_gives_otherwise(tmp_path: Path, quirk: str) -> None:
    tr = translate(quirk, "6.1")
    k = next(k for k, s in enumerate(tr.doc["step"]) if s.get("type") == "online_movable")

    def accepted(obs: dict[str, Any]) -> None:  # the kernel "accepts" online_movable on an online block
        obs["results"][k + 1]["writes"] = [[48, 0, ""]]

    v = judged(tmp_path, quirk, [], obs_tamper=accepted)
    assert v.verdict == "refuted" and v.divergence is not None and v.divergence["kind"] == "errno"
    assert v.divergence["mismatches"] == [{"field": "rc", "model": -22, "observed": 0}]


def test_judge_refutes_a_write_whose_failure_names_no_errno(tmp_path: Path, quirk: str) -> None:
    tr = translate(quirk, "6.1")
    k = next(k for k, s in enumerate(tr.doc["step"]) if s.get("offline") == 48)

    def odd(obs: dict[str, Any]) -> None:
        obs["results"][k + 1]["writes"] = [[48, 1, "sh: something odd"]]

    v = judged(tmp_path, quirk, [], obs_tamper=odd)
    assert v.verdict == "refuted" and v.divergence is not None
    assert v.divergence["kind"] == "errno" and v.divergence["index"] == tr.sources[k][0]
    assert v.divergence["mismatches"] == [{"field": "rc", "model": 0, "observed": "status 1: sh: something odd"}]


def test_judge_refutes_a_missing_signature(tmp_path: Path, quirk: str) -> None:
    v = judged(tmp_path, quirk, ["AM-RATIO:state", "NO:such-signature"])
    assert v.verdict == "refuted" and v.divergence is not None and v.divergence["kind"] == "signature"


def test_a_real_machine_doing_things_in_another_order_makes_the_trace_inexpressible(tmp_path: Path, quirk: str) -> None:
    """The real machine's hot-adds, removals and the lab's writes must come in the trace's order (a driver that plugs
    later than the trace says, or elsewhere, makes the trace one no machine produces)."""
    tr = translate(quirk, "6.1")
    recs = read_records(quirk)[1]
    real, obs = stand_in(tmp_path, quirk, "6.1")
    exact = tmp_path / "exact.mhpt"
    with_lab_writes(real, str(exact), tr, recs, obs)
    assert order_difference(tr, recs, str(exact)) is None
    events = [r.event for r in read_records(str(exact))[1]]
    add = index_of(events, AddMemory)
    first_write = next(i for i, e in enumerate(events) if isinstance(e, OnlineBlock))
    moved = events[:add] + events[first_write : first_write + 2] + events[add:first_write] + events[first_write + 2 :]
    sim = Simulation(tr.scenario, get_profile("6.1"))  # type: ignore[arg-type]
    o = order_difference(tr, recs, write_events(tmp_path / "moved.mhpt", moved, sim))
    add_index = index_of([r.event for r in recs], AddMemory)
    assert o is not None and o.index == add_index and "the real 6.1 machine did online_block block=48 online_type=online_movable" in o.why
    shifted = [e._replace(start=e.start + (1 << 30)) if isinstance(e, AddMemory) else e for e in events]
    o = order_difference(tr, recs, write_events(tmp_path / "shifted.mhpt", shifted, sim))
    assert o is not None and o.index == add_index and "did add_memory start=0x1c0000000" in o.why


# --- the command ---------------------------------------------------------------------------------------------------------


def test_confirm_command_on_regressions_needs_no_lab(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(REGRESSIONS / "AM-RATIO_state.mhpt"), str(REGRESSIONS / "DIFF_AddMemory_decision_M6-vs-ref.mhpt")]
    assert main(["confirm", *paths, "--json"]) == 3  # the header names 6.1
    out = json.loads(capsys.readouterr().out)
    assert [(o["trace"], o["kernel"], o["verdict"]) for o in out] == [(p, "6.1", "inexpressible") for p in paths]
    keys = {"trace", "kernel", "verdict", "signatures_expected", "signatures_real", "divergence", "inexpressible", "real_trace", "lab_s"}
    assert keys <= set(out[0]) and out[0]["signatures_expected"] == ["AM-RATIO:state"] and out[0]["real_trace"] is None
    assert set(out[0]["inexpressible"]) == {"index", "event", "why"}
    assert main(["confirm", paths[0], "--kernel", "6.12"]) == 3
    line = capsys.readouterr().out
    assert line.startswith(f"{paths[0]} on 6.12: inexpressible: event 0 (boot_zone") and "; also event 3: a group registered smaller" in line


def test_confirm_command_bad_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.mhpt"
    bad.write_bytes(b"not a trace at all")
    assert main(["confirm", str(REGRESSIONS / "AM-RATIO_state.mhpt"), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mhp confirm: {bad}")


def test_confirm_record_writes_the_verdict_into_the_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for suffix in (".mhpt", ".json"):
        (tmp_path / f"AM-RATIO_state{suffix}").write_bytes((REGRESSIONS / f"AM-RATIO_state{suffix}").read_bytes())
    assert main(["confirm", str(tmp_path / "AM-RATIO_state.mhpt"), "--kernel", "6.1", "6.12", "--record"]) == 3
    doc = json.loads((tmp_path / "AM-RATIO_state.json").read_text())
    assert doc["signature"] == "AM-RATIO:state" and set(doc["verdicts"]) == {"6.1", "6.12"}
    entry = doc["verdicts"]["6.12"]
    assert entry["verdict"] == "inexpressible" and entry["reason"]["index"] == 0 and entry["also"][0]["index"] == 3 and entry["date"]


# --- stored verdicts ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", REG_TRACES, ids=_stem)
def test_every_regression_carries_a_verdict_that_still_holds(path: Path) -> None:
    doc = json.loads(path.with_suffix(".json").read_text())
    verdicts = doc.get("verdicts", {})
    assert {"6.1", "6.12"} <= set(verdicts) <= set(KERNELS), f"{path.name}: run mhp confirm --record --kernel 6.1 6.12"
    for kernel, entry in verdicts.items():
        if entry["verdict"] == "inexpressible":
            tr = translate(str(path), kernel)
            assert [o.to_json() for o in tr.obstacles] == [entry["reason"], *entry.get("also", [])]
            continue
        real = REGRESSIONS / entry["real_trace"]
        assert real == real_trace_path(str(path), kernel, None)
        res = replay_file(str(real))
        assert res.error is None
        if entry["verdict"] == "confirmed":
            assert res.divergence_count == 0 and set(entry["signatures"]["expected"]) <= set(res.finding_signatures)
        else:
            assert entry["verdict"] == "refuted" and res.divergences and res.divergences[0].to_json() == entry["divergence"]


def test_every_stored_real_trace_belongs_to_a_verdict() -> None:
    kept = {p.name for p in REGRESSIONS.glob("*.real.mhpt")}
    named = {e["real_trace"] for p in REG_TRACES for e in json.loads(p.with_suffix(".json").read_text()).get("verdicts", {}).values() if "real_trace" in e}
    assert kept == named


# --- in the lab --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
def test_confirm_end_to_end_in_the_lab(kernel: str, tmp_path: Path) -> None:
    """Boots Debian's kernel: the stale-online-type scenario as the model plays it (quirk Q1, the finding of the
    AM-RATIO_state regression, which itself is inexpressible) runs on the real kernel and is confirmed with its
    signatures; the kept real trace replays clean."""
    require_lab(kernel)
    trace = quirk_trace(tmp_path, kernel)
    v = confirm(trace, kernel, str(tmp_path))
    assert v.verdict == "confirmed", v.line()
    assert v.signatures_expected == ["AM-RATIO-NODE:state", "AM-RATIO:state"] and set(v.signatures_expected) <= set(v.signatures_real)
    assert v.real_trace == str(real_trace_path(trace, kernel, str(tmp_path))) and v.lab_s and v.package
    res = replay_file(v.real_trace)
    assert res.error is None and res.divergence_count == 0 and res.observations > 0
