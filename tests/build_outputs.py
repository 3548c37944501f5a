#!/usr/bin/env python3
"""What one build of the model makes of the corpus and of a generated workload, as one JSON document.

tests/test_builds.py runs this script once per build (``MHP_PURE=1`` for the pure one) and compares the two
documents: every replay result (events, matches, divergences, findings and their signatures; not the timing
figures), every regression's fuzz-check hit, and a generated trace byte for byte with its replay result.
Usage: ``build_outputs.py OUT.json [--events N]`` (N: the generated workload's events, default 1M).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fuzz.check import Mode, check_input  # noqa: E402 (after the path)
from replay import build  # noqa: E402
from replay.generate import generate_trace  # noqa: E402
from replay.replayer import replay_file  # noqa: E402
from traces.atomic import atomic_write  # noqa: E402

CORPUS = ("corpus/real", "corpus/seeds", "corpus/regressions")


def result(path: str) -> dict[str, Any]:
    """A trace's replay result without its timing figures."""
    out = replay_file(path).to_json()
    del out["stats"]
    out["path"] = os.path.relpath(out["path"], ROOT) if os.path.isabs(out["path"]) else out["path"]
    return out


def outputs(events: int) -> dict[str, Any]:
    traces = sorted(str(p.relative_to(ROOT)) for d in CORPUS for p in (ROOT / d).rglob("*.mhpt"))
    doc: dict[str, Any] = {"build": build.in_use(), "replay": {}, "fuzz": {}}
    os.chdir(ROOT)
    for path in traces:
        doc["replay"][path] = result(path)
    for meta_path in sorted((ROOT / "corpus" / "regressions").glob("*.json")):
        meta = json.loads(meta_path.read_text())
        mode = Mode(meta["profile"], meta["variant"], meta["diff"])
        hit = check_input(meta_path.with_suffix(".mhpt").read_bytes(), mode, frozenset(meta.get("ignore", [])))
        doc["fuzz"][meta_path.stem] = None if hit is None else [hit.signature, hit.index, hit.message]
    with tempfile.TemporaryDirectory() as tmp:
        gen = os.path.join(tmp, "generated.mhpt")
        generate_trace(gen, 1, events)
        doc["generated"] = {"events": events, "sha256": hashlib.sha256(Path(gen).read_bytes()).hexdigest(), "replay": result(gen)}
        doc["generated"]["replay"]["path"] = "generated.mhpt"
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    data = json.dumps(outputs(args.events), indent=1, sort_keys=True).encode()
    atomic_write(args.out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
