"""Scenario files (TOML): a machine, kernel parameters, devices and steps; shared by simulate and lab.

```toml
name = "seed-dimm"
expect_findings = []            # finding signatures this scenario raises on purpose (real kernel behaviour)
[machine]
preset = "qemu-q35-4G"          # or an explicit layout: block_size, nodes, [[machine.zone]], [[machine.blocks]]
[kernel]
profile = "6.1"                 # optional, 6.1 or 6.12
cmdline = "memhp_default_state=online memory_hotplug.online_policy=auto-movable"
[[device]]                      # virtio-mem devices exist from boot
id = "vm0"
type = "virtio-mem"
node = 0
max_size = "32G"
block_size = "2M"               # device block size; >= memory block size means Big Block Mode
[[step]]
dimm = "4G"                     # plug a DIMM (optional: node, id)
[[step]]
vmem = "vm0"                    # resize a virtio-mem device
size = "12G"
```
Other steps: `unplug = "dimm0"`, `online = 48` (`type`, `attr = "state"|"online"`),
`offline = 48` (`attr`); both take `fails = "EBUSY"` (the real kernel's failure, injected), `param = "auto_movable_ratio"` with `value`,
`auto_online = "offline"`. `online`/`offline` also take a range: `online = "48-55"`.
`record_from = N` (top level): the lab starts the guest's recorder after N steps, so the trace attaches mid-life.
"""

from __future__ import annotations

import errno
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traces.events import ONLINE_TYPE_NAMES, BlockState, BootBlocks, BootMachine, BootZone, Event, ZoneType
from traces.machines import PRESETS, MachinePreset

SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
ZONE_NAMES = {z.label.lower(): z for z in ZoneType}
ONLINE_TYPES = {name: t for t, name in ONLINE_TYPE_NAMES.items()}
PARAMS = ("online_policy", "auto_movable_ratio", "auto_movable_numa_aware")


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names file, line and key."""


@dataclass(frozen=True, slots=True)
class VirtioMemSpec:
    """A virtio-mem device present from boot."""

    id: str
    node: int
    max_size: int
    block_size: int = 2 << 20
    unplug_online: bool = True


@dataclass(frozen=True, slots=True)
class Step:
    """One scenario step: ``action`` plus its arguments."""

    action: str  # dimm | unplug | vmem | online | offline | param | auto_online
    args: dict[str, Any]
    line: int
    raw: dict[str, Any]  # the step as written

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.raw.items())


@dataclass(slots=True)
class Scenario:
    """A parsed scenario."""

    path: str
    name: str
    description: str
    machine: MachinePreset
    profile: str | None
    cmdline: str
    devices: list[VirtioMemSpec] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    expect_findings: list[str] = field(default_factory=list)  # signatures the scenario is known to raise
    record_from: int = 0  # the lab starts `mhp record` in the guest after this many steps (attach mid-life)


def parse_size(value: object) -> int | None:
    """'4G' / '128M' / 4096 -> bytes; None if not a size."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = SIZE_RE.match(value)
        if m:
            return int(m.group(1)) * UNITS[m.group(2).upper()]
    return None


class _Reader:
    """Typed access to TOML tables with error messages naming file, line and key."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, header: str, nth: int = 0) -> int:
        """Line number (1-based) of the nth occurrence of a table header, 0 if absent."""
        pat = re.compile(r"^\s*\[+\s*" + re.escape(header) + r"\s*\]+\s*(#.*)?$")
        hits = [i + 1 for i, ln in enumerate(self.lines) if pat.match(ln)]
        return hits[nth] if nth < len(hits) else 0

    def key_line(self, key: str, table_line: int) -> int:
        """Line number of ``key = ...`` in the table whose header is at ``table_line`` (0: the
        top level, before any table); the table's line if the key is not written there."""
        pat = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for i in range(table_line, len(self.lines)):  # index table_line is the line after the header
            if self.lines[i].lstrip().startswith("["):
                break
            if pat.match(self.lines[i]):
                return i + 1
        return table_line

    def fail(self, where: str, line: int, msg: str) -> ScenarioError:
        loc = f"{self.path}:{line}" if line else self.path
        return ScenarioError(f"{loc}: {where}: {msg}")

    def get(self, table: dict[str, Any], key: str, kind: str, where: str, line: int, default: Any = ..., allow: tuple[str, ...] = ()) -> Any:
        if key not in table:
            if default is ...:
                raise self.fail(where, line, f"missing key '{key}' ({kind})")
            return default
        v = table[key]
        ok: Any
        if kind == "size":
            ok = parse_size(v)
        elif kind == "int":
            ok = v if isinstance(v, int) and not isinstance(v, bool) else None
        elif kind == "str":
            ok = v if isinstance(v, str) and (not allow or v in allow) else None
        elif kind == "bool":
            ok = v if isinstance(v, bool) else None
        else:
            raise AssertionError(kind)
        if ok is None:
            expected = (
                f"one of {', '.join(allow)}"
                if allow
                else {"size": "a size like '4G' or a byte count", "int": "an integer", "str": "a string", "bool": "true or false"}[kind]
            )
            raise self.fail(f"{where}.{key}", self.key_line(key, line), f"expected {expected}, got {v!r}")
        return ok


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; raises ScenarioError with file:line: key: what."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        where = re.search(r"\(at line (\d+), column (\d+)\)$", str(e))
        loc = f"{path}:{where.group(1)}:{where.group(2)}" if where else path
        msg = str(e)[: where.start()].rstrip() if where else str(e)
        raise ScenarioError(f"{loc}: TOML syntax: {msg}") from None
    return parse_scenario(doc, path, text)


