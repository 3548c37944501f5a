"""mhp fuzz campaigns: triage while running, leftovers of an interrupted campaign, periodic merges."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from fuzz.campaign import DEFAULT_IGNORE, ROOT, SURFACE_WHOLE_MAX, Campaign, Summary, _recover, _triage, prepare_seeds, run, seed_dirs
from fuzz.check import Mode, check_events, check_input, decode, shadowing
from fuzz.package import package
from replay.replayer import replay_file


def test_untriaged_crash_of_an_interrupted_campaign_is_triaged_once(tmp_path: Path) -> None:
    artifacts, regressions = tmp_path / "artifacts", tmp_path / "regressions"
    artifacts.mkdir()
    regressions.mkdir()
    shutil.copy(ROOT / "corpus" / "regressions" / "AM-RATIO_state.mhpt", artifacts / "crash-left-behind")
    kw = {"runs": 1, "corpus": tmp_path / "corpus", "artifacts": artifacts, "regressions": regressions}
    kw |= {"stop_on_first": True, "echo": False, "minimize_seconds": 5, "seeds": [ROOT / "corpus" / "seeds"]}  # seeds quiet on the model
    summary = run("model", **kw)  # type: ignore[arg-type]
    assert summary.signatures["AM-RATIO:state"]["first_hit_s"] == -1.0
    assert "left untriaged by an interrupted campaign" in "\n".join(summary.lines())
    assert (regressions / "AM-RATIO_state.mhpt").exists() and (regressions / "AM-RATIO_state.py.txt").exists()
    assert "crash-left-behind" in (artifacts / "triaged.txt").read_text().split()
    (regressions / "AM-RATIO_state.json").unlink()  # even unknown again, a triaged artifact is not redone
    assert "AM-RATIO:state" not in run("model", **kw).signatures  # type: ignore[arg-type]


def test_a_campaign_runs_in_segments_and_merges_every_merge_every_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop around libFuzzer: a segment ends at the next merge point or early at a hit (here
    after 3 s), and the next one takes the rest of the interval; merges every 10 s and at the end."""
    asked: list[int | None] = []

    def segment(self: Campaign, seconds: int | None, runs: int | None, stop_on_first: bool) -> None:
        asked.append(seconds)
        self.t0 -= 3 if len(asked) == 2 else seconds or 0  # the second segment ends at a hit after 3 s

    monkeypatch.setattr(Campaign, "segment", segment)
    monkeypatch.setattr(Campaign, "merge", lambda self: merges.append(round(self.elapsed())))
    merges: list[int] = []
    run("model", seconds=25, merge_every=10, corpus=tmp_path / "c", artifacts=tmp_path / "a", regressions=tmp_path / "r", echo=False)
    assert asked == [10, 10, 7, 5] and merges == [10, 20, 25]


def test_a_corpus_left_between_the_merge_renames_is_restored(tmp_path: Path) -> None:
    work = tmp_path / "model"
    (tmp_path / "model.old").mkdir()
    (tmp_path / "model.old" / "input").write_bytes(b"x")
    _recover(work)
    assert (work / "input").read_bytes() == b"x"


def test_seeds_come_from_the_seed_and_real_traces_whole_and_trimmed(tmp_path: Path) -> None:
    assert seed_dirs("6.12") == [ROOT / "corpus" / "seeds", ROOT / "corpus" / "real" / "6.12"]
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(ROOT / "corpus" / "seeds" / "seed-vmem.mhpt", seeds)
    (seeds / "junk.mhpt").write_bytes(b"not a trace")
    whole = decode((seeds / "seed-vmem.mhpt").read_bytes())
    assert whole is not None
    boot = [ev for ev in whole if ev.KIND == "boot"]
    out = prepare_seeds([seeds], tmp_path / "prepared", 5)
    # the undecodable seed goes in whole (the format fuzzer wants it), not trimmed
    assert sorted(p.name for p in out.iterdir()) == ["seeds-junk.mhpt", "seeds-seed-vmem.first5.mhpt", "seeds-seed-vmem.mhpt"]
    assert decode((out / "seeds-seed-vmem.mhpt").read_bytes()) == whole
    assert decode((out / "seeds-seed-vmem.first5.mhpt").read_bytes()) == boot + whole[len(boot) : len(boot) + 5]
    assert sorted(p.name for p in prepare_seeds([seeds], tmp_path / "prepared", 0).iterdir()) == ["seeds-junk.mhpt", "seeds-seed-vmem.mhpt"]


def test_a_campaign_starts_from_the_prepared_seeds(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "corpus" / "regressions", tmp_path / "r")
    summary = run("model", runs=20, corpus=tmp_path / "c", artifacts=tmp_path / "a", regressions=tmp_path / "r", echo=False, seed_events=8)
    prepared = {p.name for p in (tmp_path / "a" / "seeds").iterdir()}
    assert "real-seed-vmem.mhpt" not in prepared and "6.1-seed-vmem.mhpt" in prepared and "6.1-seed-vmem.first8.mhpt" in prepared
    assert summary.corpus > 0  # libFuzzer read them into its corpus
    assert len(list((tmp_path / "c").iterdir())) == summary.corpus  # --corpus DIR is used as given


