"""Structure-aware mutation of .mhpt fuzz inputs, generated from the event table.

Inputs are decoded into events, mutated as events (insert, delete, duplicate, swap, splice, field
values from interesting sets per resource kind) and encoded again, so almost every mutant is a
valid trace. Compound moves follow resource lifecycles (a new device: group, add, failure,
teardown or retry); an input-to-state move runs the reference model and rewrites an input so that
an auto-movable comparison lands exactly on its boundary. Undecodable inputs fall back to a
byte-level mutation.
"""

from __future__ import annotations

import enum
import errno
import functools
import random
from collections.abc import Callable
from typing import Any

from fuzz.boot_states import boot_state
from fuzz.check import decode, header_length
from replay.model.kernel import Kernel
from replay.model.outcome import AutoMovableStats, Outcome
from replay.model.profiles import get_profile
from traces.codec import ENCODERS, Record, encode_record
from traces.events import (
    BOOL,
    EVENT_TYPES,
    KIND_OF,
    STR,
    ZONES,
    AddFlags,
    AddMemory,
    Attr,
    BootBlocks,
    BootParams,
    FieldSpec,
    GroupRegister,
    GroupUnregister,
    InjectFailure,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    Op,
    Param,
    ParamWrite,
    RemoveMemory,
    Res,
    Source,
    ZoneType,
    fields_of,
)
from traces.header import Capture, TraceHeader, build_chunk

BLOCK = 128 << 20
BP = BLOCK // 4096
GIB = 1 << 30
HUGE_SIZES = (64 * GIB, 128 * GIB)  # devices far larger than the boot memory (slow to online: kept rare)
INTERESTING: dict[Res, tuple[int, ...]] = {
    Res.BLOCK: (0, 1, 14, 15, 16, 31, 32, 47, 48, 49, 55, 56, 79, 80, 111, 112, 143, 144, 175, 176, 255, 1023),
    Res.GROUP: (0, 1, 2, 3, -1),
    Res.NODE: (0, 1, 2, -1, 63),
    Res.ADDR: (*tuple(b * BLOCK for b in (0, 16, 32, 47, 48, 49, 56, 64, 80, 112, 144, 176, 256, 512)), 48 * BLOCK + 4096, 64 * GIB, 512 * GIB),
    Res.SIZE: (BLOCK, 2 * BLOCK, 4 * BLOCK, 8 * BLOCK, 32 * BLOCK, 0, 4096, 3 * BLOCK, *HUGE_SIZES),
    Res.PAGES: (BP, 2 * BP, 4 * BP, 8 * BP, 32 * BP, 0, 1, 512, 3 * BP),
    Res.RATIO: (0, 1, 99, 100, 300, 301, 2**31 - 1, 2**31, 2**32 - 1),
    Res.ERRNO: (errno.EBUSY, errno.ENOMEM, errno.EINTR, errno.EINVAL, 0),
}
FIELD_VALUES: dict[str, tuple[int, ...]] = {"memmap_on_memory": (0, 1, 2), "count": (0, 1, 2, 8, 14, 15, 16, 32, 64)}  # fields without a resource kind
FIELD_LIMITS = {"count": 1024}  # a boot run of a million blocks costs seconds and finds nothing more
PARAM_VALUES = ("0", "1", "99", "100", "300", "301", "2147483647", "2147483648", "4294967295", "auto-movable", "contig-zones",
                "online", "offline", "online_kernel", "online_movable", "Y", "N", "on", "off", "0x12d", "+301", "-1", "")  # fmt: skip
PARAM_POOLS: dict[Param, tuple[str, ...]] = {
    Param.ONLINE_POLICY: ("auto-movable", "contig-zones"),
    Param.AUTO_MOVABLE_RATIO: tuple(str(v) for v in INTERESTING[Res.RATIO]),
    Param.AUTO_MOVABLE_NUMA_AWARE: ("Y", "N"),
    Param.AUTO_ONLINE_BLOCKS: ("online", "offline", "online_kernel", "online_movable"),
}
DEVICE_SIZES = (*(BLOCK,) * 8, *(2 * BLOCK, 4 * BLOCK, 8 * BLOCK, 32 * BLOCK) * 2, *HUGE_SIZES)
REQUEST_TYPES = [cls for cls in EVENT_TYPES.values() if KIND_OF[cls] in ("request", "inject")]
REAL_ZONES = [z for z in ZoneType if z is not ZoneType.NONE]


