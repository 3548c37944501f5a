"""Structure-aware mutation of .mhpt fuzz inputs, generated from the event table.

Inputs are decoded into events, mutated as events (insert, delete, duplicate, swap, splice, field
values from interesting sets per resource kind) and encoded again, so almost every mutant is a
valid trace. Undecodable inputs fall back to a byte-level mutation.
"""

from __future__ import annotations

import enum
import errno
import io
import random
from collections.abc import Callable
from typing import Any

from traces.codec import Record
from traces.errors import TraceFormatError
from traces.events import (
    BOOL,
    EVENT_TYPES,
    STR,
    ZONES,
    Attr,
    BootBlocks,
    FieldSpec,
    InjectFailure,
    OfflineBlock,
    OnlineBlock,
    OnlineType,
    Op,
    Res,
    Source,
    ZoneType,
    fields_of,
)
from traces.header import Capture, TraceHeader
from traces.reader import read_trace
from traces.writer import TraceWriter

BLOCK = 128 << 20
BP = BLOCK // 4096
INTERESTING: dict[Res, tuple[int, ...]] = {
    Res.BLOCK: (0, 1, 14, 15, 16, 31, 32, 47, 48, 49, 55, 56, 79, 80, 111, 112, 143, 144, 175, 176, 255, 1023),
    Res.GROUP: (0, 1, 2, 3, -1),
    Res.NODE: (0, 1, 2, -1, 63),
    Res.ADDR: (*tuple(b * BLOCK for b in (0, 16, 32, 47, 48, 49, 56, 64, 80, 112, 144, 176, 256, 512)), 48 * BLOCK + 4096),
    Res.SIZE: (BLOCK, 2 * BLOCK, 4 * BLOCK, 8 * BLOCK, 32 * BLOCK, 0, 4096, 3 * BLOCK),
    Res.PAGES: (BP, 2 * BP, 4 * BP, 8 * BP, 32 * BP, 0, 1, 512, 3 * BP),
    Res.RATIO: (0, 1, 99, 100, 300, 301, 2**31 - 1, 2**31, 2**32 - 1),
    Res.ERRNO: (errno.EBUSY, errno.ENOMEM, errno.EINTR, errno.EINVAL, 0),
}
PARAM_VALUES = ("0", "1", "99", "100", "300", "301", "2147483647", "2147483648", "4294967295", "auto-movable", "contig-zones",
                "online", "offline", "online_kernel", "online_movable", "Y", "N", "on", "off", "0x12d", "+301", "-1", "")  # fmt: skip
REQUEST_TYPES = [cls for cls in EVENT_TYPES.values() if cls.KIND in ("request", "inject")]
REAL_ZONES = [z for z in ZoneType if z is not ZoneType.NONE]


def field_value(f: FieldSpec, rng: random.Random) -> Any:
    """A value for one field: interesting for its resource kind, or anywhere in its range."""
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
    pool = INTERESTING.get(f.res) if f.res else None
    if pool and rng.random() < 0.85:
        v = rng.choice(pool)
        if f.wire.lo <= v <= f.wire.hi:
            return v
    if rng.random() < 0.5:
        return rng.choice((f.wire.lo, f.wire.hi, 0, 1))
    return rng.randint(max(f.wire.lo, -1000), min(f.wire.hi, 1 << 20))


def random_event(rng: random.Random) -> Any:
    cls = rng.choice(REQUEST_TYPES)
    return cls._make(field_value(f, rng) for f in fields_of(cls))


def mutate_field(ev: Any, rng: random.Random) -> Any:
    specs = fields_of(type(ev))
    f = rng.choice(specs)
    return ev._replace(**{f.name: field_value(f, rng)})


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
        if op < 0.25:
            out.insert(pos, random_event(rng))
        elif op < 0.4 and n > lo:
            del out[rng.randrange(lo, n)]
        elif op < 0.5 and n > lo:
            out.insert(pos, out[rng.randrange(lo, n)])
        elif op < 0.58 and n - lo >= 2:
            i, j = rng.sample(range(lo, n), 2)
            out[i], out[j] = out[j], out[i]
        elif op < 0.68 and other:
            a = _first_request(other)
            if a < len(other):
                s = rng.randrange(a, len(other))
                out[pos:pos] = other[s : s + rng.randint(1, 16)]
        elif op < 0.76 and n > lo:
            inject_before(out, rng.randrange(lo, n), rng)
        elif op < 0.82:
            out[pos:pos] = cycle_block(out, rng)
        elif n > 0:
            i = rng.randrange(lo if n > lo else 0, n)
            out[i] = mutate_field(out[i], rng)
    return out


def encode(events: list[Any], header: TraceHeader | None = None) -> bytes:
    """Events as a trace (sequence numbers from 0, timestamps 0)."""
    buf = io.BytesIO()
    w = TraceWriter(buf, header or TraceHeader(writer="mhp fuzz", source=Capture.FUZZER), index=False)
    for i, ev in enumerate(events):
        try:
            w.write_record(Record(i, 0, 0, ev))
        except ValueError:  # a value outside its wire type: drop the event
            w.seq = i + 1
    w.close()
    return buf.getvalue()


def decode_events(data: bytes) -> tuple[TraceHeader, list[Any]] | None:
    try:
        header, records = read_trace(data)
    except TraceFormatError:
        return None
    return header, [r.event for r in records if type(r.event).__name__ != "Unknown"]


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
