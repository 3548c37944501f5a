"""Fuzz inputs that are real-machine actions: a scenario document (traces/scenario.py) and its mutator.

An input is a scenario as a dict, the decoded TOML: ``machine`` (a preset of traces/machines.py), ``kernel.cmdline``
(memhp_default_state and the memory_hotplug parameters, movable_node), ``device`` (virtio-mem devices) and ``step``
(dimm, unplug, vmem, online, offline, param, auto_online). Only what a lab run can do is in it: no injected failures
(``fails``), no guest workloads (``run``), no marks, a trace from boot (no ``record_from``), DIMMs with explicit
unique ids. Every mutant is checked: ``parse_scenario`` accepts it and the translation of its simulated trace
(replay/translate.py, as ``mhp confirm`` does it) finds no obstacle, so everything found with it can be confirmed.

API (also used by ``mhp fuzz --target lab``; keep it stable):

- ``encode(doc) -> bytes``: the TOML text (replay/translate.py scenario_toml), deterministic;
- ``decode(data) -> dict | None``: the normal form of a scenario's bytes (steps and keys the lab cannot do dropped,
  ids made unique, sizes rounded to blocks), None when the bytes are no scenario;
- ``mutate(doc, rng, *, kernel="6.1") -> dict``: one to three structure-aware mutations (insert, delete, duplicate,
  swap steps; sizes in block multiples, some aimed at the auto-movable ratio's boundary; presets; command-line
  parameters; devices), a document expressible on ``kernel`` (its simulated trace translated for that kernel);
  ``crossover(a, b, rng, *, kernel="6.1") -> dict``: steps of ``b`` spliced into ``a``, likewise checked;
- ``scenario(doc) -> Scenario`` and ``obstacle(doc, kernel) -> Obstacle | None`` (None: expressible);
- ``custom_mutator`` / ``custom_crossover``: libFuzzer's hooks over the bytes.
"""

from __future__ import annotations

import copy
import json
import random
import tomllib
from collections.abc import Callable
from typing import Any

from fuzz.mutator import PARAM_POOLS, decision_stats
from replay.model.kernel import Kernel
from replay.model.outcome import AutoMovableStats
from replay.model.profiles import get_profile
from replay.simulate import Simulation, simulate
from replay.translate import Obstacle, scenario_toml, translate
from traces.codec import Record
from traces.errors import InputError
from traces.events import AddMemory, BootBlocks, Event, Mark, Param
from traces.lab.run import size_text
from traces.machines import PRESETS, MachinePreset
from traces.scenario import Scenario, machine_nodes, parse_scenario, parse_size

MAX_STEPS = 24
MAX_DEVICES = 2
MAX_DIMM_BLOCKS = 32  # 4 GiB of 128M blocks, 64 GiB of 2G blocks
MAX_HOTPLUG = 48 << 30  # DIMMs plugged at once and devices' max sizes together (the lab's maxmem is 256G)
MAX_RANGE = 16  # blocks one online/offline step writes
DIMM_SLOTS = 32  # the presets' -m ...,slots=32
PRESET_NAMES = tuple(PRESETS)
PRESET_WEIGHTS = tuple(1 if p.block_size > 128 << 20 else 4 if p.name == "qemu-q35-4G" else 2 for p in PRESETS.values())
DEVICE_MAX_SIZES = ("4G", "8G", "16G", "32G")
ONLINE_TYPES = ("online", "online_kernel", "online_movable")
AUTO_ONLINE = ("online", "offline", "online_kernel", "online_movable")
STEP_PARAMS = {"online_policy": Param.ONLINE_POLICY, "auto_movable_ratio": Param.AUTO_MOVABLE_RATIO, "auto_movable_numa_aware": Param.AUTO_MOVABLE_NUMA_AWARE}
CMDLINE = {  # command-line parameter -> its values (None: a flag), in the order the command line lists them
    "memhp_default_state": ("online", "offline", "online_kernel", "online_movable"),
    "memory_hotplug.online_policy": ("auto-movable", "contig-zones"),
    "memory_hotplug.auto_movable_ratio": ("0", "1", "99", "100", "300", "301", "1000"),
    "memory_hotplug.auto_movable_numa_aware": ("0", "1"),
    "memory_hotplug.memmap_on_memory": ("0", "1", "force"),
    "movable_node": None,
}
RETRIES = 8  # mutants tried before the input is given back unchanged


# --- the document ------------------------------------------------------------------------------------------------