def field_value(f: FieldSpec, rng: random.Random) -> Any:
    """A value for one field: interesting for its resource kind, or anywhere in its range."""
    if f.since and rng.random() < 0.25:
        return None  # an appended field not recorded (a trace of an older format version)
    if f.wire is STR:
        return rng.choice(PARAM_VALUES)
    if f.wire is ZONES:
        return tuple(rng.sample(REAL_ZONES, rng.randrange(0, 3)))
    if f.wire is BOOL:
        return rng.random() < 0.5
    if isinstance(f.py, type) and issubclass(f.py, enum.IntFlag):
        return f.py(sum(int(m) for m in f.py if m.value and rng.random() < 0.4))
    if isinstance(f.py, type) and issubclass(f.py, enum.Enum):
        return rng.choice(list(f.py))
    pool = INTERESTING.get(f.res) if f.res else FIELD_VALUES.get(f.name)
    if pool and rng.random() < 0.85:
        v = rng.choice(pool)
        if f.wire.lo <= v <= f.wire.hi:
            return v
    hi = min(f.wire.hi, FIELD_LIMITS.get(f.name, f.wire.hi))
    if rng.random() < 0.5:
        return rng.choice((f.wire.lo, hi, 0, 1))
    return rng.randint(max(f.wire.lo, -1000), min(hi, 1 << 20))


def typed_value(ev: Any, rng: random.Random) -> Any:
    """A parameter write mostly gets a value of its parameter's own kind (any string otherwise)."""
    if type(ev) is ParamWrite and rng.random() < 0.75:
        return ev._replace(value=rng.choice(PARAM_POOLS[ev.param]))
    return ev


def random_event(rng: random.Random) -> Any:
    cls = rng.choice(REQUEST_TYPES)
    return typed_value(cls._make(field_value(f, rng) for f in fields_of(cls)), rng)


def mutate_field(ev: Any, rng: random.Random) -> Any:
    specs = fields_of(type(ev))
    f = rng.choice(specs)
    return typed_value(ev._replace(**{f.name: field_value(f, rng)}), rng)


