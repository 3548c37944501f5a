"""Streaming trace reader (constant memory), integrity report (verify) and salvage (repair)."""

from __future__ import annotations

import io
import re
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from traces.codec import RECORD_HEADER, Columns, Record, decode_payload, decode_payload_construct
from traces.errors import TraceFormatError
from traces.events import Loss
from traces.header import (
    CHUNK_HEADER,
    CHUNK_MAGIC,
    FIXED_HEADER_SIZE,
    INDEX_MAGIC,
    MAX_CHUNK,
    TRAILER,
    TRAILER_MAGIC,
    TraceHeader,
    chunk_crc,
    parse_fixed_header,
    parse_header,
)

SCAN_BLOCK = 1 << 20
_ENTRY = struct.Struct("<QQQI")  # offset, first_seq, first_ts, count (header.INDEX_ENTRY)
_MAGICS = re.compile(re.escape(CHUNK_MAGIC) + b"|" + re.escape(INDEX_MAGIC))


@dataclass(frozen=True, slots=True)
class Problem:
    """Damage found while reading: where, what, and how much was lost."""

    offset: int
    kind: str  # crc | framing | truncated | records | sequence | index
    message: str
    lost_bytes: int = 0
    lost_records: int = 0  # records a damaged or truncated chunk held, as its header says (0: unknown)

    def __str__(self) -> str:
        return f"byte {self.offset}: {self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class Chunk:
    """One intact chunk: its file offset, first sequence number and decoded records (columns)."""

    offset: int
    first_seq: int
    cols: Columns


@dataclass(slots=True)
class Stats:
    """What a full read saw."""

    records: int = 0
    chunks: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    first_ts: int | None = None
    last_ts: int | None = None
    losses: int = 0  # events the recorder said it missed (Loss records)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # unexplained (first missing seq, count)
    has_index: bool = False


