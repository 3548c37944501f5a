"""The .mhpt file header, chunk framing and index footer (traces/FORMAT.md), defined with construct."""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field

import construct as cs

from traces.errors import TraceFormatError

MAGIC = b"\x89MHPT\r\n\x1a"  # high bit, CR-LF and ^Z catch 7-bit, newline and text-mode damage
BOM = 0x01020304  # written little-endian: a byte-swapped reader sees 0x04030201
MAJOR = 1
MINOR = 1  # 1.1: boot_zone.managed appended
CHUNK_MAGIC = b"MHc1"
INDEX_MAGIC = b"MHi1"
TRAILER_MAGIC = b"MHPTIDX\x1a"
MAX_HEADER = 1 << 20
MAX_CHUNK = 16 << 20  # payload bytes; a larger length field is damage, never an allocation

CHUNK_HEADER = struct.Struct("<4sQIII")  # magic, first seq, record count, payload length, crc32
TRAILER = struct.Struct("<Q8s")  # offset of the index, TRAILER_MAGIC


class Capture(enum.IntEnum):
    """Where a trace was captured."""

    UNKNOWN = 0
    LIVE = 1  # mhp record on a live host
    LAB = 2  # mhp lab: a real kernel under QEMU
    SIMULATION = 3  # mhp simulate
    GENERATOR = 4  # mhp gen
    FUZZER = 5  # a fuzz input or minimised reproducer


class Sec(enum.IntEnum):
    """Header section types; readers skip types they do not know."""

    WRITER = 1
    KERNEL = 2
    ARCH = 3
    GEOMETRY = 4
    PARAMS = 5
    SOURCE = 6
    CLOCK = 7


_STR = cs.PascalString(cs.Int16ul, "utf8")
SECTION_BODIES = {
    Sec.WRITER: cs.Struct("writer" / _STR),
    Sec.KERNEL: cs.Struct("release" / _STR, "cmdline" / _STR),
    Sec.ARCH: cs.Struct("arch" / _STR),
    Sec.GEOMETRY: cs.Struct("page_size" / cs.Int32ul, "section_size" / cs.Int64ul, "block_size" / cs.Int64ul),
    Sec.PARAMS: cs.Struct("params" / _STR),
    Sec.SOURCE: cs.Struct("source" / cs.Enum(cs.Int8ul, Capture), "detail" / _STR),
    Sec.CLOCK: cs.Struct("clock" / _STR, "wall_ns" / cs.Int64sl),
}
SECTION = cs.Struct("type" / cs.Int16ul, "length" / cs.Int32ul, "data" / cs.Bytes(cs.this.length))
FIXED_HEADER = cs.Struct(
    "magic" / cs.Bytes(8),
    "bom" / cs.Int32ul,
    "major" / cs.Int16ul,
    "minor" / cs.Int16ul,
    "length" / cs.Int32ul,  # whole header, fixed part included
    "crc" / cs.Int32ul,  # crc32 of the section bytes
)
FIXED_HEADER_SIZE = FIXED_HEADER.sizeof()
CHUNK = cs.Struct(
    "magic" / cs.Const(CHUNK_MAGIC),
    "first_seq" / cs.Int64ul,
    "count" / cs.Int32ul,
    "length" / cs.Int32ul,
    "crc" / cs.Int32ul,  # crc32 of the first 20 header bytes followed by the payload
)
INDEX_ENTRY = cs.Struct("offset" / cs.Int64ul, "first_seq" / cs.Int64ul, "first_ts" / cs.Int64ul, "count" / cs.Int32ul)
INDEX_HEAD = cs.Struct("magic" / cs.Const(INDEX_MAGIC), "n" / cs.Int32ul)  # then n INDEX_ENTRYs


@dataclass(slots=True)
class TraceHeader:
    """What a trace says about itself."""

    major: int = MAJOR
    minor: int = MINOR
    writer: str = ""
    kernel_release: str = ""
    cmdline: str = ""
    arch: str = "x86_64"
    page_size: int = 4096
    section_size: int = 128 << 20
    block_size: int = 128 << 20
    params: str = ""  # "name=value" pairs separated by spaces
    source: Capture = Capture.UNKNOWN
    source_detail: str = ""
    clock: str = "CLOCK_MONOTONIC ns since the trace began"
    wall_ns: int = 0  # wall-clock time (ns since the epoch) of timestamp 0
    unknown_sections: list[tuple[int, bytes]] = field(default_factory=list)

    def sections(self) -> list[tuple[int, bytes]]:
        """The header's sections as (type, bytes), known ones first."""
        c = {
            Sec.WRITER: {"writer": self.writer},
            Sec.KERNEL: {"release": self.kernel_release, "cmdline": self.cmdline},
            Sec.ARCH: {"arch": self.arch},
            Sec.GEOMETRY: {"page_size": self.page_size, "section_size": self.section_size, "block_size": self.block_size},
            Sec.PARAMS: {"params": self.params},
            Sec.SOURCE: {"source": self.source.name, "detail": self.source_detail},
            Sec.CLOCK: {"clock": self.clock, "wall_ns": self.wall_ns},
        }
        return [(int(t), SECTION_BODIES[t].build(v)) for t, v in c.items()] + list(self.unknown_sections)

    def build(self) -> bytes:
        """The header's bytes; ValueError if a value does not fit."""
        try:
            body = b"".join(SECTION.build({"type": t, "length": len(d), "data": d}) for t, d in self.sections())
        except (cs.ConstructError, UnicodeEncodeError) as e:
            raise ValueError(f"header does not fit the format: {e}") from None
        fixed = FIXED_HEADER.build(
            {"magic": MAGIC, "bom": BOM, "major": self.major, "minor": self.minor, "length": FIXED_HEADER_SIZE + len(body), "crc": zlib.crc32(body)}
        )
        return bytes(fixed) + body

    def param_dict(self) -> dict[str, str]:
        return dict(p.split("=", 1) for p in self.params.split() if "=" in p)


