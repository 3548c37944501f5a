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

from fuzz.campaign import HARNESSES, RSS_LIMIT_MB, SEED_EVENTS, TIMEOUTS, atomic_write, prepare_target_seeds, seed_dirs  # noqa: E402
from fuzz.surfaces import dictionary  # noqa: E402

TARGETS = {path.stem: target for target, path in HARNESSES.items()}  # OSS-Fuzz name -> mhp fuzz --target
MAX_LEN = {"scenario": 8192}  # bytes; traces and text forms: 65536


def options(target: str) -> str:
    """The .options file: libFuzzer's limits, as ``mhp fuzz`` runs the target."""
    return f"[libfuzzer]\nmax_len = {MAX_LEN.get(target, 65536)}\ntimeout = {TIMEOUTS[target]}\nrss_limit_mb = {RSS_LIMIT_MB}\n"


def package(out: Path) -> list[Path]:
    """Write <fuzzer>_seed_corpus.zip, <fuzzer>.dict and <fuzzer>.options into ``out``; the seeds
    are those ``mhp fuzz`` starts from (fuzz.campaign.prepare_target_seeds) plus the regressions."""
    out.mkdir(parents=True, exist_ok=True)
    dirs = [*seed_dirs("6.1"), ROOT / "corpus" / "regressions"]
    written = []
    for name, target in TARGETS.items():
        z = out / f"{name}_seed_corpus.zip"
        tmp = z.with_suffix(".zip.part")
        with tempfile.TemporaryDirectory() as seeds, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as f:
            for s in sorted(prepare_target_seeds(target, "6.1", Path(seeds) / "s", SEED_EVENTS, dirs).iterdir()):
                f.write(s, s.name)
        tmp.replace(z)
        words = dictionary(target) or dictionary("format")  # the model's mutator is structure-aware; its byte fallback likes the magics
        atomic_write(out / f"{name}.dict", words)
        atomic_write(out / f"{name}.options", options(target))
        written += [z, out / f"{name}.dict", out / f"{name}.options"]
    return written


if __name__ == "__main__":
    for p in package(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build" / "fuzz")):
        print(p)
