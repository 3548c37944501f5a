"""Whole-file operations on traces: info, verify, repair, cat, dump and compile."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

from traces.codec import Record
from traces.decisions import DecisionCount
from traces.errors import TraceFormatError
from traces.events import Loss
from traces.reader import Problem, Stats, TraceReader
from traces.text import CLASS_NAMES, dump_chunks, parse_text_layout
from traces.writer import CHUNK_RECORDS, TraceWriter

U32_MAX = 2**32 - 1  # a Loss record's count
_T = TypeVar("_T")


@dataclass(slots=True)
class Report:
    """What a full tolerant read found."""

    path: str
    stats: Stats
    problems: list[Problem] = field(default_factory=list)
    kept: int = 0  # records written (repair)

    @property
    def clean(self) -> bool:
        return not self.problems and not self.stats.gaps

    def lines(self) -> list[str]:
        s = self.stats
        out = [f"{self.path}: {s.records} records in {s.chunks} chunks, index {'present' if s.has_index else 'absent'}"]
        out += [f"  damage at {p}" + (f" ({p.lost_bytes} bytes lost)" if p.lost_bytes else "") for p in self.problems]
        out += [f"  sequence gap: {n} records missing from seq {first}" for first, n in s.gaps]
        if s.losses:
            out.append(f"  the recorder reported {s.losses} lost events (Loss records)")
        return out


def _full_read(path: str) -> tuple[TraceReader, Iterator[Record]]:
    reader = TraceReader(path, tolerant=True)

    def records() -> Iterator[Record]:
        for rec in reader:
            reader.stats.by_type[CLASS_NAMES.get(type(rec.event), "raw")] += 1
            if type(rec.event) is Loss:
                reader.stats.losses += rec.event.count
            yield rec

    return reader, records()


def verify(path: str) -> Report:
    """Read everything, checking CRCs, framing, records and sequence numbers."""
    reader, records = _full_read(path)
    with reader:
        for _ in records:
            pass
    return Report(path, reader.stats, reader.problems)


def info(path: str) -> tuple[Report, dict[str, object]]:
    """Header facts and counts per event type (a verify plus the header)."""
    reader, records = _full_read(path)
    decisions = DecisionCount()
    with reader:
        for rec in records:
            decisions.feed(rec)
    h = reader.header
    s = reader.stats
    facts: dict[str, object] = {
        "format": f"{h.major}.{h.minor}",
        "writer": h.writer,
        "kernel": h.kernel_release,
        "cmdline": h.cmdline,
        "arch": h.arch,
        "block_size": h.block_size,
        "params": h.params,
        "source": f"{h.source.name.lower()} {h.source_detail}".strip(),
        "clock": h.clock,
        "records": s.records,
        "chunks": s.chunks,
        "time_span_s": 0 if s.first_ts is None or s.last_ts is None else (s.last_ts - s.first_ts) / 1e9,
        "losses": s.losses,
        "decisions": decisions.to_json(),
        "events": dict(sorted(s.by_type.items())),
    }
    return Report(path, s, reader.problems), facts


def repair(path: str, out: str) -> Report:
    """Copy every intact chunk to ``out``; a Loss record marks each place where records were dropped.

    Sequence numbers that verify would report are mended so that the output verifies: a record
    numbered out of line while its neighbours go on by one (a damaged number) and a record whose
    number goes backwards get the next number; a gap no earlier Loss record explains gets one (a
    gap too large for a Loss count is a damaged number too)."""
    reader, records = _full_read(path)
    kept = 0
    with reader, TraceWriter(out, reader.header) as w:
        expected = 0  # a trace starts at seq 0
        last: Record | None = None
        seen = 0  # problems found before the last intact record
        pulled = ((rec, len(reader.problems)) for rec in records)  # problems seen when the record was read
        for (rec, problems), after in _with_next(pulled):
            seen = problems
            gap = rec.seq - expected
            explained = last is not None and type(last.event) is Loss and 0 <= gap <= last.event.count
            if gap and not explained:
                if gap < 0 or gap > U32_MAX or (after is not None and after[0].seq == expected + 1):
                    rec = rec._replace(seq=expected)
                else:
                    w.write_record(Record(expected, rec.ts, 0, Loss(gap, "mhp repair: damaged chunks dropped")))
            w.write_record(rec)
            kept += 1
            expected = rec.seq + 1
            last = rec
        tail = [p for p in reader.problems[seen:] if p.kind in ("crc", "truncated")]  # damage after the last intact chunk
        if tail:
            lost = min(sum(p.lost_records for p in tail), U32_MAX)
            what = "file cut short" if tail[-1].kind == "truncated" else "damaged chunks at the end dropped"
            w.write_record(Record(expected, 0 if last is None else last.ts, 0, Loss(lost, f"mhp repair: {what}, {sum(p.lost_bytes for p in tail)} bytes lost")))
    return Report(path, reader.stats, reader.problems, kept)


def _with_next(items: Iterator[_T]) -> Iterator[tuple[_T, _T | None]]:
    """Each item with the one after it (None for the last)."""
    prev: _T | None = None
    for item in items:
        if prev is not None:
            yield prev, item
        prev = item
    if prev is not None:
        yield prev, None


def cat(paths: list[str], out: str) -> int:
    """Join traces of one recording into ``out`` (header of the first; sequence numbers continue).

    A later part that starts with a boot snapshot is the next part of a rotated recording when its header has the
    first part's clock (``mhp record --rotate-size``: one wall time for every part) and its time goes on from the
    previous part's last record: its checkpoint's boot records are
    dropped (the earlier parts' events reach that state) and the rest continues. Any other snapshot starts a new
    recording: refused."""
    first = TraceReader(paths[0])
    header = first.header
    first.close()
    n = last_ts = 0
    with TraceWriter(out, header) as w:
        for p in paths:
            with TraceReader(p) as r:
                if (r.header.block_size, r.header.kernel_release) != (header.block_size, header.kernel_release):
                    raise TraceFormatError(f"kernel {r.header.kernel_release!r} / block size {r.header.block_size:#x} differ from the first trace's", path=p)
                rotated: bool | None = None  # decided at the first record: same clock, and its time goes on
                shift: int | None = None
                for i, rec in enumerate(r):
                    if rotated is None:
                        rotated = bool(n) and r.header.wall_ns == header.wall_ns and rec.ts >= last_ts
                    if shift is None and n and rec.event.KIND == "boot":
                        if not rotated:
                            raise TraceFormatError("starts with a boot snapshot: a new recording, not a continuation of the first trace", path=p, record=i)
                        continue  # a rotated part's checkpoint
                    if shift is None:
                        shift = max(0, w.seq - rec.seq)
                    w.write_record(rec._replace(seq=rec.seq + shift))
                    last_ts = rec.ts
                    n += 1
    return n


def dump_trace(path: str, out: TextIO) -> None:
    """Write the text form of a trace, keeping its chunks and whether it has an index (read first
    from the end: a pipe is read into memory)."""
    source: str | io.BytesIO = path
    try:
        with open(path, "rb") as f:
            if not f.seekable():
                source = io.BytesIO(f.read())
    except OSError:
        pass  # TraceReader says what is wrong with the path
    with TraceReader(source) as r:
        chunks = (chunk.cols.records() for chunk in r.chunks())
        for line in dump_chunks(r.header, chunks, index=r.index_offset() is not None):
            out.write(line)


def compile_text(path: str, out: str, *, strict: bool = True) -> int:
    """Build a binary trace from its text form; returns the record count."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise TraceFormatError(f"cannot read: {e.strerror}", path=path) from None
    except UnicodeDecodeError as e:
        raise TraceFormatError("not UTF-8 text", path=path, line=e.object[: e.start].count(b"\n") + 1, offset=e.start) from None
    header, records, layout = parse_text_layout(text, strict=strict, path=path)
    starts = None if layout.chunk_starts is None else set(layout.chunk_starts)
    with TraceWriter(out, header, chunk_records=CHUNK_RECORDS if starts is None else None, index=layout.index) as w:
        for i, rec in enumerate(records):
            if starts is not None and i in starts:
                w.flush()
            try:
                w.write_record(rec)
            except ValueError as e:  # parse_text_layout checks every value: a safety net, at the record's line
                raise TraceFormatError(str(e), path=path, line=layout.lines[i], record=i) from None
    return len(records)
