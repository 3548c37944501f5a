"""The readable text form of traces: one record per line, derived from the event table.

```
%mhpt 1.0
%kernel release="6.1.0-56-amd64" cmdline="memhp_default_state=online"
# comments run to the end of a line
17 1.234567890 online_block block=48 online_type=online attr=state source=user
18 1.234567891 result rc=-22
block_observed block=48 state=offline node=0 valid_zones=Movable,Normal @flags=0x1
```
A record line is ``[SEQ TIME] NAME FIELD=VALUE ...`` plus optional ``@flags=N`` and ``@extra=HEX``;
without SEQ TIME a line takes the previous sequence number + 1 and the previous time. Strict
parsing (the default) wants every field exactly once, except fields a later format version appended
(absent: not recorded); lenient parsing gives missing fields their zero value. ``%chunk`` lines (a
chunk opens before the next record) and ``%index absent`` carry
the binary layout, so binary -> text -> binary is byte-exact; text without them compiles with the
writer's default chunking and an index.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from traces.codec import Record, Unknown, convert_field, encode_record, raw_field
from traces.errors import TraceFormatError
from traces.events import (
    BOOL,
    EVENT_TYPES,
    STR,
    ZONE_LABELS,
    ZONES,
    BlockState,
    FieldSpec,
    OnlineType,
    Policy,
    Res,
    ZoneType,
    fields_of,
    out_of_bounds,
)
from traces.header import MAJOR, MAX_HEADER, MINOR, Capture, Sec, TraceHeader

NAMES = {re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower(): cls for cls in EVENT_TYPES.values()}
CLASS_NAMES = {cls: name for name, cls in NAMES.items()}
HEX_RES = (Res.ADDR, Res.SIZE)
SPECIAL_LABELS: dict[type, dict[Any, str]] = {
    ZoneType: dict(ZONE_LABELS),
    OnlineType: {t: t.label for t in OnlineType},
    BlockState: {s: s.name.lower().replace("_", "-") for s in BlockState},
    Policy: {Policy.CONTIG_ZONES: "contig-zones", Policy.AUTO_MOVABLE: "auto-movable"},
}
TOKEN = re.compile(r'\s*(?:(#.*)|("(?:[^"\\]|\\.)*+")|([^\s=#"]+)(=)?)')  # possessive: no backtracking state per character
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
U64_MAX = 2**64 - 1
HEADER_RANGES = {"page_size": (0, 2**32 - 1), "section_size": (0, U64_MAX), "block_size": (0, U64_MAX), "wall_ns": (-(2**63), 2**63 - 1)}


def enum_label(value: enum.Enum) -> str:
    """The text name of an enum member."""
    labels = SPECIAL_LABELS.get(type(value))
    if labels is not None:
        return labels[value]
    if isinstance(value, enum.IntFlag):
        names = [m.name.lower() for m in type(value) if m.value and value & m and m.name]
        return "|".join(names) if names else "none"
    return value.name.lower()


def quote(text: str) -> str:
    """A JSON string literal that stays on one line (line separators other than \\n escaped too)."""
    return json.dumps(text, ensure_ascii=False).translate(LINE_BREAKS)


LINE_BREAKS = {c: f"\\u{c:04x}" for c in (0x85, 0x2028, 0x2029)}


def format_value(f: FieldSpec, value: Any) -> str:
    """One field value as text."""
    if f.wire is STR:
        return quote(value)
    if f.wire is ZONES:
        return ",".join(ZONE_LABELS[z] for z in value) if value else "none"
    if f.wire is BOOL:
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return enum_label(value)
    if f.res in HEX_RES or f.name in ("possible_nodes", "cpu_nodes", "digest"):
        return hex(value)
    return str(value)


def format_ts(ts: int) -> str:
    return f"{ts // 1_000_000_000}.{ts % 1_000_000_000:09d}"


def format_record(rec: Record) -> str:
    """One record as a text line (no newline)."""
    ev = rec.event
    if isinstance(ev, Unknown):
        body = f"raw code={ev.code} data={ev.data.hex() or '-'}"
    else:
        cls = type(ev)
        values = ((f, getattr(ev, f.name)) for f in fields_of(cls))  # an appended field not recorded is not written
        body = " ".join([CLASS_NAMES[cls], *(f"{f.name}={format_value(f, v)}" for f, v in values if v is not None or not f.since)])
    tail = (f" @flags={rec.flags:#x}" if rec.flags else "") + (f" @extra={rec.extra.hex()}" if rec.extra else "")
    return f"{rec.seq} {format_ts(rec.ts)} {body}{tail}"


def format_header(h: TraceHeader) -> list[str]:
    """The header as %-lines."""
    q = quote
    lines = [
        f"%mhpt {h.major}.{h.minor}",
        f"%writer {q(h.writer)}",
        f"%kernel release={q(h.kernel_release)} cmdline={q(h.cmdline)}",
        f"%arch {q(h.arch)}",
        f"%geometry page_size={h.page_size} section_size={h.section_size:#x} block_size={h.block_size:#x}",
        f"%params {q(h.params)}",
        f"%source {h.source.name.lower()} detail={q(h.source_detail)}",
        f"%clock {q(h.clock)} wall_ns={h.wall_ns}",
    ]
    lines += [f"%section {t} data={d.hex() or '-'}" for t, d in h.unknown_sections]
    return lines


def dump(header: TraceHeader, records: Iterable[Record]) -> Iterator[str]:
    """The text form, line by line (with newlines); compiles with the writer's default layout."""
    for line in format_header(header):
        yield line + "\n"
    for rec in records:
        yield format_record(rec) + "\n"