def blocks_of(ev: Any) -> list[int]:
    """The memory blocks a request touches (its block field, or its address range)."""
    if hasattr(ev, "block"):
        return [ev.block]
    if hasattr(ev, "start") and hasattr(ev, "size") and ev.size:
        first = ev.start // BLOCK
        return list(range(first, first + min(max(ev.size // BLOCK, 1), 64)))
    return []


def inject_before(events: list[Any], i: int, rng: random.Random) -> None:
    """Make the operation at ``i`` meet a failure: an injected fault on one of its blocks."""
    blocks = blocks_of(events[i])
    if blocks:
        events.insert(i, InjectFailure(rng.choice(blocks), rng.choice(list(Op)), rng.choice(INTERESTING[Res.ERRNO][:-1])))


def cycle_block(events: list[Any], rng: random.Random) -> list[Any]:
    """Offline a block the trace knows and online it again with any type (edge and span paths)."""
    known = [b for e in events for b in blocks_of(e)] + [b.first + rng.randrange(max(b.count, 1)) for b in events if isinstance(b, BootBlocks)]
    if not known:
        return []
    b = rng.choice(known)
    attr = rng.choice(list(Attr))
    return [OfflineBlock(b, attr, Source.USER), OnlineBlock(b, rng.choice(list(OnlineType)[1:]), attr, Source.USER)]


def simulate(events: list[Any], see: Callable[[int, Any, Kernel, Outcome], object] | None = None, profile: str = "6.1") -> Kernel:
    """The reference model after ``events`` (stopping at an impossible snapshot or a model crash);
    ``see`` gets every applied event with its outcome."""
    k = Kernel(get_profile(profile), oracles=False)
    try:
        for i, ev in enumerate(events):
            if ev.KIND in ("boot", "request", "inject"):
                out = k.apply(ev)
                if see is not None:
                    see(i, ev, k, out)
    except Exception:  # the fuzz check reports crashes; here the prefix simply ends
        pass
    return k


def new_device(events: list[Any], pos: int, rng: random.Random) -> list[Any]:
    """A new memory device at ``pos``: a group registered where the model says its id will be, then
    an add of a free range into it (any size up to 128 GiB, any flags)."""
    k = simulate(events[:pos])
    dynamic = rng.random() < 0.7
    size = rng.choice(DEVICE_SIZES)
    pages = BP << rng.choice((0, 0, 0, 1, 3)) if dynamic else size // 4096
    nodes = sorted(k.m.possible_nodes) or [0]
    reg = GroupRegister(dynamic, rng.choice(nodes), pages)
    try:
        mgid = k.apply(reg).rc
    except Exception:  # the prefix is no valid machine: the group is all we can add
        return [reg]
    if mgid < 0:
        return [reg]
    start = (max(k.m.blocks, default=47) + 1) * BLOCK if rng.random() < 0.7 else rng.choice(INTERESTING[Res.ADDR])
    flags = AddFlags.NID_IS_MGID
    for flag, p in ((AddFlags.DRIVER_MANAGED, 0.5), (AddFlags.MEMMAP_ON_MEMORY, 0.3), (AddFlags.MERGE_RESOURCE, 0.3)):
        if rng.random() < p:
            flags |= flag
    return [reg, AddMemory(start, size, mgid, flags)]


def fail_and_follow(events: list[Any], i: int, rng: random.Random) -> None:
    """Make the add at ``i`` fail registering one of its blocks, then retry it, unregister its
    group or remove its range (the error paths and what a driver does next)."""
    add = events[i]
    blocks = blocks_of(add)
    if type(add) is not AddMemory or not blocks:
        return
    follow: list[Any] = [add, RemoveMemory(add.start, add.size)]
    if add.flags & AddFlags.NID_IS_MGID:
        follow.append(GroupUnregister(add.nid))
    events[i + 1 : i + 1] = [rng.choice(follow)]
    events.insert(i, InjectFailure(rng.choice(blocks), Op.REGISTER, rng.choice(INTERESTING[Res.ERRNO][:-1])))


def reconfigure(events: list[Any], pos: int, rng: random.Random) -> None:
    """Change one configuration knob, each equally likely: a run-time parameter written at ``pos``
    (a value of its kind) or a field of the boot parameters (boot-only ones such as
    memmap_on_memory included)."""
    boot = [i for i, e in enumerate(events) if type(e) is BootParams]
    knobs: list[Any] = [*Param, *(fields_of(BootParams) if boot else ())]
    knob = rng.choice(knobs)
    if isinstance(knob, Param):
        events.insert(pos, ParamWrite(knob, rng.choice(PARAM_POOLS[knob])))
    else:
        i = rng.choice(boot)
        events[i] = events[i]._replace(**{knob.name: field_value(knob, rng)})


def pick_by_shape(events: list[Any], indices: list[int], shape: Callable[[Any], Any], rng: random.Random) -> int:
    """One of ``indices``: a shape first (equally likely whatever its count), then an event of it,
    so a rare kind of event gets as many turns as the hundred copies of a common one."""
    shapes: dict[Any, list[int]] = {}
    for i in indices:
        shapes.setdefault(shape(events[i]), []).append(i)
    return rng.choice(shapes[rng.choice(sorted(shapes, key=repr))])


def mutate_boot(events: list[Any], rng: random.Random) -> None:
    """Change one field of a boot record, each record type equally likely (parameters, zones ...),
    or, half the time, give the snapshot a boot state no one-field change reaches (fuzz.boot_states:
    CMA in a kernel zone, ZONE_MOVABLE at boot, a group hot-plugged before it, an offline early block)."""
    if rng.random() < 0.5:
        out = boot_state(events, rng)
        if out is not None:
            events[:] = out
            return
    boot = [i for i, e in enumerate(events) if e.KIND == "boot"]
    if boot:
        i = pick_by_shape(events, boot, lambda e: type(e).__name__, rng)
        events[i] = mutate_field(events[i], rng)


def decision_stats(events: list[Any]) -> list[tuple[int, AutoMovableStats, int | None]]:
    """Every auto-movable comparison the reference model makes on ``events``: the request's index,
    its numbers, and the index of the GroupRegister of the static group deciding it (if any)."""
    found: list[tuple[int, AutoMovableStats, int | None]] = []
    registered: dict[int, int] = {}

    def see(i: int, ev: Any, k: Kernel, out: Outcome) -> None:
        if type(ev) is GroupRegister and out.rc >= 0:
            registered[out.rc] = i
        for d in out.decisions:
            mem = k.m.blocks.get(d.block)
            g = None if mem is None else mem.group
            reg = registered.get(g.mgid) if g is not None and not g.is_dynamic else None
            found.extend((i, st, reg) for st in d.stats if st.limit)

    simulate(events, see)
    return found


def on_boundary(events: list[Any]) -> bool:
    """Some auto-movable comparison of the reference model has movable == limit exactly."""
    return any(st.movable == st.limit for _, st, _ in decision_stats(events))


def aim_at_boundary(events: list[Any], i: int, st: AutoMovableStats, reg: int | None) -> list[Any] | None:
    """``events`` changed so that the comparison ``st`` made at request ``i`` gets movable == limit:
    a static group's max_pages moved by the distance (movable grows with it one for one), else an
    auto_movable_ratio written just before with ratio * kernel_early // 100 == movable; None if
    neither input reaches the boundary exactly."""
    if reg is not None:
        pages = events[reg].pages + st.limit - st.movable
        if 0 < pages < 1 << 64:
            out = list(events)
            out[reg] = events[reg]._replace(pages=pages)
            return out
    if st.kernel_early:
        ratio = -(-100 * st.movable // st.kernel_early)
        if 0 < ratio < 1 << 32 and ratio * st.kernel_early // 100 == st.movable:
            return [*events[:i], ParamWrite(Param.AUTO_MOVABLE_RATIO, str(ratio)), *events[i:]]
    return None


def solve_boundary(events: list[Any], rng: random.Random, tries: int = 3) -> list[Any] | None:
    """Input-to-state: run the reference model, pick auto-movable comparisons it made and rewrite
    the input so one lands exactly on movable == limit (checked by running the model again)."""
    cands = decision_stats(events)
    rng.shuffle(cands)
    for i, st, reg in cands[:tries]:
        if st.movable == st.limit:
            continue
        out = aim_at_boundary(events, i, st, reg)
        if out is not None and on_boundary(out):
            return out
    return None


def solve_group_term(events: list[Any], rng: random.Random, max_size: int = 256 * GIB) -> list[Any] | None:
    """Input-to-state on the dynamic-group term of the ratio: where a decision's numbers show other
    dynamic groups' movable memory earning no requirement (gmov > 0, req 0), give one such group a
    second device, in a free range, just large enough that gmov * 100 // ratio exceeds its kernel
    pages at the ratio the parameter holds."""
    cands: list[tuple[int, int, AddFlags, int]] = []  # (index of the group's add, mgid, its flags, pages missing)
    last_add: dict[int, tuple[int, AddFlags]] = {}

    def see(i: int, ev: Any, k: Kernel, out: Outcome) -> None:
        if type(ev) is AddMemory and not out.rc and ev.flags & AddFlags.NID_IS_MGID:
            last_add[ev.nid] = (i, ev.flags)
        for d in out.decisions:
            if any(st.gmov and not st.req for st in d.stats):
                mem = k.m.blocks.get(d.block)
                own = None if mem is None else mem.group
                ratio = k.m.params.auto_movable_ratio
                for g in k.m.groups.values():
                    if g is not own and g.is_dynamic and g.present_movable_pages and g.mgid in last_add:
                        j, flags = last_add[g.mgid]
                        cands.append((j, g.mgid, flags, -(-(g.present_kernel_pages + 1) * ratio // 100) - g.present_movable_pages))

    simulate(events, see)
    cands = [c for c in cands if 0 < c[3] * 4096 <= max_size]
    if not cands:
        return None
    j, mgid, flags, pages = rng.choice(cands)
    top = max((b for e in events for b in blocks_of(e)), default=47) + 1
    add = AddMemory(top * BLOCK, -(-pages // BP) * BLOCK, mgid, flags & ~AddFlags.MEMMAP_ON_MEMORY)
    return [*events[: j + 1], add, *events[j + 1 :]]


def _first_request(events: list[Any]) -> int:
    """Index after the boot snapshot (mutations keep the snapshot intact most of the time)."""
    return next((i for i, e in enumerate(events) if e.KIND != "boot"), len(events))


def mutate_events(events: list[Any], rng: random.Random, other: list[Any] | None = None) -> list[Any]:
    """One to four structural mutations of an event list."""
    out = list(events)
    for _ in range(rng.randint(1, 4)):
        lo = _first_request(out) if rng.random() < 0.95 else 0
        n = len(out)
        pos = rng.randint(lo, n) if n >= lo else n
        op = rng.random()
        if op < 0.2:
            out.insert(pos, random_event(rng))
        elif op < 0.32 and n > lo:
            del out[rng.randrange(lo, n)]
        elif op < 0.4 and n > lo:
            out.insert(pos, out[rng.randrange(lo, n)])
        elif op < 0.46 and n - lo >= 2:
            i, j = rng.sample(range(lo, n), 2)
            out[i], out[j] = out[j], out[i]
        elif op < 0.54 and other:
            a = _first_request(other)
            if a < len(other):
                s = rng.randrange(a, len(other))
                out[pos:pos] = other[s : s + rng.randint(1, 16)]
        elif op < 0.6 and n > lo:
            inject_before(out, rng.randrange(lo, n), rng)
        elif op < 0.65:
            out[pos:pos] = cycle_block(out, rng)
        elif op < 0.7:
            adds = [i for i in range(lo, n) if type(out[i]) is AddMemory]
            if adds:
                fail_and_follow(out, pick_by_shape(out, adds, lambda e: (e.flags, e.size), rng), rng)
        elif op < 0.77:
            dev = new_device(out, pos, rng)
            out[pos:pos] = dev
            if type(dev[-1]) is AddMemory and rng.random() < 0.5:
                fail_and_follow(out, pos + len(dev) - 1, rng)
            if rng.random() < 0.3:  # the device comes under another configuration
                reconfigure(out, pos, rng)
        elif op < 0.8:
            mutate_boot(out, rng)
        elif op < 0.85:
            reconfigure(out, pos, rng)
        elif op < 0.89:
            out = (solve_boundary(out, rng) if rng.random() < 0.5 else solve_group_term(out, rng)) or out
        elif n > 0:
            i = rng.randrange(lo if n > lo else 0, n)
            out[i] = mutate_field(out[i], rng)
    return out


@functools.cache
def _fuzzer_header() -> bytes:
    return TraceHeader(writer="mhp fuzz", source=Capture.FUZZER).build()


def encode(events: list[Any], header: TraceHeader | bytes | None = None) -> bytes:
    """Events as a trace (``header``: a header or its bytes): sequence numbers from 0, timestamps
    0, chunks of 4,096 records, no index; events with a value outside its wire type are dropped."""
    head = header if isinstance(header, bytes) else header.build() if header is not None else _fuzzer_header()
    records: list[bytes] = []
    for ev in events:
        seq = len(records)
        try:
            records.append(ENCODERS[type(ev)](seq, 0, 0, ev))
        except Exception:  # an Unknown event, or a value outside its wire type: encode_record decides
            try:
                records.append(encode_record(Record(seq, 0, 0, ev)))
            except ValueError:
                continue
    chunks = [build_chunk(s, len(records[s : s + 4096]), b"".join(records[s : s + 4096])) for s in range(0, len(records), 4096)]
    return head + b"".join(chunks)


MODEL_INPUTS = frozenset({"boot", "request", "inject"})  # the kinds the model reads; observations and marks are ballast


def decode_events(data: bytes) -> tuple[bytes, list[Any]] | None:
    """The header bytes and the model inputs of a valid trace (None otherwise): mutants carry no
    observations or marks, so they stay small and fast to decode."""
    events = decode(data)
    if events is None:
        return None
    return data[: header_length(data)], [e for e in events if getattr(e, "KIND", None) in MODEL_INPUTS]


def custom_mutator(data: bytes, max_size: int, seed: int, fallback: Callable[[bytes, int], bytes]) -> bytes:
    """libFuzzer's LLVMFuzzerCustomMutator: structure-aware, byte-level for undecodable input."""
    decoded = decode_events(data)
    if decoded is None:
        return fallback(data, max_size)
    header, events = decoded
    rng = random.Random(seed)
    out = encode(mutate_events(events, rng), header)
    while len(out) > max_size and events:
        events = events[: len(events) * 3 // 4]
        out = encode(mutate_events(events, rng), header)
    return out if len(out) <= max_size else fallback(data, max_size)


def custom_crossover(data1: bytes, data2: bytes, max_out: int, seed: int) -> bytes:
    """libFuzzer's LLVMFuzzerCustomCrossOver: splice requests of the second into the first."""
    a, b = decode_events(data1), decode_events(data2)
    if a is None or b is None:
        return data1[:max_out]
    rng = random.Random(seed)
    out = encode(mutate_events(a[1], rng, b[1]), a[0])
    return out if len(out) <= max_out else data1[:max_out]