def parse_fixed_header(data: bytes, path: str | None = None) -> tuple[int, int, int, int]:
    """Check magic, byte order and version of the first bytes; returns (major, minor, length, crc)."""
    if len(data) < FIXED_HEADER_SIZE:
        raise TraceFormatError(f"file is {len(data)} bytes, shorter than the {FIXED_HEADER_SIZE}-byte header", path=path, offset=0, field="magic")
    h = FIXED_HEADER.parse(data)
    if h.magic != MAGIC:
        hint = " (damaged in transfer: newline translation or a 7-bit channel?)" if b"MHPT" in h.magic else ""
        raise TraceFormatError(f"not an mhpt trace: magic {h.magic!r}, expected {MAGIC!r}{hint}", path=path, offset=0, field="magic")
    if h.bom != BOM:
        what = "byte-swapped (written big-endian?)" if h.bom == 0x04030201 else f"{h.bom:#010x}"
        raise TraceFormatError(f"byte-order mark is {what}, expected {BOM:#010x}", path=path, offset=8, field="bom")
    if h.major != MAJOR:
        raise TraceFormatError(f"format major version {h.major}, this reader reads {MAJOR}.x", path=path, offset=12, field="major")
    if not FIXED_HEADER_SIZE <= h.length <= MAX_HEADER:
        raise TraceFormatError(f"header length {h.length} outside [{FIXED_HEADER_SIZE}, {MAX_HEADER}]", path=path, offset=16, field="length")
    return h.major, h.minor, h.length, h.crc


def parse_header(data: bytes, path: str | None = None) -> TraceHeader:
    """Parse a whole header (``data`` holds at least its length); TraceFormatError if damaged."""
    major, minor, length, crc = parse_fixed_header(data, path)
    if len(data) < length:
        raise TraceFormatError(f"header is {length} bytes, the file has {len(data)}", path=path, offset=16, field="length")
    body = data[FIXED_HEADER_SIZE:length]
    if zlib.crc32(body) != crc:
        raise TraceFormatError("header CRC mismatch: the header is damaged", path=path, offset=20, field="crc")
    hdr = TraceHeader(major=major, minor=minor, unknown_sections=[])
    pos = 0
    while pos < len(body):
        at = FIXED_HEADER_SIZE + pos
        if len(body) - pos < 6:
            raise TraceFormatError("section header runs past the header end", path=path, offset=at, field="section")
        stype, slen = struct.unpack_from("<HI", body, pos)
        data_ = body[pos + 6 : pos + 6 + slen]
        if len(data_) != slen:
            raise TraceFormatError(f"section {stype} length {slen} runs past the header end", path=path, offset=at + 2, field="section.length")
        pos += 6 + slen
        try:
            sec = Sec(stype)
        except ValueError:
            hdr.unknown_sections.append((stype, bytes(data_)))
            continue
        try:
            v = SECTION_BODIES[sec].parse(data_)
        except (cs.ConstructError, UnicodeDecodeError) as e:
            raise TraceFormatError(
                f"section {sec.name}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}", path=path, offset=at, field=sec.name.lower()
            ) from None
        _apply_section(hdr, sec, v)
    return hdr


def _apply_section(hdr: TraceHeader, sec: Sec, v: cs.Container) -> None:
    if sec is Sec.WRITER:
        hdr.writer = v.writer
    elif sec is Sec.KERNEL:
        hdr.kernel_release, hdr.cmdline = v.release, v.cmdline
    elif sec is Sec.ARCH:
        hdr.arch = v.arch
    elif sec is Sec.GEOMETRY:
        hdr.page_size, hdr.section_size, hdr.block_size = v.page_size, v.section_size, v.block_size
    elif sec is Sec.PARAMS:
        hdr.params = v.params
    elif sec is Sec.SOURCE:
        hdr.source, hdr.source_detail = Capture[str(v.source)] if str(v.source) in Capture.__members__ else Capture.UNKNOWN, v.detail
    else:
        hdr.clock, hdr.wall_ns = v.clock, v.wall_ns


def chunk_crc(header20: bytes, payload: bytes) -> int:
    """CRC32 of a chunk: its first 20 header bytes, then its payload."""
    return zlib.crc32(payload, zlib.crc32(header20))


def build_chunk(first_seq: int, count: int, payload: bytes) -> bytes:
    """A framed chunk."""
    head20 = CHUNK_HEADER.pack(CHUNK_MAGIC, first_seq, count, len(payload), 0)[:20]
    return head20 + struct.pack("<I", chunk_crc(head20, payload)) + payload