def dump_chunks(header: TraceHeader, chunks: Iterable[Iterable[Record]], *, index: bool) -> Iterator[str]:
    """The text form keeping the binary layout: ``%index absent`` without an index footer, a
    ``%chunk`` line opening every chunk."""
    yield from dump(header, ())
    if not index:
        yield "%index absent\n"
    for chunk in chunks:
        yield "%chunk\n"
        for rec in chunk:
            yield format_record(rec) + "\n"


# --- parsing ------------------------------------------------------------------------------------------


class _Line:
    """Tokens of one line with their columns."""

    def __init__(self, text: str, lineno: int, path: str | None) -> None:
        self.lineno = lineno
        self.path = path
        self.tokens: list[tuple[int, str, str | None]] = []  # (column, key or word, value)
        pos = 0
        text = text.rstrip("\n")
        while pos < len(text):
            m = TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise self.error(pos, f"unexpected character {text[pos]!r}")
            if m.group(1):  # comment
                break
            col = m.start(2) if m.group(2) else m.start(3)
            if m.group(2):
                self.tokens.append((col, m.group(2), None))
                pos = m.end()
            elif m.group(4):  # key=value
                key = m.group(3)
                vm = TOKEN.match(text, m.end())
                if vm is None or vm.group(1) or vm.end() == m.end() or vm.group(4) or text[m.end() : m.end() + 1].isspace():
                    raise self.error(m.end(), f"missing value after {clip(key)}=")
                value = vm.group(2) or vm.group(3)
                self.tokens.append((col, key, value))
                pos = vm.end()
            else:
                self.tokens.append((col, m.group(3), None))
                pos = m.end()

    def error(self, col: int, msg: str, field: str | None = None) -> TraceFormatError:
        return TraceFormatError(msg, path=self.path, line=self.lineno, column=col + 1, field=field)


def clip(text: str) -> str:
    """Input text as an error message quotes it: cut short."""
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def parse_int(text: str, *, units: bool = False) -> int:
    """Decimal or 0x hex, optionally negative; a K/M/G/T suffix where ``units``. No field takes more
    than 64 bits: longer texts are not read (ValueError)."""
    if len(text) > 40:
        raise ValueError(f"a number of {len(text)} characters")
    mult = 1
    if units and text[-1:].upper() in UNITS:
        mult, text = UNITS[text[-1].upper()], text[:-1]
    return int(text, 0) * mult


def parse_value(f: FieldSpec, text: str) -> Any:
    """One field value from text; ValueError with what was expected."""
    if f.wire is STR:
        if not text.startswith('"'):
            raise ValueError(f"expected a quoted string, found {clip(text)}")
        return json.loads(text)
    if f.wire is ZONES:
        if text == "none":
            return ()
        by_label = {v.lower(): k for k, v in ZONE_LABELS.items() if k is not ZoneType.NONE}
        try:
            return tuple(by_label[z.lower()] for z in text.split(","))
        except KeyError:
            raise ValueError(f"expected zones like Movable,Normal or none, found {clip(text)}") from None
    if f.wire is BOOL:
        if text not in ("true", "false"):
            raise ValueError(f"expected true or false, found {clip(text)}")
        return text == "true"
    if isinstance(f.py, type) and issubclass(f.py, enum.Enum):
        return _parse_enum(f.py, text)
    try:
        value = parse_int(text, units=f.res in HEX_RES)
    except ValueError:
        raise ValueError(f"expected an integer, found {clip(text)}") from None
    raw_field(f, value)
    return value


