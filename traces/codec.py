"""Bytes <-> records for the .mhpt format (traces/FORMAT.md), all derived from the event table.

Two decoders share one schema: ``construct`` definitions built from the annotations in
traces/events.py (the reference: precise errors naming the field), and a fast decoder generated
from the same table as struct format strings (used on CRC-checked chunks; any error it meets is
re-decoded by the construct path, so both report the same). tests/test_codec.py proves them equal.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import construct as cs

from traces.errors import TraceFormatError
from traces.events import (
    BOOL,
    BOUNDS,
    CODE_OF,
    EVENT_TYPES,
    REPEATING,
    STR,
    ZONES,
    FieldSpec,
    Wire,
    fields_of,
    out_of_bounds,
    pack_zones,
    set_kind,
    unpack_zones,
)

RECORD_HEADER = struct.Struct("<BBHQQ")  # type, flags, total length, sequence number, timestamp (ns)
RECORD_HEADER_SIZE = RECORD_HEADER.size
MAX_RECORD = 0xFFFF
FLAG_INFERRED = 0x01  # the recorder inferred this record instead of observing it


class Unknown(NamedTuple):
    """A record of a type this reader does not know (kept byte for byte; its kind ``unknown``
    tells every consumer to skip it, as FORMAT.md asks)."""

    code: int
    data: bytes


set_kind(Unknown, "unknown")


class Record(NamedTuple):
    """One framed record: sequence number, timestamp (ns), flags and the event.

    ``extra`` holds bytes after the known fields (fields a newer minor version appended).
    """

    seq: int
    ts: int
    flags: int
    event: Any
    extra: bytes = b""


class Columns(NamedTuple):
    """The records of one chunk, column-wise: cheaper to build than one Record per event."""

    events: list[Any]
    seqs: Sequence[int]  # a range when the records are numbered one by one (the usual case)
    ts: list[int]
    flags: dict[int, int]  # record index -> flags, for records with any flag set (rare)
    extras: dict[int, bytes]  # record index -> bytes after the known fields (rare)

    def records(self) -> Iterator[Record]:
        """The chunk's records one by one."""
        flags, extras = self.flags, self.extras
        for i, (ev, seq, ts) in enumerate(zip(self.events, self.seqs, self.ts, strict=True)):
            yield Record(seq, ts, flags.get(i, 0), ev, extras.get(i, b""))


def columns_of(records: list[Record]) -> Columns:
    """Records -> Columns."""
    return Columns(
        [r.event for r in records],
        [r.seq for r in records],
        [r.ts for r in records],
        {i: r.flags for i, r in enumerate(records) if r.flags},
        {i: r.extra for i, r in enumerate(records) if r.extra},
    )


# --- construct schema, derived from the table ----------------------------------------------------------

_CS_TYPES: dict[str, Any] = {
    "u8": cs.Int8ul,
    "u16": cs.Int16ul,
    "u32": cs.Int32ul,
    "u64": cs.Int64ul,
    "s16": cs.Int16sl,
    "s32": cs.Int32sl,
    "s64": cs.Int64sl,
    "bool": cs.Int8ul,  # 0 or 1, checked by convert_field
    "zones": cs.Int32ul,
    "str": cs.PascalString(cs.Int8ul, "utf8"),
}


def body_struct(cls: type) -> cs.Struct:
    """The construct Struct of an event type's body."""
    return cs.Struct(*(f.name / _CS_TYPES[f.wire.name] for f in fields_of(cls)))


BODIES = {code: body_struct(cls) for code, cls in EVENT_TYPES.items()}
RECORD = cs.Struct(
    "type" / cs.Int8ul,
    "flags" / cs.Int8ul,
    "length" / cs.Int16ul,
    "seq" / cs.Int64ul,
    "ts" / cs.Int64ul,
    "body" / cs.Bytes(cs.this.length - RECORD_HEADER_SIZE),
)


def convert_field(f: FieldSpec, raw: Any) -> Any:
    """Raw wire value -> Python value (enum member, bool, zone tuple); ValueError if not valid."""
    if f.wire is ZONES:
        return unpack_zones(raw)
    if f.wire is BOOL:
        if raw not in (0, 1):
            raise ValueError(f"expected 0 or 1, found {raw}")
        return bool(raw)
    if isinstance(f.py, type) and issubclass(f.py, enum.Enum):
        if issubclass(f.py, enum.IntFlag):
            if raw & ~sum(int(m) for m in f.py):
                raise ValueError(f"unknown {f.py.__name__} bits in {raw:#x}")
            return f.py(raw)
        try:
            return f.py(raw)
        except ValueError:
            raise ValueError(f"expected a {f.py.__name__} value, found {raw}") from None
    return raw


