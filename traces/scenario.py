"""Scenario files (TOML): a machine, kernel parameters, devices and steps; shared by simulate and lab.

```toml
name = "seed-dimm"
expect_findings = []            # finding signatures this scenario raises on purpose (real kernel behaviour)
[machine]
preset = "qemu-q35-4G"          # or an explicit layout: block_size, device_memory_base, possible_nodes,
                                # cpu_nodes, [[machine.zone]], [[machine.blocks]] (see below)
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
`auto_online = "offline"`, `mark = "text"` (does nothing; labels the layout), `run = "shell command"`
(the lab runs it in the guest, e.g. a workload that allocates memory; the model sees nothing of it). `online`/`offline`
also take a range, `online = "48-55"`, done block by block like a shell loop over the blocks: a
block that fails does not stop the others.

An explicit machine: `block_size` (a power of two, at least 128M), `device_memory_base` (where
hot-plugged devices go: above all boot memory), `possible_nodes` and `cpu_nodes` (lists of node
ids, default `[0]`), `[[machine.zone]]` tables (`zone`, `node`, `start_pfn`, `spanned`, `present`,
`present_early`) and `[[machine.blocks]]` tables (`first`, `count`, `node`, `zone`, `state`,
`present`).

Every table is strict: an unknown key is an error at its line. Every number is checked against
what a real machine can have (a 46-bit physical address space, the blocks it holds, 64 nodes)
before anything is allocated or looped over.
`record_from = N` (top level): the lab starts the guest's recorder after N steps, so the trace attaches mid-life.
"""

from __future__ import annotations

import errno
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traces.errors import InputError
from traces.events import (
    MAX_NODES,
    MAX_PFN,
    MIN_BLOCK_SIZE,
    ONLINE_TYPE_NAMES,
    PHYS_ADDR_BITS,
    PHYS_ADDR_END,
    BlockState,
    BootBlocks,
    BootMachine,
    BootZone,
    Event,
    ZoneType,
)
from traces.machines import PRESETS, MachinePreset

SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
ZONE_NAMES = {z.label.lower(): z for z in ZoneType}
ONLINE_TYPES = {name: t for t, name in ONLINE_TYPE_NAMES.items()}
PARAMS = ("online_policy", "auto_movable_ratio", "auto_movable_numa_aware")
ERRNOS = {name: getattr(errno, name) for name in dir(errno) if name.startswith("E") and isinstance(getattr(errno, name), int)}
DEVICE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # QEMU's id syntax
COMMAND_LINE_SIZE = 2048  # x86's limit on the kernel command line
STR_MAX = 255  # a trace's str fields (mark texts, parameter values) hold at most 255 UTF-8 bytes
TOP_KEYS = ("name", "description", "machine", "kernel", "device", "step", "expect_findings", "record_from")
KERNEL_KEYS = ("profile", "cmdline")
DEVICE_KEYS = ("id", "type", "node", "max_size", "block_size", "unplug_online")
MACHINE_KEYS = ("block_size", "device_memory_base", "possible_nodes", "cpu_nodes", "zone", "blocks")
ZONE_KEYS = ("zone", "node", "start_pfn", "spanned", "present", "present_early")
BLOCKS_KEYS = ("first", "count", "node", "zone", "state", "present")


class ScenarioError(InputError):
    """A scenario file that cannot be run; says file, line and key."""


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

    action: str  # dimm | unplug | vmem | online | offline | param | auto_online | mark
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
    machine_line: int = 0  # where [machine] starts (errors about the boot snapshot point there)


