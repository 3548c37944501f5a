"""The atheris harnesses run for a bounded number of inputs (the long runs are `mhp fuzz`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_harness(name: str, runs: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    corpus = tmp_path / "corpus"
    shutil.copytree(ROOT / "corpus" / "seeds", corpus)
    (tmp_path / "artifacts").mkdir()
    cmd = [sys.executable, str(ROOT / "fuzz" / name), f"-runs={runs}", "-seed=7", f"-artifact_prefix={tmp_path}/artifacts/", str(corpus)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_trace_format_fuzzer_finds_nothing(tmp_path: Path) -> None:
    proc = run_harness("trace_format_fuzzer.py", 1500, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 1500 runs" in proc.stderr
    assert not list((tmp_path / "artifacts").iterdir())


@pytest.mark.parametrize("target", ["model", "format"])
def test_sixty_second_smoke_campaign(tmp_path: Path, target: str) -> None:
    """CI's smoke fuzz: a minute of mhp fuzz per target; no model crash, no format-harness failure."""
    from fuzz.campaign import run

    regressions = tmp_path / "regressions"
    shutil.copytree(ROOT / "corpus" / "regressions", regressions)
    summary = run(target, seconds=60, corpus=tmp_path / "corpus", artifacts=tmp_path / "artifacts", regressions=regressions, echo=False, minimize_seconds=5)
    assert summary.execs > 0 and summary.corpus > 0, summary
    assert not [s for s in summary.signatures if s.startswith(("CRASH:", "FORMAT"))], summary.signatures


def test_model_harness_rewards_every_state_feature_with_its_own_leaf() -> None:
    code = "import model_fuzzer as h; print(all(h.feature(k) == k for k in range(h.STATE_FEATURES)), h.STATE_FEATURES)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT / "fuzz", env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "960"]


def test_fuzz_package_script_takes_seeds_from_its_checkout_beside_an_installed_copy(tmp_path: Path) -> None:
    """ClusterFuzzLite's build.sh installs the packages (no corpus), then runs fuzz/package.py."""
    site = tmp_path / "site"
    for pkg in ("fuzz", "replay", "traces"):
        shutil.copytree(ROOT / pkg, site / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "package.py"), str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "out" / "model_fuzzer_seed_corpus.zip") as z:
        names = z.namelist()
    assert "seeds-seed-vmem.mhpt" in names and "6.1-seed-vmem.mhpt" in names


def test_harness_is_executable() -> None:
    path = ROOT / "fuzz" / "trace_format_fuzzer.py"
    assert path.read_text().startswith("#!/usr/bin/env python3")
    assert path.stat().st_mode & 0o111