def raw_field(f: FieldSpec, value: Any) -> Any:
    """Python value -> raw wire value, checking the range; ValueError if it does not fit."""
    if value is None and f.since:
        return None  # an appended field not recorded
    if f.wire is ZONES:
        return pack_zones(tuple(value))
    if f.wire is STR:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        if len(value.encode()) > 255:
            raise ValueError("string longer than 255 UTF-8 bytes")
        return value
    v = int(value)
    if not f.wire.lo <= v <= f.wire.hi:
        raise ValueError(f"{v} outside {f.wire.name} range [{f.wire.lo}, {f.wire.hi}]")
    return v


def parse_record_construct(buf: bytes, off: int = 0) -> tuple[Record, int]:
    """Decode the record at ``off`` with the construct schema; returns it and the next offset."""
    if len(buf) - off < RECORD_HEADER_SIZE:
        raise TraceFormatError(f"record header needs {RECORD_HEADER_SIZE} bytes, {len(buf) - off} left", offset=off, field="header")
    length = int.from_bytes(buf[off + 2 : off + 4], "little")
    if length < RECORD_HEADER_SIZE:
        raise TraceFormatError(f"record length {length} is shorter than its {RECORD_HEADER_SIZE}-byte header", offset=off + 2, field="length")
    if off + length > len(buf):
        raise TraceFormatError(f"record length {length} runs past the end of its chunk ({len(buf) - off} bytes left)", offset=off + 2, field="length")
    c = RECORD.parse(buf[off : off + length])
    cls = EVENT_TYPES.get(c.type)
    if cls is None:
        return Record(c.seq, c.ts, c.flags, Unknown(c.type, bytes(c.body))), off + length
    body = bytes(c.body)
    pos = 0
    values: list[Any] = []
    fields = fields_of(cls)
    for f in fields:
        if f.since and pos == len(body):  # written before this field was appended: not recorded
            values += [None] * (len(fields) - len(values))
            break
        sub = _CS_TYPES[f.wire.name]
        try:
            raw = sub.parse(body[pos:])
            size = 1 + len(raw.encode()) if f.wire is STR else sub.sizeof()
            values.append(convert_field(f, raw))
        except (cs.ConstructError, UnicodeDecodeError) as e:
            raise TraceFormatError(f"{cls.__name__}.{f.name}: {_short(e)}", offset=off + RECORD_HEADER_SIZE + pos, field=f"{cls.__name__}.{f.name}") from None
        except ValueError as e:
            raise TraceFormatError(f"{cls.__name__}.{f.name}: {e}", offset=off + RECORD_HEADER_SIZE + pos, field=f"{cls.__name__}.{f.name}") from None
        pos += size
    ev = cls._make(values)
    bad = out_of_bounds(ev)
    if bad is not None:
        raise TraceFormatError(f"{cls.__name__}: {bad[1]}", offset=off + RECORD_HEADER_SIZE, field=f"{cls.__name__}.{bad[0]}")
    return Record(c.seq, c.ts, c.flags, ev, body[pos:]), off + length


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    if isinstance(e, UnicodeDecodeError):
        return f"string is not UTF-8 ({e.reason})"
    if "StreamError" in type(e).__name__ or "stream" in text:
        return "field runs past the end of the record"
    return text


# --- the fast decoder, generated from the same table ---------------------------------------------------


def _fixed_runs(fields: tuple[FieldSpec, ...]) -> list[list[FieldSpec] | FieldSpec]:
    """Split fields into runs of fixed-size fields and single strings; an appended field starts a run."""
    runs: list[list[FieldSpec] | FieldSpec] = []
    for f in fields:
        if f.wire is STR:
            runs.append(f)
        elif runs and isinstance(runs[-1], list) and not f.since:
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


def _fmt(w: Wire) -> str:
    return "B" if w is BOOL else w.fmt