def _parse_enum(cls: type[enum.Enum], text: str) -> Any:
    labels = {v.lower(): k for k, v in SPECIAL_LABELS.get(cls, {}).items()}
    if issubclass(cls, enum.IntFlag):
        if text in ("none", "0"):
            return cls(0)
        value = cls(0)
        for part in text.split("|"):
            flag = cls.__members__.get(part.upper())
            if flag is None:
                raise ValueError(f"expected {cls.__name__} flags joined by '|' ({', '.join(m.lower() for m in cls.__members__)}), found {clip(part)}")
            value |= flag
        return value
    member = labels.get(text.lower()) or cls.__members__.get(text.upper().replace("-", "_"))
    if member is None:
        names = [SPECIAL_LABELS[cls][m] for m in cls] if cls in SPECIAL_LABELS else [m.name.lower() for m in cls]
        raise ValueError(f"expected one of {', '.join(names)}, found {clip(text)}")
    return member


@dataclass(slots=True)
class Layout:
    """The binary layout a text form asks for: the record positions where ``%chunk`` lines open a
    chunk (None: no ``%chunk`` line, the writer's default chunking) and whether an index follows."""

    chunk_starts: list[int] | None = None
    index: bool = True
    lines: list[int] = field(default_factory=list)  # the line of each record


def parse_text(text: str | Iterable[str], *, strict: bool = True, path: str | None = None) -> tuple[TraceHeader, list[Record]]:
    """Header and records from the text form; TraceFormatError naming line:column on bad input."""
    header, records, _ = parse_text_layout(text, strict=strict, path=path)
    return header, records


def parse_text_layout(text: str | Iterable[str], *, strict: bool = True, path: str | None = None) -> tuple[TraceHeader, list[Record], Layout]:
    """Header, records and layout (``%chunk``, ``%index``) from the text form."""
    header = TraceHeader(writer="", unknown_sections=[])
    records: list[Record] = []
    layout = Layout()
    lines = text.splitlines() if isinstance(text, str) else text
    seq, ts = -1, 0
    header_line: _Line | None = None
    header_lines: dict[str, int] = {}
    for lineno, raw in enumerate(lines, 1):
        line = _Line(raw, lineno, path)
        if not line.tokens:
            continue
        col, word, value = line.tokens[0]
        if word in ("%chunk", "%index"):
            _parse_layout_line(layout, line, len(records))
            continue
        if word.startswith("%"):
            _parse_header_line(header, line, header_lines)
            header_line = line
            continue
        rest = line.tokens
        if value is None and re.fullmatch(r"\d+", word):
            if len(rest) < 3 or rest[1][2] is not None or not re.fullmatch(r"\d+\.\d{9}", rest[1][1]):
                raise line.error(rest[1][0] if len(rest) > 1 else col, "expected SEQ TIME NAME: a time like 12.000000000 after the sequence number")
            if len(word) > 20 or len(rest[1][1]) > 21:
                raise line.error(col, "sequence number or time beyond u64")
            new_seq = int(word)
            if new_seq <= seq:
                raise line.error(col, f"sequence number {new_seq} does not increase (previous {seq})")
            secs, frac = rest[1][1].split(".")
            seq, ts = new_seq, int(secs) * 1_000_000_000 + int(frac)
            if ts > U64_MAX:
                raise line.error(rest[1][0], f"time {rest[1][1]} s is beyond the u64 nanosecond clock ({format_ts(U64_MAX)} s)")
            rest = rest[2:]
        else:
            seq += 1
        if seq > U64_MAX:
            raise line.error(col, f"sequence number {seq} does not fit in u64")
        records.append(_parse_record(line, rest, seq, ts, strict))
        layout.lines.append(lineno)
    if header_line is not None:
        _check_header(header, header_line)
    return header, records, layout


def _parse_layout_line(layout: Layout, line: _Line, position: int) -> None:
    """``%chunk`` (a chunk opens before the next record) or ``%index present|absent``."""
    col, word, _ = line.tokens[0]
    args = line.tokens[1:]
    if word == "%chunk":
        if args:
            raise line.error(args[0][0], "%chunk takes nothing after it")
        if layout.chunk_starts is None:
            layout.chunk_starts = []
        layout.chunk_starts.append(position)
    elif len(args) == 1 and args[0][1] in ("present", "absent") and args[0][2] is None:
        layout.index = args[0][1] == "present"
    else:
        raise line.error(args[0][0] if args else col, "%index: expected present or absent")