def parse_size(value: object) -> int | None:
    """'4G' / '128M' / 4096 -> bytes; None if not a size."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = SIZE_RE.match(value)
        if m:
            return int(m.group(1)) * UNITS[m.group(2).upper()]
    return None


def _size_text(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n and n % UNITS[unit] == 0:
            return f"{n // UNITS[unit]}{unit}"
    return _shown(n)


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
        pat = re.compile(r"^\s*(?:" + re.escape(key) + r'|"' + re.escape(key) + r'"' + r"|'" + re.escape(key) + r"')\s*=")
        for i in range(table_line, len(self.lines)):  # index table_line is the line after the header
            if self.lines[i].lstrip().startswith("["):
                break
            if pat.match(self.lines[i]):
                return i + 1
        return table_line

    def fail(self, where: str, line: int, msg: str) -> ScenarioError:
        """The error at ``line`` (0, a key of the document itself or one missing: line 1)."""
        return ScenarioError(f"{where}: {msg}", path=self.path, line=line or 1)

    def strict(self, table: dict[str, Any], allowed: tuple[str, ...], where: str, line: int) -> None:
        """Every key of ``table`` is one of ``allowed``; the first other one is an error at its line
        (a sub-table's at its ``[where.key]`` header)."""
        for key in table:
            if key not in allowed:
                at = self.key_line(key, line)
                if at == line and isinstance(table[key], (dict, list)):
                    at = self.line_of(f"{where}.{key}") or at
                raise self.fail(where, at, f"unknown key {_shown(key)}; expected one of {', '.join(allowed)}")

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
            raise self.fail(f"{where}.{key}", self.key_line(key, line), f"expected {expected}, got {_shown(v)}")
        return ok

    def number(self, table: dict[str, Any], key: str, where: str, line: int, lo: int, hi: int, default: Any = ..., kind: str = "int") -> int:
        """An integer (or a size) in [lo, hi]: what a real machine can have."""
        v = self.get(table, key, kind, where, line, default)
        if v is not default and not lo <= v <= hi:
            text = _size_text if kind == "size" else _shown
            raise self.fail(f"{where}.{key}", self.key_line(key, line), f"{text(v)} outside {text(lo)}..{text(hi)}{_why(key, hi)}")
        return int(v)

    def node(self, table: dict[str, Any], where: str, line: int, nodes: frozenset[int], key: str = "node") -> int:
        """A node id of the machine (default 0)."""
        nid = self.get(table, key, "int", where, line, 0)
        if nid not in nodes:
            raise self.fail(
                f"{where}.{key}", self.key_line(key, line), f"node {nid} is not a node of this machine (nodes {', '.join(map(str, sorted(nodes)))})"
            )
        return int(nid)

    def nodes(self, table: dict[str, Any], key: str, where: str, line: int) -> frozenset[int]:
        """A node set: a list of node ids 0..63 (default [0])."""
        v = table.get(key, [0])
        if not isinstance(v, list) or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < MAX_NODES for n in v) or len(set(v)) != len(v):
            hint = " (node sets are lists of node ids, not bit masks)" if isinstance(v, int) else ""
            raise self.fail(
                f"{where}.{key}", self.key_line(key, line), f"expected a list of distinct node ids 0..{MAX_NODES - 1} like [0, 1], got {_shown(v)}{hint}"
            )
        return frozenset(v)

    def text(self, table: dict[str, Any], key: str, where: str, line: int, limit: int = STR_MAX) -> str:
        """A one-line string of at most ``limit`` UTF-8 bytes (it goes into a trace's str field)."""
        v = table[key]
        if isinstance(v, bool):
            v = "Y" if v else "N"
        if not isinstance(v, (str, int)):
            raise self.fail(f"{where}.{key}", self.key_line(key, line), f"expected a string, got {_shown(v)}")
        v = str(v)
        if len(v.encode()) > limit or any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise self.fail(f"{where}.{key}", self.key_line(key, line), f"expected one line of at most {limit} UTF-8 bytes without control characters")
        return v


