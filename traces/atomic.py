"""Output files appear whole or not at all: written under a temporary name beside the target,
then renamed over it."""

from __future__ import annotations

import errno
import itertools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

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


def keep_aside(path: Path) -> Path:
    """Move ``path`` to the first free ``NAME.N.SUFFIX`` beside it (``t.mhpt.part`` ->
    ``t.mhpt.1.part``) without replacing anything there; returns the new name."""
    stem, suffix = path.name.rsplit(".", 1) if "." in path.name else (path.name, "")
    for n in itertools.count(1):
        new = path.with_name(f"{stem}.{n}.{suffix}" if suffix else f"{stem}.{n}")
        try:
            os.link(path, new)  # fails if ``new`` exists: nothing is replaced
        except FileExistsError:
            continue
        except OSError:  # no hard links on this file system
            if new.exists():
                continue
            os.rename(path, new)
            return new
        os.unlink(path)
        return new
    raise AssertionError("unreachable")


def create_new(path: Path) -> tuple[BinaryIO, Path | None]:
    """``path`` created for writing, never over an existing file: one left there (a crashed run's
    ``.part``) is kept aside first (keep_aside). Returns the file and where the old one went (None)."""
    kept = None
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            kept = keep_aside(path)
            continue
        return os.fdopen(fd, "wb"), kept
