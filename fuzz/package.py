#!/usr/bin/env python3
"""Seed corpus zips, dictionaries and options for each fuzz target (OSS-Fuzz file names)."""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This checkout's packages and corpus, also when an installed copy (ClusterFuzzLite's
# `pip3 install .`, which carries no corpus) would come first on the path.
sys.path.insert(0, str(ROOT))

from fuzz.campaign import SEED_EVENTS, atomic_write, prepare_seeds, seed_dirs  # noqa: E402
from traces.header import CHUNK_MAGIC, INDEX_MAGIC, MAGIC, TRAILER_MAGIC  # noqa: E402

TARGETS = ("model_fuzzer", "trace_format_fuzzer")
OPTIONS = "[libfuzzer]\nmax_len = 65536\ntimeout = 25\n"


def dictionary() -> str:
    """libFuzzer dictionary: the format's magic numbers and framing bytes."""
    words = [MAGIC, CHUNK_MAGIC, INDEX_MAGIC, TRAILER_MAGIC, b"\x04\x03\x02\x01", b"\x01\x00\x00\x00"]
    hexed = ["".join(f"\\x{b:02x}" for b in w) for w in words]
    return "".join(f'"{h}"\n' for h in hexed)


def package(out: Path) -> list[Path]:
    """Write <target>_seed_corpus.zip, <target>.dict and <target>.options into ``out``; the seeds
    are those ``mhp fuzz`` starts from (fuzz.campaign.prepare_seeds) plus the regressions."""
    out.mkdir(parents=True, exist_ok=True)
    dirs = [*seed_dirs("6.1"), ROOT / "corpus" / "regressions"]
    written = []
    for target in TARGETS:
        z = out / f"{target}_seed_corpus.zip"
        tmp = z.with_suffix(".zip.part")
        with tempfile.TemporaryDirectory() as seeds, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as f:
            for s in sorted(prepare_seeds(dirs, Path(seeds), SEED_EVENTS if target == "model_fuzzer" else 0).iterdir()):
                f.write(s, s.name)
        tmp.replace(z)
        atomic_write(out / f"{target}.dict", dictionary())
        atomic_write(out / f"{target}.options", OPTIONS)
        written += [z, out / f"{target}.dict", out / f"{target}.options"]
    return written


if __name__ == "__main__":
    for p in package(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build" / "fuzz")):
        print(p)