def parse_scenario(doc: dict[str, Any], path: str, text: str = "") -> Scenario:
    """Build a Scenario from a decoded TOML document."""
    r = _Reader(path, text)
    known = {"name", "description", "machine", "kernel", "device", "step", "expect_findings", "record_from"}
    for key in doc:
        if key not in known:
            raise r.fail(key, r.key_line(key, 0), f"unknown top-level key; expected one of {', '.join(sorted(known))}")
    machine_t = doc.get("machine")
    if not isinstance(machine_t, dict):
        raise r.fail("machine", 0, "missing [machine] table")
    machine = _machine(r, machine_t)
    kernel_t = doc.get("kernel", {})
    kline = r.line_of("kernel")
    if not isinstance(kernel_t, dict):
        raise r.fail("kernel", kline, "expected a table")
    profile = r.get(kernel_t, "profile", "str", "kernel", kline, None, ("6.1", "6.12", "7.2"))
    cmdline = r.get(kernel_t, "cmdline", "str", "kernel", kline, "")
    name = r.get(doc, "name", "str", "name", 0, Path(path).stem)
    sc = Scenario(path, name, r.get(doc, "description", "str", "description", 0, ""), machine, profile, cmdline)
    expect = doc.get("expect_findings", [])
    if not isinstance(expect, list) or not all(isinstance(x, str) for x in expect):
        raise r.fail("expect_findings", 0, f"expected a list of finding signatures, got {expect!r}")
    sc.expect_findings = expect
    ids: set[str] = set()
    for i, d in enumerate(_list(r, doc, "device")):
        line = r.line_of("device", i)
        where = f"device[{i}]"
        r.get(d, "type", "str", where, line, allow=("virtio-mem",))
        dev = VirtioMemSpec(
            r.get(d, "id", "str", where, line),
            r.get(d, "node", "int", where, line, 0),
            r.get(d, "max_size", "size", where, line),
            r.get(d, "block_size", "size", where, line, 2 << 20),
            r.get(d, "unplug_online", "bool", where, line, True),
        )
        if dev.id in ids:
            raise r.fail(f"{where}.id", line, f"device id {dev.id!r} used twice")
        if dev.block_size & (dev.block_size - 1) or dev.max_size % dev.block_size:
            raise r.fail(where, line, "block_size must be a power of two dividing max_size")
        ids.add(dev.id)
        sc.devices.append(dev)
    for i, s in enumerate(_list(r, doc, "step")):
        sc.steps.append(_step(r, s, i, {d.id for d in sc.devices}))
    sc.record_from = r.get(doc, "record_from", "int", "record_from", 0, 0)
    if not 0 <= sc.record_from <= len(sc.steps):
        raise r.fail("record_from", r.key_line("record_from", 0), f"record_from = {sc.record_from} is not a step count 0..{len(sc.steps)}")
    return sc