def _converter(f: FieldSpec, env: dict[str, Any], name: str) -> str:
    """Python expression converting raw variable ``name`` for field ``f`` (KeyError if invalid)."""
    if f.wire is ZONES:
        env["_ZL"] = _zone_list
        return f"_ZL({name})"
    if f.wire is BOOL:
        env["_BOOL"] = {0: False, 1: True}
        return f"_BOOL[{name}]"
    if isinstance(f.py, type) and issubclass(f.py, enum.Enum) and not issubclass(f.py, enum.IntFlag):
        key = f"_E_{f.py.__name__}"
        members = {m.value: m for m in f.py}
        dense = sorted(members) == list(range(len(members)))
        env[key] = tuple(members[i] for i in range(len(members))) if dense else members
        return f"{key}[{name}]"
    if isinstance(f.py, type) and issubclass(f.py, enum.IntFlag):
        key = f"_F_{f.py.__name__}"
        mask = sum(int(m) for m in f.py)
        env[key] = f.py
        env[f"{key}_MASK"] = ~mask
        return f"({key}({name}) if not {name} & {key}_MASK else _bad())"
    return name


_ZONE_CACHE: dict[int, tuple[Any, ...]] = {}


def _zone_list(v: int) -> tuple[Any, ...]:
    z = _ZONE_CACHE.get(v)
    if z is None:
        z = _ZONE_CACHE[v] = unpack_zones(v)
    return z


def _bad() -> None:
    raise KeyError("invalid value")


def _body_decoder(cls: type) -> Callable[[bytes], Any]:
    """Generate ``decode(body) -> event`` for one type (KeyError/struct.error/... if not exact)."""
    fields = fields_of(cls)
    env: dict[str, Any] = {"_new": tuple.__new__, "_C": cls, "_bad": _bad}
    names = [f"v{i}" for i in range(len(fields))]
    lines = ["def decode(buf):", "    p = 0"]
    idx = 0
    for i, run in enumerate(_fixed_runs(fields)):
        first = run[0] if isinstance(run, list) else run
        if first.since:  # a body written before this field was appended ends here
            done = ", ".join([*(_converter(f, env, names[j]) for j, f in enumerate(fields[:idx])), *["None"] * (len(fields) - idx)])
            lines.append(f"    if p == len(buf): return _new(_C, ({done},))")
        if isinstance(run, list):
            st = struct.Struct("<" + "".join(_fmt(f.wire) for f in run))
            env[f"_S{i}"] = st
            lines.append(f"    {', '.join(names[idx : idx + len(run)])}, = _S{i}.unpack_from(buf, p)")
            lines.append(f"    p += {st.size}")
            idx += len(run)
        else:
            lines.append("    n = buf[p]")
            lines.append(f"    {names[idx]} = buf[p + 1:p + 1 + n].decode('utf-8')")
            lines.append("    if p + 1 + n > len(buf): _bad()")
            lines.append("    p += 1 + n")
            idx += 1
    lines.append("    if p != len(buf): _bad()")  # longer bodies (appended fields) take the precise path
    conv = ", ".join(_converter(f, env, names[i]) for i, f in enumerate(fields))
    lines.append(f"    return _new(_C, ({conv}{',' if fields else ''}))")
    exec(compile("\n".join(lines), f"<mhpt {cls.__name__} body decoder>", "exec"), env)  # generated from the event table
    return env["decode"]  # type: ignore[no-any-return]


def _bounded_decoder(decode: Callable[[bytes], Any], check: Callable[[Any], str | None]) -> Callable[[bytes], Any]:
    """``decode`` refusing what no real machine can have (the construct path then names it)."""

    def bounded(buf: bytes) -> Any:
        ev = decode(buf)
        if check(ev) is not None:
            _bad()
        return ev

    return bounded


BODY_DECODERS = {code: _body_decoder(cls) for code, cls in EVENT_TYPES.items()}
BODY_DECODERS.update({CODE_OF[cls]: _bounded_decoder(BODY_DECODERS[CODE_OF[cls]], check) for cls, (_, check) in BOUNDS.items()})
INTERN_MAX = 1 << 14  # events kept per record type; the cache is cleared when it is full (bounded memory)
_INTERNED: list[dict[bytes, Any]] = [{} for _ in range(256)]
_REPEATS = frozenset(code for code, cls in EVENT_TYPES.items() if cls in REPEATING)


def _decode_body(t: int, body: bytes) -> Any:
    """The event of a record body not yet interned: decoded, then kept for the next identical body
    (a type this reader does not know: kept byte for byte, as parse_record_construct keeps it)."""
    decoder = BODY_DECODERS.get(t)
    if decoder is None:
        return Unknown(t, body)
    ev = decoder(body)
    if t in _REPEATS:
        cache = _INTERNED[t]
        if len(cache) >= INTERN_MAX:
            cache.clear()
        cache[body] = ev
    return ev


def interned_count(cls: type) -> int:
    """How many events of ``cls`` the fast decoder keeps interned now."""
    return len(_INTERNED[CODE_OF[cls]])