def _parse_record(line: _Line, tokens: list[tuple[int, str, str | None]], seq: int, ts: int, strict: bool) -> Record:
    col, name, value = tokens[0]
    if value is not None:
        raise line.error(col, f"expected an event name, found {clip(name + '=' + value)}")
    flags, extra = 0, b""
    given: dict[str, tuple[int, str]] = {}
    for c, key, val in tokens[1:]:
        if val is None:
            raise line.error(c, f"expected FIELD=VALUE, found {clip(key)}")
        if key in given:
            raise line.error(c, f"field {clip(key)} given twice", clip(key))
        given[key] = (c, val)
    if "@flags" in given:
        c, val = given.pop("@flags")
        try:
            flags = parse_int(val)
            if not 0 <= flags <= 255:
                raise ValueError
        except ValueError:
            raise line.error(c, f"expected flags 0..255, found {clip(val)}", "@flags") from None
    extra_col = col
    if "@extra" in given:
        c, val = given.pop("@extra")
        extra_col = c
        try:
            extra = bytes.fromhex(val)
        except ValueError:
            raise line.error(c, f"expected hex bytes, found {clip(val)}", "@extra") from None
    if name == "raw":
        return _fitting(line, Record(seq, ts, flags, _parse_raw(line, col, given), extra), col)
    cls = NAMES.get(name)
    if cls is None:
        raise line.error(col, f"unknown event {clip(repr(name))}; known: {', '.join(sorted(NAMES))}")
    names = [f.name for f in fields_of(cls)]
    for key, (c, _) in given.items():
        if key not in names:
            raise line.error(c, f"{name}: unknown field {clip(key)} (fields: {', '.join(names)})", clip(key))
    values: list[Any] = []
    for f in fields_of(cls):
        if f.name not in given:
            if f.since:  # an appended field: absent means not recorded (format 1.0 bodies)
                values.append(None)
                continue
            if strict:
                raise line.error(col, f"{name}: missing field {f.name}", f.name)
            values.append(convert_field(f, _zero(f)))
            continue
        c, val = given[f.name]
        try:
            values.append(parse_value(f, val))
        except (ValueError, json.JSONDecodeError) as e:
            raise line.error(c + len(f.name) + 1, f"{name}.{f.name}: {e}", f.name) from None
    ev = cls._make(values)
    bad = out_of_bounds(ev)
    if bad is not None:
        raise line.error(given[bad[0]][0] if bad[0] in given else col, f"{name}: {bad[1]}", bad[0])
    return _fitting(line, Record(seq, ts, flags, ev, extra), extra_col)


def _fitting(line: _Line, rec: Record, col: int) -> Record:
    """``rec`` if it fits in a record of at most MAX_RECORD bytes (only raw data and @extra can make
    it longer: every field is checked already), else the error at ``col``."""
    if rec.extra or isinstance(rec.event, Unknown):
        try:
            encode_record(rec)
        except ValueError as e:
            raise line.error(col, str(e)) from None
    return rec


def _zero(f: FieldSpec) -> Any:
    if f.wire is STR:
        return ""
    if f.wire is ZONES:
        return 0xFFFFFFFF
    if isinstance(f.py, type) and issubclass(f.py, enum.Enum) and not issubclass(f.py, enum.IntFlag):
        return next(iter(f.py)).value
    return 0


def _parse_raw(line: _Line, col: int, given: dict[str, tuple[int, str]]) -> Unknown:
    try:
        code = parse_int(given.pop("code")[1])
        data = given.pop("data")[1]
        ev = Unknown(code, b"" if data == "-" else bytes.fromhex(data))
    except (KeyError, ValueError):
        raise line.error(col, "raw needs code=N data=HEX (or data=-)") from None
    if code in EVENT_TYPES or not 0 <= code <= 255:
        raise line.error(col, f"raw code {code} is not a free record type (0..255, not a known event)")
    if given:
        raise line.error(next(iter(given.values()))[0], "raw takes only code and data")
    return ev


# What each header line takes: how many values without a key, then its keys (as format_header writes them).
HEADER_LINES: dict[str, tuple[int, tuple[str, ...]]] = {
    "mhpt": (1, ()),
    "writer": (1, ()),
    "kernel": (0, ("release", "cmdline")),
    "arch": (1, ()),
    "geometry": (0, ("page_size", "section_size", "block_size")),
    "params": (1, ()),
    "source": (1, ("detail",)),
    "clock": (1, ("wall_ns",)),
    "section": (1, ("data",)),
}