def _list(r: _Reader, doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    v = doc.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise r.fail(key, r.line_of(key), f"expected [[{key}]] tables")
    return v


STEP_KEYS = {
    "dimm": {"node", "id"},
    "unplug": set(),
    "vmem": {"size"},
    "online": {"type", "attr", "fails"},
    "offline": {"attr", "fails"},
    "param": {"value"},
    "auto_online": set(),
}


def _step(r: _Reader, s: dict[str, Any], i: int, vmem_ids: set[str]) -> Step:
    line = r.line_of("step", i)
    where = f"step[{i}]"
    actions = [k for k in s if k in STEP_KEYS]
    if len(actions) != 1:
        raise r.fail(where, line, f"expected exactly one action key of {', '.join(STEP_KEYS)}, got {sorted(s) or 'none'}")
    action = actions[0]
    extra = set(s) - {action} - STEP_KEYS[action]
    if extra:
        raise r.fail(where, r.key_line(min(extra), line), f"unknown key(s) {', '.join(sorted(extra))} for a {action} step")
    args: dict[str, Any] = {}
    if action == "dimm":
        args["dimm"] = r.get(s, "dimm", "size", where, line)
        args["node"] = r.get(s, "node", "int", where, line, 0)
        args["id"] = r.get(s, "id", "str", where, line, None)
    elif action == "unplug":
        args["unplug"] = r.get(s, "unplug", "str", where, line)
    elif action == "vmem":
        args["vmem"] = r.get(s, "vmem", "str", where, line, allow=tuple(sorted(vmem_ids)) or ("<no virtio-mem device declared>",))
        args["size"] = r.get(s, "size", "size", where, line)
    elif action in ("online", "offline"):
        first, last = _block_range(r, s[action], f"{where}.{action}", r.key_line(action, line))
        args[action] = (first, last)
        args["attr"] = r.get(s, "attr", "str", where, line, "state", ("state", "online"))
        if action == "online":
            args["type"] = ONLINE_TYPES[r.get(s, "type", "str", where, line, "online", ("online", "online_kernel", "online_movable"))]
        name = r.get(s, "fails", "str", where, line, None)
        if name is not None and not isinstance(getattr(errno, name, None), int):
            raise r.fail(f"{where}.fails", line, f"expected an errno name like 'EBUSY', got {name!r}")
        args["fails"] = getattr(errno, name) if name else 0
    elif action == "param":
        args["param"] = r.get(s, "param", "str", where, line, allow=PARAMS)
        v = s.get("value")
        if isinstance(v, bool):
            v = "Y" if v else "N"
        if not isinstance(v, (str, int)):
            raise r.fail(f"{where}.value", line, f"expected the string written to the parameter, got {v!r}")
        args["value"] = str(v)
    else:
        args["auto_online"] = ONLINE_TYPES[r.get(s, "auto_online", "str", where, line, allow=tuple(ONLINE_TYPES))]
    return Step(action, args, line, dict(s))


def _block_range(r: _Reader, v: object, where: str, line: int) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v, v
    if isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", v)  # "48" or "48-55"
        if m and int(m.group(1)) <= int(m.group(2) or m.group(1)):
            return int(m.group(1)), int(m.group(2) or m.group(1))
    raise r.fail(where, line, f"expected a block id or a range 'first-last', got {v!r}")


def _machine(r: _Reader, t: dict[str, Any]) -> MachinePreset:
    line = r.line_of("machine")
    if "preset" in t:
        name = r.get(t, "preset", "str", "machine", line, allow=tuple(PRESETS))
        extra = set(t) - {"preset"}
        if extra:
            raise r.fail("machine", line, f"a preset takes no other keys, got {', '.join(sorted(extra))}")
        return PRESETS[name]
    block = r.get(t, "block_size", "size", "machine", line)
    possible = r.get(t, "possible_nodes", "int", "machine", line, 1)
    cpus = r.get(t, "cpu_nodes", "int", "machine", line, 1)
    base = r.get(t, "device_memory_base", "size", "machine", line)
    events: list[Event] = [BootMachine(block, possible, cpus)]
    for i, z in enumerate(t.get("zone", [])):
        zl, where = r.line_of("machine.zone", i), f"machine.zone[{i}]"
        zone = ZONE_NAMES.get(str(r.get(z, "zone", "str", where, zl)).lower())
        if zone is None or zone is ZoneType.NONE:
            raise r.fail(f"{where}.zone", zl, f"expected DMA, DMA32, Normal or Movable, got {z['zone']!r}")
        present = r.get(z, "present", "int", where, zl)
        events.append(
            BootZone(
                r.get(z, "node", "int", where, zl, 0),
                zone,
                r.get(z, "start_pfn", "int", where, zl),
                r.get(z, "spanned", "int", where, zl),
                present,
                r.get(z, "present_early", "int", where, zl, present),
                0,
            )
        )
    for i, b in enumerate(t.get("blocks", [])):
        bl, where = r.line_of("machine.blocks", i), f"machine.blocks[{i}]"
        zone = ZONE_NAMES.get(str(r.get(b, "zone", "str", where, bl)).lower())
        if zone is None:
            raise r.fail(f"{where}.zone", bl, f"expected a zone name or 'none', got {b['zone']!r}")
        state = BlockState.ONLINE if r.get(b, "state", "str", where, bl, "online", ("online", "offline")) == "online" else BlockState.OFFLINE
        events.append(
            BootBlocks(
                r.get(b, "first", "int", where, bl),
                r.get(b, "count", "int", where, bl, 1),
                r.get(b, "node", "int", where, bl, 0),
                state,
                zone,
                True,
                -1,
                0,
                r.get(b, "present", "int", where, bl, block // 4096),
            )
        )
    return MachinePreset("custom", "explicit memory map", tuple(events), (), "", base)