def decode_chunk_fast(buf: bytes) -> Columns:
    """The records of a chunk payload, column-wise; raises FastDecodeFailed on anything unusual (see decode_payload).

    Events are immutable, so records whose bodies are byte-identical share one interned event:
    most records of a trace repeat an earlier body (the same block onlined again, the same
    result), and a dictionary hit is cheaper than unpacking and converting the fields.
    """
    out: list[Any] = []
    tss: list[int] = []
    flags: dict[int, int] = {}
    jumps: dict[int, int] = {}  # record index -> its seq, where numbering does not go on by one
    append, ts_append = out.append, tss.append
    header, interned, hs = RECORD_HEADER.unpack_from, _INTERNED, RECORD_HEADER_SIZE
    off = 0
    size = len(buf)
    first = nxt = header(buf, 0)[3] if size >= hs else 0
    try:
        while off < size:
            t, fl, ln, seq, ts = header(buf, off)
            end = off + ln
            if end > size or ln < hs:
                _bad()
            body = buf[off + hs : end]
            ev = interned[t].get(body)
            if ev is None:
                ev = _decode_body(t, body)
            if seq != nxt:
                jumps[len(out)] = nxt = seq
            nxt += 1
            append(ev)
            ts_append(ts)
            if fl:
                flags[len(out) - 1] = fl
            off = end
    except (KeyError, IndexError, struct.error, UnicodeDecodeError, ValueError):
        raise FastDecodeFailed(off, len(out)) from None
    return Columns(out, _numbering(first, len(out), jumps) if jumps else range(first, nxt), tss, flags, {})


def _numbering(first: int, count: int, jumps: dict[int, int]) -> list[int]:
    """The sequence numbers of ``count`` records from ``first`` on, with their jumps."""
    seqs = []
    seq = first
    for i in range(count):
        seq = jumps.get(i, seq)
        seqs.append(seq)
        seq += 1
    return seqs


class FastDecodeFailed(Exception):
    """The fast decoder met something unusual in the record at byte ``offset``, the ``index``-th of its payload."""

    def __init__(self, offset: int, index: int) -> None:
        super().__init__(f"record {index} at byte {offset}")
        self.offset = offset
        self.index = index


def decode_payload(payload: bytes, count: int, base_offset: int = 0, first_record: int = 0) -> Columns:
    """All ``count`` records of a chunk payload (fast path; precise errors via construct).

    The records before the one the fast path stopped at decoded alike on both paths, so construct
    reads from that record on: its error there is the one a construct read of the whole payload
    gives. Only if construct accepts that record does it read the payload again from the start."""
    try:
        out = decode_chunk_fast(payload)
    except FastDecodeFailed as stop:
        try:
            parse_record_construct(payload, stop.offset)
        except TraceFormatError as e:
            raise TraceFormatError(e.message, offset=base_offset + (e.offset or 0), record=first_record + stop.index, field=e.field) from None
        return decode_payload_construct(payload, count, base_offset, first_record)
    if len(out.events) != count:
        raise TraceFormatError(f"chunk says {count} records, its payload holds {len(out.events)}", offset=base_offset, field="count")
    return out


def decode_payload_construct(payload: bytes, count: int, base_offset: int = 0, first_record: int = 0) -> Columns:
    """All records of a chunk payload, decoded with the construct schema."""
    out: list[Record] = []
    off = 0
    while off < len(payload):
        try:
            rec, off = parse_record_construct(payload, off)
        except TraceFormatError as e:
            raise TraceFormatError(e.message, offset=base_offset + (e.offset or 0), record=first_record + len(out), field=e.field) from None
        out.append(rec)
    if len(out) != count:
        raise TraceFormatError(f"chunk says {count} records, its payload holds {len(out)}", offset=base_offset, field="count")
    return columns_of(out)


# --- encoding ---------------------------------------------------------------------------------------