def encode(doc: dict[str, Any]) -> bytes:
    """The document as TOML text (UTF-8; no ``device`` table when there is none)."""
    return scenario_toml({k: v for k, v in doc.items() if k != "device" or v}).encode()


def decode(data: bytes) -> dict[str, Any] | None:
    """The normal form of a scenario's bytes (normalize), None if they are no scenario parse_scenario accepts."""
    try:
        raw = tomllib.loads(data.decode())
        parse_scenario(raw, "<input>")
        preset = PRESETS[raw["machine"]["preset"]]
    except (ValueError, InputError, KeyError, TypeError, RecursionError):  # UnicodeDecodeError and TOMLDecodeError are ValueErrors
        return None
    return normalize(raw, preset)


def scenario(doc: dict[str, Any], path: str = "<steps>") -> Scenario:
    """The document as a Scenario (ScenarioError if it is not one)."""
    return parse_scenario(json.loads(json.dumps(doc)), path, scenario_toml(doc))


def cmdline_words(cmdline: str) -> dict[str, str | None]:
    """The command line's known parameters (the last of each wins, as at boot)."""
    out: dict[str, str | None] = {}
    for word in cmdline.split():
        name, eq, value = word.partition("=")
        if name not in CMDLINE:
            continue
        values = CMDLINE[name]
        if values is None and not eq:
            out[name] = None
        elif values is not None and eq and value in values:
            out[name] = value
    return out


def cmdline_text(words: dict[str, str | None]) -> str:
    return " ".join(name if words[name] is None else f"{name}={words[name]}" for name in CMDLINE if name in words)


def preset_nodes(preset: MachinePreset) -> list[int]:
    return sorted(machine_nodes(preset))


def normalize(raw: dict[str, Any], preset: MachinePreset) -> dict[str, Any]:
    """A document the lab can run, in canonical key order: the preset, the known command-line words, at most
    MAX_DEVICES devices, at most MAX_STEPS steps of the lab's actions with their keys (sizes in blocks, nodes of
    the machine, DIMM ids unique, unplugs of plugged DIMMs only)."""
    bs = preset.block_size
    nodes = preset_nodes(preset)
    doc: dict[str, Any] = {
        "machine": {"preset": preset.name},
        "kernel": {"cmdline": cmdline_text(cmdline_words(str(raw.get("kernel", {}).get("cmdline", ""))))},
    }
    devices: list[dict[str, Any]] = []
    for d in raw.get("device", [])[:MAX_DEVICES]:
        dblock = parse_size(d.get("block_size", "2M")) or 2 << 20
        dblock = 2 << 20 if dblock <= bs else dblock  # SBM (the translation's unit) or BBM of a power of two of blocks
        align = max(dblock, bs)
        max_size = min(max(_round(parse_size(d["max_size"]) or align, align), align), 32 << 30)
        dev = {
            "id": f"vm{len(devices)}",
            "type": "virtio-mem",
            "node": d.get("node", 0) if d.get("node", 0) in nodes else nodes[0],
            "max_size": size_text(max_size),
        }
        if dblock != 2 << 20:
            dev["block_size"] = size_text(dblock)
        devices.append(dev)
    renamed = {d["id"]: f"vm{i}" for i, d in enumerate(raw.get("device", [])[:MAX_DEVICES])}
    doc["device"] = devices
    doc["step"] = repair([s for s in (_step(s, renamed) for s in raw.get("step", [])) if s is not None], preset, devices)
    return doc


def _round(n: int, unit: int) -> int:
    return n // unit * unit


def _step(s: dict[str, Any], renamed: dict[str, str]) -> dict[str, Any] | None:
    """One step with only the keys the lab does (None: a step it cannot do)."""
    if "dimm" in s:
        return {"dimm": s["dimm"], "node": s.get("node", 0), **({"id": s["id"]} if "id" in s else {})}
    if "unplug" in s:
        return {"unplug": s["unplug"]}
    if "vmem" in s:
        return {"vmem": renamed[s["vmem"]], "size": s["size"]} if s["vmem"] in renamed else None
    for action in ("online", "offline"):
        if action in s:
            out: dict[str, Any] = {action: s[action]}
            if action == "online" and s.get("type", "online") != "online":
                out["type"] = s["type"]
            if s.get("attr", "state") != "state":
                out["attr"] = s["attr"]
            return out
    if "param" in s:
        return {"param": s["param"], "value": str(s["value"]) if not isinstance(s["value"], bool) else "Y" if s["value"] else "N"}
    if "auto_online" in s:
        return {"auto_online": s["auto_online"]}
    return None  # mark, run


