"""The state digest: one number summarising the model-visible state, computed the same way by the
recorder (from sysfs and /proc/zoneinfo) and by the replayer (from the model)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from itertools import starmap

_BLOCK = struct.Struct("<IBB")
_ZONE = struct.Struct("<HBQ")


def state_digest(blocks: Iterable[tuple[int, int, int]], zones: Iterable[tuple[int, int, int]]) -> int:
    """64-bit digest of (block id, state, zone) for every present block and (node, zone, present)
    for every zone; zone 255 for blocks that are offline or span several zones. Order-independent."""
    h = hashlib.blake2b(digest_size=8)
    h.update(b"".join(starmap(_BLOCK.pack, sorted(blocks))))
    h.update(b"|")
    h.update(b"".join(starmap(_ZONE.pack, sorted(zones))))
    return int.from_bytes(h.digest(), "little")
