"""What every file-reading surface must do with any input, checked by the fuzz targets.

The oracle is one rule: an input ends in success or in one InputError naming the file and the
position in it (one line); anything else (another exception, a hang, unbounded memory) is a bug.
Each ``check_*`` function takes one fuzz input and raises AssertionError (or lets an unexpected
exception through) when the rule breaks.
"""

from __future__ import annotations

import struct
import zlib

from traces.header import CHUNK_HEADER, CHUNK_MAGIC, FIXED_HEADER_SIZE, MAX_CHUNK, chunk_crc


def fix_crcs(data: bytes) -> bytes:
    """Recompute the header CRC and every chunk CRC the framing can find (so mutations reach
    record decoding)."""
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
