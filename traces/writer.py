"""Appending, chunked, CRC-protected trace writer; files appear under their name only when complete."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from traces.atomic import create_new, output_directory
from traces.codec import ENCODERS, Record, check_event, encode_record
from traces.header import INDEX_ENTRY, INDEX_HEAD, TRAILER, TRAILER_MAGIC, TraceHeader, build_chunk

CHUNK_RECORDS = 4096


class TraceWriter:
    """Writes records in chunks of ``chunk_records`` (None: a chunk ends only at ``flush()``); every
    flushed chunk is readable on its own.

    A path is written as ``PATH.part`` and renamed to PATH by ``close()``; a writer killed before
    that leaves ``PATH.part``, valid up to its last flushed chunk (``mhp verify``/``repair`` read it).
    A later writer of PATH never overwrites it: the old ``PATH.part`` is kept as ``PATH.N.part``
    (``kept``) and said so on standard error. ``"-"`` writes to standard output.
    """

    def __init__(
        self,
        target: str | Path | BinaryIO,
        header: TraceHeader,
        *,
        chunk_records: int | None = CHUNK_RECORDS,
        fsync: bool = False,
        index: bool = True,
    ) -> None:
        self.final: Path | None = None
        self.part: Path | None = None
        head = header.build()  # before a file exists: a header that does not fit leaves nothing behind
        self.kept: Path | None = None  # where a crashed run's PATH.part went
        if isinstance(target, (str, Path)) and str(target) == "-":
            self.f: BinaryIO = sys.stdout.buffer
        elif isinstance(target, (str, Path)):
            self.final = Path(target)
            output_directory(self.final)
            self.part = self.final.with_name(self.final.name + ".part")
            self.f, self.kept = create_new(self.part)  # closed by close()/abort()
            if self.kept is not None:
                print(f"mhp: {self.part}: left by an earlier run that did not finish; kept as {self.kept} (mhp verify and mhp repair read it)", file=sys.stderr)
        else:
            self.f = target
        self.chunk_records = chunk_records
        self.fsync = fsync
        self.index_enabled = index
        self.seq = 0  # a trace starts at seq 0 (readers count records missing before it as a gap)
        self.offset = 0
        self.t0 = time.monotonic_ns()
        self.pending: list[bytes] = []
        self.pending_first_seq = 0
        self.pending_first_ts = 0
        self.index = bytearray()  # the index entries, packed: 28 bytes a chunk for a recorder that runs for months
        self.closed = False
        self._write(head)

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self.offset += len(data)

    def write(self, event: Any, ts: int | None = None, flags: int = 0) -> int:
        """Append one event; returns its sequence number."""
        seq = self.seq
        if ts is None:
            ts = time.monotonic_ns() - self.t0
        enc = ENCODERS.get(type(event))
        try:
            data = enc(seq, ts, flags, event) if enc is not None else encode_record(Record(seq, ts, flags, event))
        except Exception:
            check_event(event)  # names the field that does not fit
            raise
        self._append(data, seq, ts)
        return seq

    def write_record(self, rec: Record) -> None:
        """Append a record keeping its sequence number, timestamp and flags (cat, repair)."""
        if rec.seq < self.seq:
            raise ValueError(f"sequence number {rec.seq} goes backwards (next is {self.seq})")
        self.seq = rec.seq
        self._append(encode_record(rec), rec.seq, rec.ts)

    def _append(self, data: bytes, seq: int, ts: int) -> None:
        if not self.pending:
            self.pending_first_seq = seq
            self.pending_first_ts = ts
        self.pending.append(data)
        self.seq = seq + 1
        if self.chunk_records is not None and len(self.pending) >= self.chunk_records:
            self.flush()

    def flush(self) -> None:
        """End the current chunk and push it to the file (fsync if asked)."""
        if self.pending:
            if self.index_enabled:
                entry = {"offset": self.offset, "first_seq": self.pending_first_seq, "first_ts": self.pending_first_ts, "count": len(self.pending)}
                self.index += INDEX_ENTRY.build(entry)
            self._write(build_chunk(self.pending_first_seq, len(self.pending), b"".join(self.pending)))
            self.pending = []
        self.f.flush()
        if self.fsync:
            os.fsync(self.f.fileno())

    def close(self) -> None:
        """Flush, write the index footer and give the file its final name."""
        if self.closed:
            return
        self.flush()
        if self.index_enabled:
            at = self.offset
            self._write(INDEX_HEAD.build({"n": len(self.index) // INDEX_ENTRY.sizeof()}) + self.index + TRAILER.pack(at, TRAILER_MAGIC))
        self.f.flush()
        if self.part is not None:
            os.fsync(self.f.fileno())
            self.f.close()
            assert self.final is not None
            os.replace(self.part, self.final)
        self.closed = True

    def abort(self) -> None:
        """Give up: remove the partial file (a path target) without renaming."""
        if self.closed:
            return
        self.closed = True
        if self.part is not None:
            self.f.close()
            self.part.unlink(missing_ok=True)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