def test_fuzz_package_zips_the_campaign_seeds(tmp_path: Path) -> None:
    written = package(tmp_path)
    assert {p.name for p in written} >= {"model_fuzzer_seed_corpus.zip", "model_fuzzer.options", "trace_format_fuzzer.dict"}
    sizes = {i.filename: i.file_size for i in zipfile.ZipFile(tmp_path / "model_fuzzer_seed_corpus.zip").infolist()}
    fmt = set(zipfile.ZipFile(tmp_path / "trace_format_fuzzer_seed_corpus.zip").namelist())
    assert {"seeds-seed-vmem.mhpt", "seeds-seed-vmem.first32.mhpt", "6.1-memmap-on-memory.mhpt", "regressions-AM-RATIO_state.mhpt"} <= set(sizes)
    # the format fuzzer takes the seeds cut and, when small, whole
    assert fmt == {n for n, size in sizes.items() if ".first" in n or size <= SURFACE_WHOLE_MAX or n.replace(".mhpt", ".first32.mhpt") not in sizes}
    assert not list(tmp_path.glob("*.part"))


def test_a_regression_lists_the_signatures_its_trace_hits_first() -> None:
    """On a one-node machine the system-wide ratio check fires before the per-node one."""
    path = ROOT / "corpus" / "regressions" / "AM-RATIO-NODE_movable-decision.mhpt"
    events = decode(path.read_bytes())
    assert events is not None
    assert shadowing(events, Mode(), "AM-RATIO-NODE:movable-decision") == ["AM-RATIO:movable-decision"]
    assert shadowing(events, Mode(), "AM-RATIO:movable-decision") == []


def test_a_saved_regression_replays_on_its_profile_and_quotes_the_minimised_trace(tmp_path: Path) -> None:
    """A 6.12 hit: ``mhp replay`` of the saved trace picks 6.12 from its header, and the note
    quotes the minimised trace's numbers, not the 823-event input's."""
    art = tmp_path / "crash-ratio"
    shutil.copy(ROOT / "corpus" / "real" / "6.12" / "ratio-runtime.mhpt", art)
    mode = Mode("6.12")
    found = check_events(decode(art.read_bytes()) or [], mode)
    summary = Summary("model", mode.describe())
    _triage(art, "model", mode, summary, tmp_path / "r", set(DEFAULT_IGNORE), 0.0, 30)
    saved = tmp_path / "r" / "AM-RATIO_state.mhpt"
    result = replay_file(str(saved))
    assert result.profile == "6.12" and "AM-RATIO:state" in result.finding_signatures
    hit = check_input(saved.read_bytes(), mode)
    note = json.loads(saved.with_suffix(".json").read_text())["note"]
    assert found is not None and hit is not None and hit.message != found.message
    assert hit.message in note and summary.signatures["AM-RATIO:state"]["message"] == hit.message


def test_totals_add_up_every_segment_across_campaigns(tmp_path: Path) -> None:
    """Two campaigns of one target: the log holds a segment each and the totals are their sums."""
    from fuzz.campaign import campaign_totals

    first = run("format", runs=30, corpus=tmp_path / "c", artifacts=tmp_path / "a", regressions=tmp_path / "r", echo=False)
    second = run("format", runs=40, corpus=tmp_path / "c", artifacts=tmp_path / "a", regressions=tmp_path / "r", echo=False)
    log = [json.loads(line) for line in (tmp_path / "a" / "campaigns.jsonl").read_text().splitlines()]
    assert [e["execs"] for e in log] == [first.execs, second.execs] and first.execs >= 30 and second.execs >= 40
    total = campaign_totals(tmp_path / "a")["format"]
    assert (total.execs, total.segments, total.open_crashes) == (first.execs + second.execs, 2, 0)
    (tmp_path / "a" / "campaigns.jsonl").write_text('{"target": "format"}\n')
    with pytest.raises(ValueError, match=r"campaigns.jsonl:1: not a campaign record"):
        campaign_totals(tmp_path / "a")


def test_a_terminated_campaign_logs_its_last_segment(tmp_path: Path) -> None:
    """SIGTERM to mhp fuzz: it exits 143 and its unfinished segment's executions are in the log."""
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / "a" / "campaigns.jsonl"
    cmd = [sys.executable, "-m", "replay.cli", "fuzz", "--target", "format", "--time", "300"]
    cmd += ["--corpus", str(tmp_path / "c"), "--artifacts", str(tmp_path / "a")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith("format-") or p.name == "format.dict" for p in (tmp_path / "a").glob("*")) and time.monotonic() < deadline:
            time.sleep(0.2)  # the harness is starting
        time.sleep(8)  # past libFuzzer's first status lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["target"] == "format" and entry["execs"] > 0 and entry["seconds"] < 300


def test_surface_targets_take_only_small_whole_seeds(tmp_path: Path) -> None:
    """A surface target gets every seed cut to its first events, whole only if small."""
    from fuzz.campaign import prepare_target_seeds

    real = ROOT / "corpus" / "real" / "6.1"
    big = sorted(p.name for p in real.glob("*.mhpt") if p.stat().st_size > SURFACE_WHOLE_MAX)
    names = {p.name for p in prepare_target_seeds("format", "6.1", tmp_path / "s", 8, [real]).iterdir()}
    assert big and not {f"6.1-{n}" for n in big} & names and {f"6.1-{n[:-5]}.first8.mhpt" for n in big} <= names
    model = {p.name for p in prepare_target_seeds("model", "6.1", tmp_path / "m", 8, [real]).iterdir()}
    assert {f"6.1-{n}" for n in big} <= model
    texts = list(prepare_target_seeds("text", "6.1", tmp_path / "t", 8, [real]).iterdir())
    assert texts and all(p.suffix == ".txt" for p in texts)