def _shown(value: object) -> str:
    """A value as an error message quotes it: its repr, cut short (a 4000-digit number is not one line to read)."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 4000 else f"a {value.bit_length()}-bit number"
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def _why(key: str, hi: int) -> str:
    if key in ("first", "count", "online", "offline"):
        return f" (the blocks a {PHYS_ADDR_BITS}-bit physical address space holds)"
    if hi in (MAX_PFN, PHYS_ADDR_END):
        return f" (a {PHYS_ADDR_BITS}-bit physical address space)"
    return ""


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; raises ScenarioError naming file, line and key."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"cannot read: {e.strerror}", path=path) from None
    except UnicodeDecodeError as e:
        raise ScenarioError("not UTF-8 text", path=path, line=e.object[: e.start].count(b"\n") + 1, offset=e.start) from None
    try:
        doc = tomllib.loads(text)
    except ValueError as e:  # TOMLDecodeError, or an integer longer than Python converts (4300 digits)
        if not isinstance(e, tomllib.TOMLDecodeError):
            digits = re.search(r"\d{4300,}", text)
            at = digits.start() if digits else 0
            line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
            raise ScenarioError("TOML: an integer of more than 4300 digits", path=path, line=line, column=column) from None
        where = re.search(r"\(at line (\d+), column (\d+)\)$", str(e)) or re.search(r"\(at end of document\)$", str(e))
        msg = str(e)[: where.start()].rstrip() if where else str(e)
        if where and where.lastindex:
            line, column = int(where.group(1)), int(where.group(2))
        else:  # at the end of the document
            lines = text.split("\n")
            line, column = len(lines), len(lines[-1]) + 1
        raise ScenarioError(f"TOML syntax: {msg}", path=path, line=line, column=column) from None
    return parse_scenario(doc, path, text)


def parse_scenario(doc: dict[str, Any], path: str, text: str = "") -> Scenario:
    """Build a Scenario from a decoded TOML document."""
    r = _Reader(path, text)
    for key in doc:
        if key not in TOP_KEYS:
            raise r.fail(key, r.key_line(key, 0), f"unknown top-level key; expected one of {', '.join(sorted(TOP_KEYS))}")
    machine_t = doc.get("machine")
    mline = r.line_of("machine")
    if not isinstance(machine_t, dict):
        raise r.fail("machine", mline, "missing [machine] table")
    machine = _machine(r, machine_t, mline)
    kernel_t = doc.get("kernel", {})
    kline = r.line_of("kernel")
    if not isinstance(kernel_t, dict):
        raise r.fail("kernel", kline, "expected a table")
    r.strict(kernel_t, KERNEL_KEYS, "kernel", kline)
    profile = r.get(kernel_t, "profile", "str", "kernel", kline, None, ("6.1", "6.12", "7.2"))
    cmdline = r.get(kernel_t, "cmdline", "str", "kernel", kline, "")
    if len(cmdline.encode()) >= COMMAND_LINE_SIZE or "\n" in cmdline:
        raise r.fail("kernel.cmdline", r.key_line("cmdline", kline), f"a kernel command line is one line of less than {COMMAND_LINE_SIZE} bytes")
    name = r.get(doc, "name", "str", "name", 0, Path(path).stem)
    sc = Scenario(path, name, r.get(doc, "description", "str", "description", 0, ""), machine, profile, cmdline, machine_line=mline)
    expect = doc.get("expect_findings", [])
    if not isinstance(expect, list) or not all(isinstance(x, str) for x in expect):
        raise r.fail("expect_findings", r.key_line("expect_findings", 0), f"expected a list of finding signatures, got {_shown(expect)}")
    sc.expect_findings = expect
    nodes = machine_nodes(machine)
    for i, d in enumerate(_list(r, doc, "device")):
        sc.devices.append(_device(r, d, i, nodes, machine.block_size, {dev.id for dev in sc.devices}))
    for i, s in enumerate(_list(r, doc, "step")):
        sc.steps.append(_step(r, s, i, sc))
    sc.record_from = r.get(doc, "record_from", "int", "record_from", 0, 0)
    if not 0 <= sc.record_from <= len(sc.steps):
        raise r.fail("record_from", r.key_line("record_from", 0), f"record_from = {sc.record_from} is not a step count 0..{len(sc.steps)}")
    return sc


def machine_nodes(machine: MachinePreset) -> frozenset[int]:
    """The possible nodes of a machine (its boot_machine record's node set)."""
    mask = next(e.possible_nodes for e in machine.events if isinstance(e, BootMachine))
    return frozenset(n for n in range(MAX_NODES) if mask >> n & 1)


def _list(r: _Reader, doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    v = doc.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise r.fail(key, r.line_of(key) or r.key_line(key, 0), f"expected [[{key}]] tables")
    return v


def _device(r: _Reader, d: dict[str, Any], i: int, nodes: frozenset[int], memory_block: int, ids: set[str]) -> VirtioMemSpec:
    line = r.line_of("device", i)
    where = f"device[{i}]"
    r.strict(d, DEVICE_KEYS, where, line)
    r.get(d, "type", "str", where, line, allow=("virtio-mem",))
    dev_id = _device_id(r, d, "id", where, line)
    if dev_id in ids:
        raise r.fail(f"{where}.id", r.key_line("id", line), f"device id {dev_id!r} used twice")
    block = r.number(d, "block_size", where, line, 4096, PHYS_ADDR_END, 2 << 20, "size")
    if block & (block - 1):
        raise r.fail(f"{where}.block_size", r.key_line("block_size", line), f"{_size_text(block)} is not a power of two")
    max_size = r.number(d, "max_size", where, line, max(block, memory_block), PHYS_ADDR_END, kind="size")
    if max_size % block or max_size % memory_block:
        raise r.fail(
            f"{where}.max_size", r.key_line("max_size", line), f"{_size_text(max_size)} is not a multiple of the device block size and the memory block size"
        )
    return VirtioMemSpec(dev_id, r.node(d, where, line, nodes), max_size, block, r.get(d, "unplug_online", "bool", where, line, True))


def _device_id(r: _Reader, t: dict[str, Any], key: str, where: str, line: int) -> str:
    v = r.get(t, key, "str", where, line)
    if not DEVICE_ID.fullmatch(v):
        raise r.fail(
            f"{where}.{key}", r.key_line(key, line), f"expected an id of letters, digits, '-', '.' and '_' starting with a letter (at most 64), got {_shown(v)}"
        )
    return str(v)


STEP_KEYS = {
    "dimm": {"node", "id"},
    "unplug": set(),
    "vmem": {"size"},
    "online": {"type", "attr", "fails"},
    "offline": {"attr", "fails"},
    "param": {"value"},
    "auto_online": set(),
    "mark": set(),
    "run": set(),
}


def _step(r: _Reader, s: dict[str, Any], i: int, sc: Scenario) -> Step:
    line = r.line_of("step", i)
    where = f"step[{i}]"
    actions = [k for k in s if k in STEP_KEYS]
    if len(actions) != 1:
        raise r.fail(where, line, f"expected exactly one action key of {', '.join(STEP_KEYS)}, got {sorted(s) or 'none'}")
    action = actions[0]
    extra = set(s) - {action} - STEP_KEYS[action]
    if extra:
        raise r.fail(where, min(r.key_line(k, line) for k in extra), f"unknown key(s) {', '.join(sorted(extra))} for a {action} step")
    args: dict[str, Any] = {}
    nodes = machine_nodes(sc.machine)
    if action == "dimm":
        args["dimm"] = r.number(s, "dimm", where, line, 1, PHYS_ADDR_END, kind="size")
        args["node"] = r.node(s, where, line, nodes)
        args["id"] = _device_id(r, s, "id", where, line) if "id" in s else None
    elif action == "unplug":
        args["unplug"] = r.get(s, "unplug", "str", where, line)
    elif action == "vmem":
        devices = {d.id: d for d in sc.devices}
        args["vmem"] = r.get(s, "vmem", "str", where, line, allow=tuple(sorted(devices)) or ("<no virtio-mem device declared>",))
        dev = devices[args["vmem"]]
        args["size"] = r.number(s, "size", where, line, 0, dev.max_size, kind="size")
        if args["size"] % dev.block_size:
            raise r.fail(
                f"{where}.size", r.key_line("size", line), f"{_size_text(args['size'])} is not a multiple of {dev.id}'s block size {_size_text(dev.block_size)}"
            )
    elif action in ("online", "offline"):
        first, last = _block_range(r, s[action], f"{where}.{action}", r.key_line(action, line), PHYS_ADDR_END // sc.machine.block_size)
        args[action] = (first, last)
        args["attr"] = r.get(s, "attr", "str", where, line, "state", ("state", "online"))
        if action == "online":
            args["type"] = ONLINE_TYPES[r.get(s, "type", "str", where, line, "online", ("online", "online_kernel", "online_movable"))]
        name = r.get(s, "fails", "str", where, line, None)
        if name is not None and name not in ERRNOS:
            raise r.fail(f"{where}.fails", r.key_line("fails", line), f"expected an errno name like 'EBUSY', got {_shown(name)}")
        args["fails"] = ERRNOS[name] if name else 0
    elif action == "param":
        args["param"] = r.get(s, "param", "str", where, line, allow=PARAMS)
        if "value" not in s:
            raise r.fail(where, line, "missing key 'value' (the string written to the parameter)")
        args["value"] = r.text(s, "value", where, line)
    elif action in ("mark", "run"):
        args[action] = r.text(s, action, where, line)
    else:
        args["auto_online"] = ONLINE_TYPES[r.get(s, "auto_online", "str", where, line, allow=tuple(ONLINE_TYPES))]
    step = Step(action, args, line, dict(s))
    if len(f"step {i + 1}: {step.describe()}".encode()) > STR_MAX:
        raise r.fail(where, line, f"too long to label in a trace (its mark 'step {i + 1}: {step.describe()[:20]}...' holds at most {STR_MAX} bytes)")
    return step


def _block_range(r: _Reader, v: object, where: str, line: int, blocks: int) -> tuple[int, int]:
    first = last = -1
    if isinstance(v, int) and not isinstance(v, bool):
        first = last = v
    elif isinstance(v, str):
        m = re.fullmatch(r"\s*(\d{1,20})\s*(?:-\s*(\d{1,20})\s*)?", v)  # "48" or "48-55"
        if m:
            first, last = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 0 <= first <= last:
        raise r.fail(where, line, f"expected a block id or a range 'first-last', got {_shown(v)}")
    if last >= blocks:
        raise r.fail(where, line, f"block {last} is beyond block {blocks - 1}, the last one a {PHYS_ADDR_BITS}-bit physical address space holds")
    return first, last


def _machine(r: _Reader, t: dict[str, Any], line: int) -> MachinePreset:
    if "preset" in t:
        name = r.get(t, "preset", "str", "machine", line, allow=tuple(PRESETS))
        extra = set(t) - {"preset"}
        if extra:
            raise r.fail("machine", min(r.key_line(k, line) for k in extra), f"a preset takes no other keys, got {_shown(', '.join(sorted(extra)))}")
        return PRESETS[name]
    r.strict(t, MACHINE_KEYS, "machine", line)
    block = r.number(t, "block_size", "machine", line, MIN_BLOCK_SIZE, PHYS_ADDR_END // 2, kind="size")
    if block & (block - 1):
        raise r.fail("machine.block_size", r.key_line("block_size", line), f"{_size_text(block)} is not a power of two")
    possible = r.nodes(t, "possible_nodes", "machine", line)
    cpus = r.nodes(t, "cpu_nodes", "machine", line)
    if not possible or not cpus <= possible:
        raise r.fail(
            "machine.cpu_nodes", r.key_line("cpu_nodes", line), "CPUs sit on possible nodes: cpu_nodes must be a subset of possible_nodes, which is not empty"
        )
    base = r.number(t, "device_memory_base", "machine", line, 0, PHYS_ADDR_END, kind="size")
    events: list[Event] = [BootMachine(block, sum(1 << n for n in possible), sum(1 << n for n in cpus))]
    boot_end = 0  # bytes: the end of boot memory
    for i, z in enumerate(_tables(r, t, "zone", line)):
        zl, where = r.line_of("machine.zone", i), f"machine.zone[{i}]"
        r.strict(z, ZONE_KEYS, where, zl)
        zone = ZONE_NAMES.get(str(r.get(z, "zone", "str", where, zl)).lower())
        if zone is None or zone is ZoneType.NONE:
            raise r.fail(f"{where}.zone", r.key_line("zone", zl), f"expected DMA, DMA32, Normal or Movable, got {_shown(z['zone'])}")
        start = r.number(z, "start_pfn", where, zl, 0, MAX_PFN)
        spanned = r.number(z, "spanned", where, zl, 0, MAX_PFN - start)
        present = r.number(z, "present", where, zl, 0, spanned)
        early = r.number(z, "present_early", where, zl, 0, present, present)
        events.append(BootZone(r.node(z, where, zl, possible), zone, start, spanned, present, early, 0))
        boot_end = max(boot_end, (start + spanned) * 4096 if spanned else 0)
    blocks = PHYS_ADDR_END // block
    for i, b in enumerate(_tables(r, t, "blocks", line)):
        bl, where = r.line_of("machine.blocks", i), f"machine.blocks[{i}]"
        r.strict(b, BLOCKS_KEYS, where, bl)
        zone = ZONE_NAMES.get(str(r.get(b, "zone", "str", where, bl)).lower())
        if zone is None:
            raise r.fail(f"{where}.zone", r.key_line("zone", bl), f"expected a zone name or 'none', got {_shown(b['zone'])}")
        state = BlockState.ONLINE if r.get(b, "state", "str", where, bl, "online", ("online", "offline")) == "online" else BlockState.OFFLINE
        first = r.number(b, "first", where, bl, 0, blocks - 1)
        count = r.number(b, "count", where, bl, 1, blocks - first, 1)
        present = r.number(b, "present", where, bl, 1, block // 4096, block // 4096)
        events.append(BootBlocks(first, count, r.node(b, where, bl, possible), state, zone, True, -1, 0, present))
        boot_end = max(boot_end, (first + count) * block)
    if base < boot_end:
        raise r.fail(
            "machine.device_memory_base",
            r.key_line("device_memory_base", line),
            f"{_size_text(base)} overlaps boot memory, which ends at {_size_text(boot_end)}",
        )
    return MachinePreset("custom", "explicit memory map", tuple(events), (), "", base)


def _tables(r: _Reader, t: dict[str, Any], key: str, line: int) -> list[dict[str, Any]]:
    v = t.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise r.fail(f"machine.{key}", r.key_line(key, line), f"expected [[machine.{key}]] tables, got {_shown(v)}")
    return v
