"""The compiled and the pure build of the model give identical outputs, and each says which it is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from replay import build

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "build_outputs.py"


def _can_compile() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None and (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()


def test_the_build_in_use_is_the_one_named() -> None:
    assert build.in_use() == build.BUILD
    assert build.describe().startswith("model: compiled (mypyc," if build.BUILD == "compiled" else "model: pure Python (")
    version = subprocess.run([sys.executable, "-m", "replay.cli", "--version"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert version.count("\n") == 1 and build.describe() in version
    pure = subprocess.run(
        [sys.executable, "-c", "from replay import build; print(build.in_use(), build.describe())"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MHP_PURE": "1"},
        check=True,
    ).stdout
    assert pure.startswith("pure model: pure Python (")


def test_ci_tests_the_compiled_build() -> None:
    """Where CI runs (a C compiler there), the suite runs against the compiled model."""
    if os.environ.get("CI") and _can_compile() and os.environ.get("MHP_PURE") != "1":
        assert build.BUILD == "compiled", build.describe()


def test_both_builds_give_identical_outputs_on_the_corpus_and_1m_generated_events(tmp_path: Path) -> None:
    """Every replay result, fuzz-check hit and a 1M-event generated trace with its replay, in both builds."""
    runs = {}
    for name, pure in (("pure", True), ("installed", False)):
        env = {k: v for k, v in os.environ.items() if k != "MHP_PURE"}
        if pure:
            env["MHP_PURE"] = "1"
        out = tmp_path / f"{name}.json"
        runs[name] = (out, subprocess.Popen([sys.executable, str(SCRIPT), str(out)], env=env, cwd=ROOT))
    docs = {}
    for name, (out, proc) in runs.items():
        assert proc.wait() == 0, name
        docs[name] = json.loads(out.read_text())
    pure, installed = docs["pure"], docs["installed"]
    assert pure.pop("build") == "pure" and installed.pop("build") == build.BUILD
    assert len(pure["replay"]) >= 100 and pure["generated"]["replay"]["events"] >= 1_000_000
    assert pure["generated"]["replay"]["matched"] and pure["generated"]["replay"]["finding_count"]
    for path in pure["replay"]:
        assert installed["replay"][path] == pure["replay"][path], path
    assert installed == pure