def _compile_encoder(code: int, cls: type) -> Callable[[int, int, int, Any], bytes]:
    """Generate ``encode(seq, ts, flags, event) -> bytes`` for one event type (struct, fast)."""
    fields = fields_of(cls)
    runs = _fixed_runs(fields)
    env: dict[str, Any] = {"_pz": pack_zones}
    lines = ["def encode(seq, ts, fl, ev):"]
    parts = []
    appended: list[tuple[str, str]] = []  # (field, its bytes' variable): written while recorded
    for i, run in enumerate(runs):
        first = run[0] if isinstance(run, list) else run
        if first.since:
            st = struct.Struct("<" + _fmt(first.wire))  # an appended fixed-size field: a run of its own
            env[f"_S{i}"] = st
            appended.append((first.name, f"_S{i}.pack(ev.{first.name})"))
            continue
        if isinstance(run, list):
            st = struct.Struct("<" + "".join(_fmt(f.wire) for f in run))
            env[f"_S{i}"] = st
            args = ", ".join(f"_pz(ev.{f.name})" if f.wire is ZONES else f"ev.{f.name}" for f in run)
            lines.append(f"    b{i} = _S{i}.pack({args})")
        else:
            lines.append(f"    s{i} = ev.{run.name}.encode()")
            lines.append(f"    b{i} = bytes((len(s{i}),)) + s{i}")
        parts.append(f"b{i}")
    body = " + ".join(parts) if parts else "b''"
    env["_H"] = RECORD_HEADER
    lines.append(f"    body = {body}")
    for k, (name, packed) in enumerate(appended):  # not recorded: the body ends before it (and every later one)
        lines.append(f"    if ev.{name} is not None:")
        if k:
            lines.append(f"        if ev.{appended[k - 1][0]} is None: raise ValueError('{cls.__name__}.{name} recorded after an unrecorded field')")
        lines.append(f"        body += {packed}")
    lines.append(f"    return _H.pack({code}, fl, {RECORD_HEADER_SIZE} + len(body), seq, ts) + body")
    exec(compile("\n".join(lines), f"<encoder {cls.__name__}>", "exec"), env)  # generated from the table
    return env["encode"]  # type: ignore[no-any-return]


def _bounded_encoder(encode: Callable[[int, int, int, Any], bytes]) -> Callable[[int, int, int, Any], bytes]:
    """``encode`` refusing what no real machine can have (ValueError naming the field)."""

    def bounded(seq: int, ts: int, fl: int, ev: Any) -> bytes:
        bad = out_of_bounds(ev)
        if bad is not None:
            raise ValueError(f"{type(ev).__name__}.{bad[0]}: {bad[1]}")
        return encode(seq, ts, fl, ev)

    return bounded


ENCODERS = {cls: _compile_encoder(code, cls) for code, cls in EVENT_TYPES.items()}
ENCODERS.update({cls: _bounded_encoder(ENCODERS[cls]) for cls in BOUNDS})


def encode_record(rec: Record) -> bytes:
    """A record's bytes; ValueError naming the field if a value does not fit its wire type."""
    ev = rec.event
    if isinstance(ev, Unknown):
        data = bytes(ev.data)
        if not 0 <= ev.code <= 255 or ev.code in EVENT_TYPES:
            raise ValueError(f"unknown record code {ev.code} is invalid or taken")
        if RECORD_HEADER_SIZE + len(data) > MAX_RECORD:
            raise ValueError(f"record of {RECORD_HEADER_SIZE + len(data)} bytes exceeds {MAX_RECORD}")
        out = RECORD_HEADER.pack(ev.code, rec.flags, RECORD_HEADER_SIZE + len(data), rec.seq, rec.ts) + data
    else:
        enc = ENCODERS.get(type(ev))
        if enc is None:
            raise ValueError(f"not an event: {ev!r}")
        try:
            out = enc(rec.seq, rec.ts, rec.flags, ev)
            if rec.extra:
                if len(out) + len(rec.extra) > MAX_RECORD:
                    raise ValueError(f"record of {len(out) + len(rec.extra)} bytes exceeds {MAX_RECORD}")
                out = out[:2] + struct.pack("<H", len(out) + len(rec.extra)) + out[4:] + rec.extra
        except (struct.error, ValueError, UnicodeEncodeError, TypeError, AttributeError):
            check_event(ev)
            raise
    if len(out) > MAX_RECORD:
        raise ValueError(f"record of {len(out)} bytes exceeds {MAX_RECORD}")
    return out


def check_event(ev: Any) -> None:
    """Raise ValueError naming the first field whose value does not fit the event table."""
    unrecorded = None
    for f in fields_of(type(ev)):
        value = getattr(ev, f.name)
        if value is not None and unrecorded is not None:
            raise ValueError(f"{type(ev).__name__}.{f.name}: recorded after the unrecorded appended field {unrecorded}")
        if value is None and f.since:
            unrecorded = f.name
        try:
            raw_field(f, value)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{type(ev).__name__}.{f.name}: {e}") from None
    bad = out_of_bounds(ev)
    if bad is not None:
        raise ValueError(f"{type(ev).__name__}.{bad[0]}: {bad[1]}")