def _header_shape(line: _Line, key: str, lines: dict[str, int]) -> None:
    """The header line takes its values and keys, each key once, and comes once (``%section``, an unknown section,
    as often as the binary header has it); a record line is as strict about its fields. ``lines``: where each header
    line came first."""
    col = line.tokens[0][0]
    if key not in HEADER_LINES:
        raise line.error(col, f"unknown header line %{clip(key)}")
    if key != "section":
        if key in lines:
            raise line.error(col, f"%{key} given twice (first on line {lines[key]})")
        lines[key] = line.lineno
    values, keys = HEADER_LINES[key]
    takes = f"{values or 'no'} value{'' if values == 1 else 's'} without a key"
    seen: set[str] = set()
    for c, k, v in line.tokens[1:]:
        if v is None:
            values -= 1
            if values < 0:
                raise line.error(c, f"%{key}: unexpected {clip(k)} ({takes})")
        elif k not in keys:
            raise line.error(c, f"%{key}: unknown key {clip(k)} (keys: {', '.join(keys) or 'none'})")
        elif k in seen:
            raise line.error(c, f"%{key}: {clip(k)} given twice")
        else:
            seen.add(k)


def _parse_header_line(h: TraceHeader, line: _Line, lines: dict[str, int]) -> None:
    col, word, _ = line.tokens[0]
    key = word[1:]
    _header_shape(line, key, lines)
    pos = [t for t in line.tokens[1:] if t[2] is None]
    kv = {t[1]: t[2] for t in line.tokens[1:] if t[2] is not None}

    def s(text: str | None) -> str:
        if text is None or not text.startswith('"'):
            raise line.error(col, f"%{key}: expected a quoted string")
        value = str(json.loads(text))
        if len(value.encode("utf-8", "surrogatepass")) > 0xFFFF:
            raise line.error(col, f"%{key}: a header string holds at most 65535 UTF-8 bytes")
        return value

    def n(name: str, text: str) -> int:
        value = parse_int(text, units=name != "wall_ns")
        lo, hi = HEADER_RANGES[name]
        if not lo <= value <= hi:
            raise line.error(col, f"%{key}: {name} {value} outside [{lo}, {hi}]")
        return value

    try:
        if key == "mhpt":
            major, _, minor = (pos[0][1] if pos else "").partition(".")
            if int(major) != MAJOR:
                raise line.error(col, f"text form version {major}.{minor}, this reader reads {MAJOR}.x")
            h.major, h.minor = MAJOR, int(minor or MINOR)
            if not 0 <= h.minor <= 0xFFFF:
                raise line.error(col, f"text form version {major}.{minor}: the minor version is a u16")
        elif key == "writer":
            h.writer = s(pos[0][1] if pos else None)
        elif key == "kernel":
            h.kernel_release, h.cmdline = s(kv.get("release")), s(kv.get("cmdline"))
        elif key == "arch":
            h.arch = s(pos[0][1] if pos else None)
        elif key == "geometry":
            h.page_size, h.section_size, h.block_size = (n(k, kv[k]) for k in ("page_size", "section_size", "block_size"))
        elif key == "params":
            h.params = s(pos[0][1] if pos else None)
        elif key == "source":
            h.source = Capture[pos[0][1].upper()]
            h.source_detail = s(kv.get("detail", '""'))
        elif key == "clock":
            h.clock = s(pos[0][1] if pos else None)
            h.wall_ns = n("wall_ns", kv.get("wall_ns", "0"))
        elif key == "section":
            data = kv["data"]
            stype = parse_int(pos[0][1])
            if stype in set(Sec) or not 0 <= stype <= 0xFFFF:
                raise line.error(pos[0][0], f"%section {stype}: not a free section type (0..65535, not one of the known {min(Sec)}..{max(Sec)})")
            h.unknown_sections.append((stype, b"" if data == "-" else bytes.fromhex(data)))
    except (KeyError, IndexError, ValueError) as e:
        if isinstance(e, TraceFormatError):
            raise
        raise line.error(col, f"%{key}: malformed ({e})") from None


def _check_header(h: TraceHeader, last: _Line) -> None:
    """The header fits the format (each value was checked on its line; the total length is checked
    at the last header line)."""
    size = len(h.build())
    if size > MAX_HEADER:
        raise last.error(0, f"the header lines make a {size}-byte header, more than the {MAX_HEADER}-byte limit")
