"""Hits of known signatures on new decision paths, kept off libFuzzer's crash path.

A crash ends libFuzzer, and a Python harness takes about a second to start again; a campaign on
the reference model meets a known signature on a new path every few seconds. So the harness
writes such an input as ``PREFIXheld-SHA1`` beside the crash artifacts, skips that (signature,
path) pair from then on, and goes on; the campaign triages held inputs like crash artifacts
(fuzz.cause) while the harness runs. A signature the regressions lack still crashes: it is new.
The harness reads the campaign's ignore file again when it changes (the causes triage learned).
"""

from __future__ import annotations

import hashlib
import os

from fuzz.check import Hit
from fuzz.path import known_paths, pathed
from traces.atomic import atomic_write

REREAD_EVERY = 1024  # inputs between two looks at the ignore file's modification time


def read_ignore(path: str | None) -> frozenset[str]:
    """The entries of an ignore file (a signature or ``SIG @ PATH`` per line; # comments)."""
    if not path or not os.path.exists(path):
        return frozenset()
    with open(path) as f:
        return frozenset(line.strip() for line in f if line.strip() and not line.startswith("#"))


class Holder:
    """What a harness ignores, and where it holds the hits it does not crash on."""

    def __init__(self, ignore_file: str | None, prefix: str | None) -> None:
        self.ignore_file, self.prefix = ignore_file, prefix
        self.mtime = self._mtime()
        self.held: set[str] = set()  # the (signature @ path) entries this process held
        self.ignore = read_ignore(ignore_file)
        self.calls = 0

    @classmethod
    def from_env(cls) -> Holder:
        """MHP_FUZZ_IGNORE (the ignore file) and MHP_FUZZ_HELD (where held inputs go; unset: hits crash)."""
        return cls(os.environ.get("MHP_FUZZ_IGNORE"), os.environ.get("MHP_FUZZ_HELD") or None)

    def _mtime(self) -> int:
        try:
            return os.stat(self.ignore_file).st_mtime_ns if self.ignore_file else 0
        except FileNotFoundError:
            return 0

    def current(self) -> frozenset[str]:
        """The ignore entries for the next input (the file re-read when it changed)."""
        self.calls += 1
        if self.calls % REREAD_EVERY == 0 and (mtime := self._mtime()) != self.mtime:
            self.mtime = mtime
            self.ignore = read_ignore(self.ignore_file) | self.held
        return self.ignore

    def hold(self, data: bytes, hit: Hit) -> bool:
        """Hold ``data`` if ``hit`` is a known signature on a new path (True: do not crash)."""
        if self.prefix is None or not hit.path or hit.signature not in known_paths(self.ignore):
            return False
        entry = pathed(hit.signature, hit.path)
        atomic_write(f"{self.prefix}held-{hashlib.sha1(data).hexdigest()}", data)
        self.held.add(entry)
        self.ignore = self.ignore | {entry}
        return True