def repair(steps: list[dict[str, Any]], preset: MachinePreset, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps made valid for the machine and its devices: sizes in whole blocks (units) within the limits, nodes of
    the machine, block ranges of at most MAX_RANGE, DIMM ids unique (d0, d1, ... in plug order), unplugs only of a
    DIMM plugged before and not unplugged since, at most DIMM_SLOTS plugged and MAX_STEPS steps."""
    bs = preset.block_size
    nodes = preset_nodes(preset)
    devs = {d["id"]: d for d in devices}
    out: list[dict[str, Any]] = []
    ids: dict[str, str] = {}  # the step's id -> the new one (ids of DIMMs plugged so far)
    count = 0
    plugged: dict[str, int] = {}  # new id -> size
    hotplug = sum(parse_size(d["max_size"]) or 0 for d in devices)
    blocks = (1 << 46) // bs
    for s in steps:
        if len(out) >= MAX_STEPS:
            break
        if "dimm" in s:
            size = min(max(_round(parse_size(s["dimm"]) or bs, bs), bs), MAX_DIMM_BLOCKS * bs)
            if len(plugged) >= DIMM_SLOTS or hotplug + sum(plugged.values()) + size > MAX_HOTPLUG:
                continue
            new = f"d{count}"
            count += 1
            ids[str(s.get("id", f"dimm{len(plugged)}"))] = new  # the simulation names a DIMM without id after the DIMMs plugged
            plugged[new] = size
            out.append({"dimm": size_text(size), "node": s["node"] if s.get("node") in nodes else nodes[0], "id": new})
        elif "unplug" in s:
            new = ids.get(s["unplug"], s["unplug"])
            if new in plugged:
                del plugged[new]
                out.append({"unplug": new})
        elif "vmem" in s:
            d = devs.get(s["vmem"])
            if d is None:
                continue
            unit = max(parse_size(d.get("block_size", "2M")) or 0, bs)
            size = min(_round(parse_size(s["size"]) or 0, unit), parse_size(d["max_size"]) or 0)
            out.append({"vmem": s["vmem"], "size": size_text(size) if size else "0"})
        elif "online" in s or "offline" in s:
            action = "online" if "online" in s else "offline"
            first, last = _range(s[action])
            first = min(first, blocks - 1)
            last = min(max(last, first), first + MAX_RANGE - 1, blocks - 1)
            step: dict[str, Any] = {action: first if first == last else f"{first}-{last}"}
            if action == "online" and s.get("type") in ONLINE_TYPES[1:]:
                step["type"] = s["type"]
            if s.get("attr") == "online":
                step["attr"] = "online"
            out.append(step)
        elif "param" in s:
            if s["param"] in STEP_PARAMS:
                out.append({"param": s["param"], "value": str(s["value"])})
        elif "auto_online" in s and s["auto_online"] in AUTO_ONLINE:
            out.append({"auto_online": s["auto_online"]})
    return out


def _range(v: object) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    first, _, last = str(v).partition("-")
    return int(first), int(last or first)


# --- what a document does ------------------------------------------------------------------------------------------


def simulated(doc: dict[str, Any], profile: str = "6.1") -> list[Event]:
    """The events the model's simulation of the document issues (a recorder's trace of it; the list is shared: do not
    change it); ScenarioError if the simulation meets what the scenario cannot do (an unplug of a DIMM whose eject
    failed ...). The last SIMULATIONS are kept: the mutator, its check and the harness simulate the same documents."""
    key = (encode(doc), profile)
    events = _simulations.get(key)
    if events is None:
        events = _simulate(doc, profile)
        if len(_simulations) >= SIMULATIONS:
            del _simulations[next(iter(_simulations))]
        _simulations[key] = events
    return events


SIMULATIONS = 256
_simulations: dict[tuple[bytes, str], list[Event]] = {}


class SimulationCrash(Exception):
    """The model crashed while simulating a document: ``events`` are those it issued, the one it crashed on last (a
    trace that shows the crash to check_events)."""

    def __init__(self, events: list[Event], cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.events = events


def _simulate(doc: dict[str, Any], profile: str) -> list[Event]:
    sc = scenario(doc)
    prof = get_profile(profile)
    sim = Simulation(sc, prof)
    sim.kernel = Kernel(prof, oracles=False)  # the events only: whoever wants findings replays them
    try:
        for _ in simulate(sc, sim=sim):
            pass
    except InputError:
        raise
    except Exception as e:  # a crash of the model, on the event it was applying
        raise SimulationCrash(sim.events + ([sim.applying] if sim.applying is not None else []), e) from e
    return sim.events


def obstacle(doc: dict[str, Any], kernel: str = "6.1") -> Obstacle | None:
    """What no real machine does in the document's simulated trace (replay/translate.py), None: expressible. A
    document the simulation rejects gets an obstacle at record -1; one on which the model itself crashes counts as
    expressible (the check reports the crash: fuzz/steps_check.py)."""
    try:
        events = simulated(doc, kernel)
        return translate("<steps>", kernel, [Record(i, 0, 0, ev) for i, ev in enumerate(events)]).obstacle
    except InputError as e:
        return Obstacle(-1, "", f"the scenario cannot run: {e}")
    except SimulationCrash:  # a finding, not an obstacle (the translation's own simulation would crash too)
        return None


def step_of_event(events: list[Event]) -> list[int]:
    """For each event the index of the step it belongs to (-1: boot), from the simulation's step marks."""
    out, step = [], -1
    for ev in events:
        if isinstance(ev, Mark) and ev.text.startswith("step "):
            step = int(ev.text[5:].split(":", 1)[0]) - 1
        out.append(step)
    return out


