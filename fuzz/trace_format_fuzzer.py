#!/usr/bin/env python3
"""atheris harness for the .mhpt reader (OSS-Fuzz conventions; libFuzzer flags pass through).

Any input must end in records or in TraceFormatError, never another exception or a hang; the fast
and the construct decoder must agree; whatever decodes must survive binary -> text -> binary.
Half of the inputs get their CRCs recomputed first, so mutations reach record decoding.

    fuzz/trace_format_fuzzer.py -runs=100000 corpus/seeds
"""

from __future__ import annotations

import io
import sys

import atheris

with atheris.instrument_imports():
    from fuzz.surfaces import fix_crcs
    from traces.codec import encode_record
    from traces.errors import TraceFormatError
    from traces.reader import TraceReader
    from traces.text import dump, parse_text


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