class TraceReader:
    """Reads a trace file chunk by chunk.

    Strict (default): the first damage raises TraceFormatError after every record before it was
    yielded; a file cut short yields all complete chunks, then raises. Tolerant: damage is noted in
    ``problems`` and reading resumes at the next intact chunk.
    """

    def __init__(self, source: str | Path | BinaryIO, *, decoder: str = "fast", tolerant: bool = False) -> None:
        if isinstance(source, (str, Path)):
            self.path: str | None = str(source)
            try:
                self.f: BinaryIO = open(source, "rb")  # noqa: SIM115 - closed by close()
            except OSError as e:
                raise TraceFormatError(f"cannot open: {e.strerror}", path=self.path) from None
        else:
            self.path = getattr(source, "name", None) if isinstance(getattr(source, "name", None), str) else None
            self.f = source
        self.decode = decode_payload if decoder == "fast" else decode_payload_construct
        self.tolerant = tolerant
        self.problems: list[Problem] = []
        self.stats = Stats()
        head = self.f.read(FIXED_HEADER_SIZE)
        _, _, length, _ = parse_fixed_header(head, self.path)
        rest = self.f.read(length - len(head))
        self.header: TraceHeader = parse_header(head + rest, self.path)
        self.data_offset = length
        self.pos = length

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, problem: Problem, record: int | None = None) -> None:
        if not self.tolerant:
            raise TraceFormatError(f"{problem.kind}: {problem.message}", path=self.path, offset=problem.offset, record=record)
        self.problems.append(problem)

    def chunks(self) -> Iterator[Chunk]:
        """Every intact chunk in file order."""
        st = self.stats
        next_seq = 0  # a trace starts at seq 0: records missing before its first chunk are a gap
        last_loss: Loss | None = None
        while True:
            at = self.pos
            head = self.f.read(CHUNK_HEADER.size)
            if not head:
                return
            if head[:4] == INDEX_MAGIC:
                self._check_index(at, head)
                return
            if len(head) < CHUNK_HEADER.size or head[:4] != CHUNK_MAGIC:
                if len(head) < CHUNK_HEADER.size and CHUNK_MAGIC.startswith(head[:4]):
                    self._fail(Problem(at, "truncated", f"file ends inside a chunk header ({len(head)} of {CHUNK_HEADER.size} bytes)", len(head)), st.records)
                    return
                self._fail(Problem(at, "framing", f"expected a chunk (magic {CHUNK_MAGIC!r}), found {head[:4]!r}"), st.records)
                if not self._resync(at + 1):
                    return
                continue
            _, first_seq, count, length, crc = CHUNK_HEADER.unpack(head)
            if length > MAX_CHUNK:
                self._fail(Problem(at + 16, "framing", f"chunk payload length {length} exceeds the {MAX_CHUNK}-byte limit"), st.records)
                if not self._resync(at + 1):
                    return
                continue
            payload = self.f.read(length)
            if len(payload) < length:
                message = f"file ends inside a chunk: {len(payload)} of {length} payload bytes ({count} records) lost"
                lost = first_seq + count - next_seq if first_seq >= next_seq else 0  # header not plausible: unknown
                self._fail(Problem(at, "truncated", message, CHUNK_HEADER.size + len(payload), lost), st.records)
                return
            if chunk_crc(head[:20], payload) != crc:
                damaged = Problem(at, "crc", f"chunk CRC mismatch: {count} records (seq {first_seq}..) damaged", CHUNK_HEADER.size + length, count)
                self._fail(damaged, st.records)
                if not self._resync(at + 1):
                    return
                continue
            try:
                cols = self.decode(payload, count, at + CHUNK_HEADER.size, st.records)
            except TraceFormatError as e:
                if not self.tolerant:
                    raise e.at(path=self.path) from None
                self.problems.append(Problem(e.offset or at, "records", str(e), CHUNK_HEADER.size + length))
                self.pos = at + CHUNK_HEADER.size + length
                continue
            self.pos = at + CHUNK_HEADER.size + length
            seqs, events = cols.seqs, cols.events
            if not seqs:
                continue
            if seqs[0] != first_seq:
                self._fail(Problem(at + 4, "framing", f"chunk says first seq {first_seq}, its first record has {seqs[0]}"), st.records)
                continue
            if first_seq != next_seq:
                self._sequence_gap(at, next_seq, first_seq, last_loss)
            if type(seqs) is not range or seqs[-1] - first_seq != count - 1:  # look closer
                prev = first_seq
                last_loss = events[0] if type(events[0]) is Loss else None
                for seq, ev in zip(seqs[1:], events[1:], strict=True):
                    if seq <= prev:
                        self._fail(Problem(at, "sequence", f"sequence number {seq} after {prev} does not increase"), st.records)
                    elif seq != prev + 1:
                        self._sequence_gap(at, prev + 1, seq, last_loss)
                    prev = seq
                    last_loss = ev if type(ev) is Loss else None
            else:
                last_loss = events[-1] if type(events[-1]) is Loss else None
            next_seq = seqs[-1] + 1
            st.chunks += 1
            st.records += len(seqs)
            if st.first_ts is None:
                st.first_ts = cols.ts[0]
            st.last_ts = cols.ts[-1]
            yield Chunk(at, first_seq, cols)

    def _sequence_gap(self, at: int, expected: int, found: int, last_loss: Loss | None) -> None:
        if found < expected:
            self._fail(Problem(at, "sequence", f"sequence number goes back from {expected - 1} to {found}"), self.stats.records)
            return
        if last_loss is not None and found - expected <= last_loss.count:
            return  # explained by the Loss record before it
        self.stats.gaps.append((expected, found - expected))

    def _resync(self, start: int) -> bool:
        """Find the next intact chunk (or the index footer) at or after ``start``; False at EOF."""
        pos = start
        while True:
            self.f.seek(pos)
            block = self.f.read(SCAN_BLOCK + CHUNK_HEADER.size)
            for m in _MAGICS.finditer(block):
                cand = pos + m.start()
                if self._chunk_intact(cand) if m.group() == CHUNK_MAGIC else self.index_offset() == cand:
                    self.f.seek(cand)
                    self.pos = cand
                    return True
            if len(block) <= CHUNK_HEADER.size:
                return False
            pos += len(block) - CHUNK_HEADER.size

    def index_offset(self) -> int | None:
        """Where the index footer starts, if the trailer points back to one (the read position is kept)."""
        pos = self.f.tell()
        end = self.f.seek(0, io.SEEK_END)
        where = None
        if end - self.data_offset >= 8 + TRAILER.size:
            self.f.seek(end - TRAILER.size)
            at, magic = TRAILER.unpack(self.f.read(TRAILER.size))
            if magic == TRAILER_MAGIC and self.data_offset <= at <= end - 8 - TRAILER.size:
                self.f.seek(at)
                if self.f.read(4) == INDEX_MAGIC:
                    where = at
        self.f.seek(pos)
        return where

    def _chunk_intact(self, at: int) -> bool:
        self.f.seek(at)
        head = self.f.read(CHUNK_HEADER.size)
        if len(head) < CHUNK_HEADER.size:
            return False
        _, _, _, length, crc = CHUNK_HEADER.unpack(head)
        if length > MAX_CHUNK:
            return False
        payload = self.f.read(length)
        return len(payload) == length and chunk_crc(head[:20], payload) == int(crc)

    def _check_index(self, at: int, head: bytes) -> None:
        rest = self.f.read()
        data = head + rest
        n = int.from_bytes(data[4:8], "little") if len(data) >= 8 else -1
        size = 8 + 28 * n
        if n < 0 or len(data) != size + TRAILER.size:
            self._fail(Problem(at, "index", f"index footer malformed ({len(data)} bytes for {n} entries)"), self.stats.records)
            return
        where, magic = TRAILER.unpack(data[size:])
        if magic != TRAILER_MAGIC or where != at:
            self._fail(Problem(at, "index", "index trailer does not point back to the index"), self.stats.records)
            return
        wrong = self._wrong_entry(at, data[8:size])
        if wrong is not None:
            self._fail(wrong, self.stats.records)
            return
        self.stats.has_index = True

    def _wrong_entry(self, at: int, entries: bytes) -> Problem | None:
        """The first index entry that does not describe the chunk it points at (None: all do).

        Entry k names chunk k: the chunks follow each other from the end of the header to the
        index, and each entry's first_seq, count and first_ts are its chunk's (the chunk headers and
        first records are read back where the file can be read twice; a pipe gets the order checks)."""
        expect = self.data_offset
        seekable = self.f.seekable()
        end = self.f.tell() if seekable else 0
        try:
            for k, (offset, first_seq, first_ts, count) in enumerate(_ENTRY.iter_unpack(entries)):
                where = at + 8 + k * _ENTRY.size
                if offset != expect and (seekable or not expect <= offset < at):
                    return Problem(where, "index", f"index entry {k} says its chunk starts at byte {offset}, the chunks say {expect}")
                if not seekable:
                    expect = offset + 1
                    continue
                self.f.seek(offset)
                head = self.f.read(CHUNK_HEADER.size)
                if len(head) < CHUNK_HEADER.size or head[:4] != CHUNK_MAGIC:
                    return Problem(where, "index", f"index entry {k} points at byte {offset}, where no chunk starts")
                _, seq, n, length, _ = CHUNK_HEADER.unpack(head)
                first = self.f.read(RECORD_HEADER.size) if length >= RECORD_HEADER.size else b""
                ts = RECORD_HEADER.unpack(first)[4] if len(first) == RECORD_HEADER.size else first_ts
                if (seq, n, ts) != (first_seq, count, first_ts):
                    said, found = (first_seq, count, first_ts), (seq, n, ts)
                    return Problem(where, "index", f"index entry {k} says first_seq/count/first_ts {said}, the chunk at byte {offset} has {found}")
                expect = offset + CHUNK_HEADER.size + length
            if seekable and expect != at:
                return Problem(at + 4, "index", f"the index lists chunks up to byte {expect}, the chunks go on to byte {at}")
        finally:
            if seekable:
                self.f.seek(end)
        return None

    def __iter__(self) -> Iterator[Record]:
        """Every record of every intact chunk; see the class doc for damage."""
        for chunk in self.chunks():
            yield from chunk.cols.records()

    def events(self) -> Iterator[Any]:
        """Just the events (the fastest way through a trace)."""
        for chunk in self.chunks():
            yield from chunk.cols.events

    def read_all(self) -> list[Record]:
        """Every record (for small traces and tests)."""
        return list(self)


def read_trace(data: bytes, *, decoder: str = "fast") -> tuple[TraceHeader, list[Record]]:
    """Header and records of an in-memory trace (strict)."""
    r = TraceReader(io.BytesIO(data), decoder=decoder)
    return r.header, r.read_all()