def known_blocks(events: list[Event], preset: MachinePreset) -> list[int]:
    """Every memory block the simulation ever had (boot memory and what was hot-added)."""
    bs = preset.block_size
    out: set[int] = set()
    for ev in events:
        if isinstance(ev, BootBlocks):
            out.update(range(ev.first, ev.first + min(ev.count, 64)))
        elif isinstance(ev, AddMemory):
            out.update(range(ev.start // bs, (ev.start + ev.size) // bs))
    return sorted(out)


def boundary_ratio(st: AutoMovableStats) -> int:
    """The smallest auto_movable_ratio at which a comparison's movable memory is within its limit
    (ratio * kernel_early // 100 >= movable, mm/memory_hotplug.c auto_movable_stats_account_group's limit)."""
    return -(-100 * st.movable // st.kernel_early)


# --- mutations -------------------------------------------------------------------------------------------------------


class _Ctx:
    """What the mutations of one document know: its machine, devices and simulated trace."""

    def __init__(self, doc: dict[str, Any], rng: random.Random) -> None:
        self.doc, self.rng = doc, rng
        self.preset = PRESETS[doc["machine"]["preset"]]
        try:
            self.events = simulated(doc)
        except (InputError, SimulationCrash):  # the check reports a crash
            self.events = []
        self.blocks = known_blocks(self.events, self.preset) or [0]

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.doc["step"]  # type: ignore[no-any-return]

    def blocks_size(self, rng: random.Random) -> int:
        """A DIMM or resize size in blocks: small ones often, a few larger."""
        return rng.choice((1, 1, 1, 2, 2, 3, 4, 4, 7, 8, 8, 15, 16, 16, 24, 32))

    def random_step(self) -> dict[str, Any]:
        rng, bs = self.rng, self.preset.block_size
        kinds = ["dimm"] * 4 + ["online"] * 3 + ["offline"] * 3 + ["param"] * 3 + ["auto_online", "unplug", "unplug"] + ["vmem"] * 4 * bool(self.doc["device"])
        kind = rng.choice(kinds)
        if kind == "dimm":
            return {"dimm": size_text(self.blocks_size(rng) * bs), "node": rng.choice(preset_nodes(self.preset))}
        if kind == "unplug":
            ids = [s["id"] for s in self.steps if "dimm" in s and "id" in s]
            return {"unplug": rng.choice(ids)} if ids else {"dimm": size_text(bs)}
        if kind == "vmem":
            d = rng.choice(self.doc["device"])
            unit = max(parse_size(d.get("block_size", "2M")) or 0, bs)
            top = (parse_size(d["max_size"]) or unit) // unit
            return {"vmem": d["id"], "size": size_text(rng.choice((0, 1, 2, rng.randint(0, top), top)) * unit) or "0"}
        if kind in ("online", "offline"):
            first = rng.choice(self.blocks)
            n = rng.choice((1, 1, 1, 2, 4, 8))
            step: dict[str, Any] = {kind: first if n == 1 else f"{first}-{first + n - 1}"}
            if kind == "online" and rng.random() < 0.7:
                step["type"] = rng.choice(ONLINE_TYPES[1:])
            if rng.random() < 0.2:
                step["attr"] = "online"
            return step
        if kind == "param":
            name = rng.choice(tuple(STEP_PARAMS))
            return {"param": name, "value": rng.choice(PARAM_POOLS[STEP_PARAMS[name]])}
        return {"auto_online": rng.choice(AUTO_ONLINE)}

    def change_step(self, i: int) -> None:
        """A new value for one argument of step ``i``."""
        rng, bs, s = self.rng, self.preset.block_size, self.steps[i]
        if "dimm" in s:
            if rng.random() < 0.7:
                s["dimm"] = size_text(self.blocks_size(rng) * bs)
            else:
                s["node"] = rng.choice(preset_nodes(self.preset))
        elif "vmem" in s or "unplug" in s or "param" in s or "auto_online" in s:
            new = self.random_step()
            if next(iter(new)) == next(iter(s)):
                self.steps[i] = new
        else:
            action = "online" if "online" in s else "offline"
            what = rng.random()
            if what < 0.4:
                first = rng.choice(self.blocks)
                s[action] = first if rng.random() < 0.5 else f"{first}-{first + rng.choice((1, 3, 7))}"
            elif what < 0.7 and action == "online":
                s["type"] = rng.choice(ONLINE_TYPES)
            else:
                s["attr"] = "state" if s.get("attr") == "online" else "online"

    def near_boundary(self) -> None:
        """A DIMM (or resize) sized so that the memory it brings lands next to an auto-movable limit the
        simulation compared against: the blocks between movable and limit, one fewer or one more."""
        stats = decision_stats(self.events)
        if not stats:
            return
        i, st, _ = self.rng.choice(stats)
        bp = self.preset.block_size // 4096
        gap = max(1, -(-(st.limit - st.movable) // bp) + self.rng.choice((-1, 0, 1)))
        where = step_of_event(self.events)[i]
        size = size_text(min(gap, MAX_DIMM_BLOCKS) * self.preset.block_size)
        self.steps.insert(max(where, 0) + (where >= 0) * self.rng.randint(0, 1), {"dimm": size, "node": self.rng.choice(preset_nodes(self.preset))})

    def aim_ratio(self) -> None:
        """Input-to-state: an auto_movable_ratio written just before a step, on the boundary of the step's first
        auto-movable comparison: the smallest ratio whose limit allows its movable memory, or one less."""
        of_step = step_of_event(self.events)
        first: dict[int, AutoMovableStats] = {}  # step -> its first comparison (a write before the step changes no earlier one)
        for i, st, _ in decision_stats(self.events):
            first.setdefault(of_step[i], st)
        stats = [(where, st) for where, st in first.items() if where >= 0 and st.kernel_early and st.movable != st.limit]
        if not stats:
            return
        where, st = self.rng.choice(stats)
        ratio = boundary_ratio(st) - self.rng.randint(0, 1)  # the smallest ratio that allows the movable memory, or one below
        if 0 < ratio < 1 << 32:
            self.steps.insert(where, {"param": "auto_movable_ratio", "value": str(ratio)})

    def toggle_cmdline(self) -> None:
        words = cmdline_words(self.doc["kernel"]["cmdline"])
        name = self.rng.choice(tuple(CMDLINE))
        values = CMDLINE[name]
        if name in words and (values is None or self.rng.random() < 0.4):
            del words[name]
        else:
            words[name] = None if values is None else self.rng.choice(values)
        self.doc["kernel"]["cmdline"] = cmdline_text(words)

    def change_preset(self) -> None:
        self.doc["machine"]["preset"] = self.rng.choices(PRESET_NAMES, PRESET_WEIGHTS)[0]

    def device(self) -> None:
        """Add a virtio-mem device (with a resize of it), drop one, or change one's node, size or block size."""
        rng, devs, bs = self.rng, self.doc["device"], self.preset.block_size
        what = rng.random()
        if what < 0.5 and len(devs) < MAX_DEVICES:
            d: dict[str, Any] = {
                "id": f"vm{len(devs)}",
                "type": "virtio-mem",
                "node": rng.choice(preset_nodes(self.preset)),
                "max_size": rng.choice(DEVICE_MAX_SIZES),
            }
            if rng.random() < 0.3:
                d["block_size"] = size_text(bs << rng.choice((1, 2, 3)))
            devs.append(d)
            self.steps.insert(rng.randint(0, len(self.steps)), {"vmem": d["id"], "size": size_text(self.blocks_size(rng) * bs)})
        elif what < 0.65 and devs:
            gone = devs.pop()["id"]
            self.doc["step"] = [s for s in self.steps if s.get("vmem") != gone]
        elif devs:
            d = rng.choice(devs)
            key = rng.choice(("node", "max_size", "block_size"))
            if key == "node":
                d["node"] = rng.choice(preset_nodes(self.preset))
            elif key == "max_size":
                d["max_size"] = rng.choice(DEVICE_MAX_SIZES)
            elif "block_size" in d:
                del d["block_size"]
            else:
                d["block_size"] = size_text(bs << rng.choice((1, 2, 3)))

    def mutate_once(self, other: dict[str, Any] | None) -> None:
        rng, steps = self.rng, self.steps
        n = len(steps)
        op = rng.random()
        if op < 0.2 or not n:
            steps.insert(rng.randint(0, n), self.random_step())
        elif op < 0.3:
            del steps[rng.randrange(n)]
        elif op < 0.36:
            steps.insert(rng.randint(0, n), copy.deepcopy(steps[rng.randrange(n)]))
        elif op < 0.42 and n >= 2:
            i, j = rng.sample(range(n), 2)
            steps[i], steps[j] = steps[j], steps[i]
        elif op < 0.58:
            self.change_step(rng.randrange(n))
        elif op < 0.66:
            self.near_boundary()
        elif op < 0.74:
            self.aim_ratio()
        elif op < 0.84:
            self.toggle_cmdline()
        elif op < 0.88:
            self.change_preset()
        elif op < 0.95:
            self.device()
        elif other is not None and other["step"]:
            a = rng.randrange(len(other["step"]))
            steps[rng.randint(0, n) : rng.randint(0, n) or None] = copy.deepcopy(other["step"][a : a + rng.randint(1, 8)])
        else:
            steps.insert(rng.randint(0, n), self.random_step())


def _fixed(doc: dict[str, Any]) -> dict[str, Any]:
    """The document normalised for its (maybe new) preset."""
    return normalize(doc, PRESETS[doc["machine"]["preset"]])


def _checked(doc: dict[str, Any], rng: random.Random, change: Callable[[_Ctx], None], kernel: str) -> dict[str, Any]:
    """``change`` applied to a copy of ``doc`` until the result is expressible on ``kernel`` (at most RETRIES tries),
    else ``doc``."""
    for _ in range(RETRIES):
        ctx = _Ctx(copy.deepcopy(doc), rng)
        change(ctx)
        out = _fixed(ctx.doc)
        if out != doc and obstacle(out, kernel) is None:
            return out
    return doc


def mutate(doc: dict[str, Any], rng: random.Random, *, kernel: str = "6.1") -> dict[str, Any]:
    """One to three mutations of a normal-form document; the result is expressible on ``kernel`` (else ``doc`` comes
    back)."""

    def change(ctx: _Ctx) -> None:
        for _ in range(rng.randint(1, 3)):
            ctx.mutate_once(None)

    return _checked(doc, rng, change, kernel)


def crossover(a: dict[str, Any], b: dict[str, Any], rng: random.Random, *, kernel: str = "6.1") -> dict[str, Any]:
    """``a`` with a run of ``b``'s steps spliced in (and maybe one more mutation); expressible on ``kernel``, else
    ``a``."""

    def change(ctx: _Ctx) -> None:
        n = len(ctx.steps)
        if b["step"]:
            s = rng.randrange(len(b["step"]))
            at = rng.randint(0, n)
            ctx.steps[at : at + rng.randint(0, 4)] = copy.deepcopy(b["step"][s : s + rng.randint(1, 8)])
        if rng.random() < 0.3:
            ctx.mutate_once(b)

    return _checked(a, rng, change, kernel)


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """libFuzzer's LLVMFuzzerCustomMutator over encoded documents (an undecodable input becomes the smallest one)."""
    doc = decode(data) or minimal_doc()
    out = encode(mutate(doc, random.Random(seed)))
    return out if len(out) <= max_size else encode(doc)[:max_size]


def custom_crossover(data1: bytes, data2: bytes, max_out: int, seed: int) -> bytes:
    """libFuzzer's LLVMFuzzerCustomCrossOver over encoded documents."""
    a, b = decode(data1), decode(data2)
    if a is None or b is None:
        return data1[:max_out]
    out = encode(crossover(a, b, random.Random(seed)))
    return out if len(out) <= max_out else data1[:max_out]


def minimal_doc(preset: str = "qemu-q35-4G") -> dict[str, Any]:
    """The smallest document: the machine, no parameters, no step."""
    return {"machine": {"preset": preset}, "kernel": {"cmdline": ""}, "device": [], "step": []}
