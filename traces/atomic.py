"""Output files appear whole or not at all: written under a temporary name beside the target,
then renamed over it."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

_UMASK = os.umask(0)
os.umask(_UMASK)


def output_directory(path: str | os.PathLike[str]) -> str:
    """The directory an output file goes to; FileNotFoundError naming it if it does not exist."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, "no such directory for the output file", directory)
    return directory


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary file beside ``path`` to write; renamed to ``path`` when the block ends without
    an exception, removed otherwise. The file gets the mode open() would give (0666 less umask)."""
    target = os.path.abspath(path)
    directory = output_directory(target)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".part")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
