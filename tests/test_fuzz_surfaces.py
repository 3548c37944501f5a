"""The fuzz targets of every file-reading surface (fuzz/surfaces.py) and the campaign's crash safety."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fuzz.campaign import HARNESSES, TIMEOUTS, Campaign, Summary, run
from fuzz.check import Mode
from fuzz.surfaces import TARGETS, check_commands, check_repair, check_scenario, check_text, dictionary, fix_crcs, one_line_error
from replay.replayer import replay_file
from traces.errors import TraceFormatError

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "corpus" / "seeds"


def test_every_target_has_a_harness_an_oracle_and_an_mhp_fuzz_choice() -> None:
    from fuzz.package import TARGETS as PACKAGED
    from replay.cli import FUZZ_TARGETS

    assert set(HARNESSES) == set(FUZZ_TARGETS) == {"model", "steps", *TARGETS} == set(TIMEOUTS) == set(PACKAGED.values())  # steps: the model too
    assert all(path.exists() and path.read_text().startswith("#!/usr/bin/env python3") for path in HARNESSES.values())
    assert "\\x25\\x6d\\x68\\x70\\x74" in dictionary("text") and "\\x5b\\x6d\\x61\\x63\\x68" in dictionary("scenario")


def test_the_oracle_wants_one_line_naming_the_file_and_a_position() -> None:
    one_line_error(TraceFormatError("m", path="t", offset=3), "t")
    for bad in (TraceFormatError("m", path="t"), TraceFormatError("m", offset=3), TraceFormatError("a\nb", path="t", line=1)):
        with pytest.raises(AssertionError):
            one_line_error(bad, "t")
    with pytest.raises(KeyError):
        one_line_error(KeyError("not an input error"), "t")


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_seeds_pass_their_targets(tmp_path: Path, target: str) -> None:
    from fuzz.campaign import prepare_target_seeds

    seeds = sorted(prepare_target_seeds(target, "6.1", tmp_path / "s", 0, [SEEDS]).iterdir())
    assert seeds
    for seed in seeds[:3]:
        TARGETS[target](seed.read_bytes())


def test_the_targets_take_the_hostile_inputs_of_issue_17() -> None:
    """The inputs that broke subcommands before: each now ends in success or a positioned error."""
    data = (SEEDS / "seed-dimm.mhpt").read_bytes()
    for at in range(200, 400, 7):  # CRC-consistent flips in record headers (sequence numbers among them)
        bad = bytearray(data)
        bad[at] ^= 0x40
        check_repair(fix_crcs(bytes(bad)))
        check_commands(bytes([data[0] | 1]) + fix_crcs(bytes(bad))[1:])
    for text in (
        "%mhpt 1.0\n%section 1 data=ffff\n",
        '%mhpt 1.0\n18446744073709551616 0.000000000 mark text="x"\n',
        "%mhpt 1.0\nraw code=200 data=" + "ab" * 70000,
    ):
        check_text(text.encode())
    check_text(b"%mhpt 1.0\n\xff\xfe")
    for scenario in ("[machine]\nblock_size = 0\n", '[machine]\npreset = "qemu-q35-4G"\n[[step]]\nonline = "0-4294967295"\n', 'name = "x', ""):
        check_scenario(scenario.encode())


def test_commands_skip_inputs_describing_more_than_4_tib(monkeypatch: pytest.MonkeyPatch) -> None:
    """An add of 32 TiB in one record (262,144 blocks, seconds per command) is counted from the
    records and skipped; the seed's own memory is counted and run."""
    import fuzz.surfaces as surfaces
    from fuzz.check import decode
    from fuzz.mutator import encode
    from traces.events import AddFlags, AddMemory

    boot = [e for e in decode((SEEDS / "seed-dimm.mhpt").read_bytes()) or [] if e.KIND == "boot"]
    small, huge = encode([*boot, AddMemory(8 << 30, 128 << 20, 0, AddFlags(0))]), encode([*boot, AddMemory(8 << 30, 32 << 40, 0, AddFlags(0))])
    assert surfaces.sections_described(huge) - surfaces.sections_described(small) == (32 << 40) // (128 << 20) - 1
    assert surfaces.sections_described(small) < surfaces.COMMANDS_SECTIONS_MAX < surfaces.sections_described(huge)
    ran: list[str] = []
    monkeypatch.setattr(surfaces, "replay_file", lambda path: ran.append(path) or replay_file(path))
    check_commands(small)
    check_commands(huge)
    assert len(ran) == 1


