"""mhp fuzz campaigns: triage while running, leftovers of an interrupted campaign, periodic merges."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fuzz.campaign import ROOT, Campaign, _recover, run, trim_seeds
from fuzz.check import decode


def test_untriaged_crash_of_an_interrupted_campaign_is_triaged_once(tmp_path: Path) -> None:
    artifacts, regressions = tmp_path / "artifacts", tmp_path / "regressions"
    artifacts.mkdir()
    regressions.mkdir()
    shutil.copy(ROOT / "corpus" / "regressions" / "AM-RATIO_state.mhpt", artifacts / "crash-left-behind")
    kw = {"runs": 1, "corpus": tmp_path / "corpus", "artifacts": artifacts, "regressions": regressions}
    kw |= {"stop_on_first": True, "echo": False, "minimize_seconds": 5}
    summary = run("model", **kw)  # type: ignore[arg-type]
    assert summary.signatures["AM-RATIO:state"]["first_hit_s"] == -1.0
    assert "left untriaged by an interrupted campaign" in "\n".join(summary.lines())
    assert (regressions / "AM-RATIO_state.mhpt").exists() and (regressions / "AM-RATIO_state.py.txt").exists()
    assert "crash-left-behind" in (artifacts / "triaged.txt").read_text().split()
    (regressions / "AM-RATIO_state.json").unlink()  # even unknown again, a triaged artifact is not redone
    assert "AM-RATIO:state" not in run("model", **kw).signatures  # type: ignore[arg-type]


def test_a_campaign_runs_in_segments_of_merge_every_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop around libFuzzer: segments of at most merge_every seconds until the time is spent."""
    asked: list[int | None] = []

    def segment(self: Campaign, seconds: int | None, runs: int | None, stop_on_first: bool) -> None:
        asked.append(seconds)
        self.t0 -= seconds or 0  # the segment took its time
        self.summary.merges += 1

    monkeypatch.setattr(Campaign, "segment", segment)
    summary = run("model", seconds=25, merge_every=10, corpus=tmp_path / "c", artifacts=tmp_path / "a", regressions=tmp_path / "r", echo=False)
    assert asked == [10, 10, 5] and summary.merges == 3


def test_a_corpus_left_between_the_merge_renames_is_restored(tmp_path: Path) -> None:
    work = tmp_path / "model"
    (tmp_path / "model.old").mkdir()
    (tmp_path / "model.old" / "input").write_bytes(b"x")
    _recover(work)
    assert (work / "input").read_bytes() == b"x"


def test_model_seeds_are_trimmed_to_their_boot_snapshot_and_n_events(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(ROOT / "corpus" / "seeds" / "seed-vmem.mhpt", seeds)
    (seeds / "junk.mhpt").write_bytes(b"not a trace")
    whole = decode((seeds / "seed-vmem.mhpt").read_bytes())
    assert whole is not None
    boot = [ev for ev in whole if ev.KIND == "boot"]
    out = trim_seeds(seeds, tmp_path / "trimmed", 5)
    assert sorted(p.name for p in out.iterdir()) == ["seed-vmem.mhpt"]  # the undecodable seed is left out
    trimmed = decode((out / "seed-vmem.mhpt").read_bytes())
    assert trimmed == boot + whole[len(boot) : len(boot) + 5]
    assert trim_seeds(seeds, tmp_path / "unused", 0) == seeds  # 0 keeps the seeds whole
