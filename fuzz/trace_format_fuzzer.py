#!/usr/bin/env python3
"""atheris harness for the .mhpt reader (OSS-Fuzz conventions; libFuzzer flags pass through).

Any input must end in records or in TraceFormatError, never another exception or a hang; the fast
and the construct decoder must agree; whatever decodes must survive binary -> text -> binary.
Half of the inputs get their CRCs recomputed first, so mutations reach record decoding.

    fuzz/trace_format_fuzzer.py -runs=100000 corpus/seeds
"""

from __future__ import annotations

import io
import struct
import sys
import zlib

import atheris

with atheris.instrument_imports():
    from traces.codec import encode_record
    from traces.errors import TraceFormatError
    from traces.header import CHUNK_HEADER, CHUNK_MAGIC, FIXED_HEADER_SIZE, MAX_CHUNK, chunk_crc
    from traces.reader import TraceReader
    from traces.text import dump, parse_text


def fix_crcs(data: bytes) -> bytes:
    """Recompute the header CRC and every chunk CRC the framing can find."""
    buf = bytearray(data)
    if len(buf) < FIXED_HEADER_SIZE:
        return data
    length = struct.unpack_from("<I", buf, 16)[0]
    if FIXED_HEADER_SIZE <= length <= len(buf):
        struct.pack_into("<I", buf, 20, zlib.crc32(bytes(buf[FIXED_HEADER_SIZE:length])))
        pos = length
        while pos + CHUNK_HEADER.size <= len(buf) and buf[pos : pos + 4] == CHUNK_MAGIC:
            n = struct.unpack_from("<I", buf, pos + 16)[0]
            if n > MAX_CHUNK or pos + CHUNK_HEADER.size + n > len(buf):
                break
            payload = bytes(buf[pos + CHUNK_HEADER.size : pos + CHUNK_HEADER.size + n])
            struct.pack_into("<I", buf, pos + 20, chunk_crc(bytes(buf[pos : pos + 20]), payload))
            pos += CHUNK_HEADER.size + n
    return bytes(buf)


def read(data: bytes, decoder: str) -> tuple[str, object, object]:
    """("ok", header, records) or ("error", message, None)."""
    try:
        r = TraceReader(io.BytesIO(data), decoder=decoder)
        return "ok", r.header, r.read_all()
    except TraceFormatError as e:
        return "error", str(e), None


def TestOneInput(data: bytes) -> None:  # libFuzzer's name
    if data[:1] and data[0] & 1:
        data = fix_crcs(data)
    fast = read(data, "fast")
    slow = read(data, "construct")
    if fast != slow:
        raise AssertionError(f"fast and construct decoders disagree: {fast[:2]!r} vs {slow[:2]!r}")
    if fast[0] == "ok":
        header, records = fast[1], fast[2]
        text = "".join(dump(header, records))  # type: ignore[arg-type]
        header2, records2 = parse_text(text)
        if (header2, records2) != (header, records):
            raise AssertionError("text round trip changed the trace")
        for rec in records2:
            encode_record(rec)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