def test_a_check_that_breaks_the_rule_raises() -> None:
    """The oracle is real: a reader error without a position is caught (a file with only a header
    and a clean trace pass)."""
    with pytest.raises(AssertionError, match="replay error without file and position"):
        from fuzz.surfaces import _positioned

        _positioned("the trace is bad", "/x/in.mhpt")
    check_commands((SEEDS / "seed-dimm.mhpt").read_bytes()[:200])


# --- defect 9: a killed campaign leaves no libFuzzer running and loses no report -----------------------------


def harness_processes(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (the campaign's own corpus directory)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and b"_fuzzer.py" in cmdline:
                pids.append(int(entry))
    return pids


@pytest.mark.parametrize("jobs", [1, 2])
def test_kill_9_of_mhp_fuzz_takes_its_libfuzzer_children_along(tmp_path: Path, jobs: int) -> None:
    corpus = tmp_path / "corpus-of-this-test"
    mhp = [sys.executable, "-c", "import sys; from replay.cli import main; sys.exit(main())"]
    cmd = [*mhp, "fuzz", "--target", "format", "--time", "300", "--jobs", str(jobs), "--corpus", str(corpus), "--artifacts", str(tmp_path / "a")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(harness_processes(str(corpus))) < jobs + (jobs > 1) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert harness_processes(str(corpus)), "libFuzzer never started"
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60
    while harness_processes(str(corpus)) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = harness_processes(str(corpus))
    for pid in left:  # do not leave them running if the test fails
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_a_crash_a_killed_campaign_triaged_is_reported_while_it_reproduces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A format campaign killed after triaging a crash: the next campaign reports it again, and
    only one run after the bug is fixed forgets it."""
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "format-crash-0001").write_bytes(b"boom")
    broken = {"yes": True}

    def check(data: bytes) -> None:
        if broken["yes"] and data == b"boom":
            raise IndexError("a bug in the reader")

    monkeypatch.setitem(TARGETS, "format", check)

    def campaign() -> Summary:
        c = Campaign("format", Mode(), tmp_path / "c", tmp_path / "s", artifacts, tmp_path / "r", 1, 5, False)
        c.triage_new(earlier=True)
        c.triage_new()  # checked once per campaign
        return c.summary

    first = campaign()  # ... and killed here, before printing anything
    assert list(first.signatures) == ["FORMAT:IndexError:check"] and "a bug in the reader" in first.lines()[-1]
    assert list(campaign().signatures) == ["FORMAT:IndexError:check"]
    broken["yes"] = False
    assert campaign().signatures == {} and "format-crash-0001" in (artifacts / "triaged.txt").read_text().split()
    broken["yes"] = True
    assert campaign().signatures == {}  # fixed once, triaged for good


def test_every_campaign_runs_with_memory_and_time_limits(tmp_path: Path) -> None:
    c = Campaign("scenario", Mode(), tmp_path / "c", tmp_path / "s", tmp_path / "a", tmp_path / "r", 1, 5, False)
    flags = c.options()
    assert "-rss_limit_mb=2048" in flags and "-timeout=60" in flags and f"-artifact_prefix={tmp_path / 'a'}/scenario-" in flags
    assert any(f.startswith("-dict=") and Path(f[6:]).read_text() == dictionary("scenario") for f in flags)


@pytest.mark.parametrize("target", ["repair", "text", "scenario", "commands"])
def test_a_short_campaign_of_each_surface_finds_nothing(tmp_path: Path, target: str) -> None:
    summary = run(target, runs=60, corpus=tmp_path / "c", artifacts=tmp_path / "a", regressions=tmp_path / "r", echo=False)
    assert summary.execs >= 60 and summary.corpus > 0 and summary.signatures == {}, summary.lines()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(f"{target}-")]
    shutil.rmtree(tmp_path / "c")


def test_timeout_and_oom_artifacts_are_run_again_and_forgotten_once_they_pass(tmp_path: Path) -> None:
    """A timeout runs here under the target's -timeout, an out-of-memory artifact in the harness
    under -rss_limit_mb: both pass now (seed traces), so both are ledgered."""
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for name in ("format-timeout-1", "format-oom-1"):
        shutil.copy(SEEDS / "seed-dimm.mhpt", artifacts / name)
    c = Campaign("format", Mode(), tmp_path / "c", tmp_path / "s", artifacts, tmp_path / "r", 1, 5, False)
    c.triage_new(earlier=True)
    assert c.summary.signatures == {} and set((artifacts / "triaged.txt").read_text().split()) == {"format-timeout-1", "format-oom-1"}
