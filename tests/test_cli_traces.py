"""mhp dump/compile/info/verify/repair/cat: exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from replay.cli import main
from replay.replayer import replay_file
from tests.test_observed import SCENARIOS
from traces.reader import read_trace
from traces.writer import TraceWriter


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "vmem.mhpt"
    assert run(["simulate", str(SCENARIOS / "seed-vmem.toml"), "-o", str(path)], capsys)[0] == 0
    return path


def test_info_verify_dump_compile(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["info", str(trace), "--json"], capsys)
    facts = json.loads(out)
    assert rc == 0 and facts["source"].startswith("simulation") and facts["events"]["add_memory"] == 192
    assert facts["events"]["state_digest"] == 5 and facts["problems"] == []
    rc, out, _ = run(["verify", str(trace)], capsys)
    assert rc == 0 and out.rstrip().endswith("clean")
    rc, text, _ = run(["dump", str(trace)], capsys)
    assert rc == 0 and text.startswith("%mhpt 1.1\n")
    src = tmp_path / "t.txt"
    src.write_text(text)
    assert run(["compile", str(src), "-o", str(tmp_path / "c.mhpt")], capsys)[0] == 0
    assert (tmp_path / "c.mhpt").read_bytes() == trace.read_bytes()


def test_damage_exit_codes(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(trace.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.mhpt"
    bad.write_bytes(data)
    rc, out, _ = run(["verify", str(bad)], capsys)
    assert rc == 1 and "crc" in out and out.rstrip().endswith("DAMAGED")
    rc, out, _ = run(["repair", str(bad), "-o", str(tmp_path / "fixed.mhpt")], capsys)
    assert rc == 0 and "kept" in out
    assert run(["verify", str(tmp_path / "fixed.mhpt")], capsys)[0] == 0
    rc, _, err = run(["dump", str(bad)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "CRC mismatch" in err and str(bad) in err


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"hello world, not a trace at all", "not an mhpt trace"),
        (b"", "shorter than"),
    ],
)
def test_not_a_trace_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expect: str) -> None:
    f = tmp_path / "x.mhpt"
    f.write_bytes(content)
    for cmd in ("dump", "info", "verify"):
        rc, _, err = run([cmd, str(f)], capsys)
        assert rc == 2 and expect in err and err.count("\n") == 1, (cmd, err)


def test_compile_errors_and_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "t.txt"
    src.write_text('%mhpt 1.0\nmark text="ok"\nmark txt="no"\n')
    rc, _, err = run(["compile", str(src), "-o", str(tmp_path / "o.mhpt")], capsys)
    assert rc == 2 and f"{src}: line 3:6, field txt: " in err and not (tmp_path / "o.mhpt").exists() and not (tmp_path / "o.mhpt.part").exists()
    rc, _, err = run(["verify", str(tmp_path / "nope.mhpt")], capsys)
    assert rc == 2 and "cannot open" in err
    src.write_text('%mhpt 1.0\nmark text="ok"\n')
    rc, _, err = run(["compile", str(src), "-o", str(tmp_path / "nowhere" / "o.mhpt")], capsys)
    assert rc == 2 and f"{tmp_path / 'nowhere'}: no such directory for the output file" in err


def test_cat_joins_the_parts_of_one_recording(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header, records = read_trace(trace.read_bytes())
    parts = [tmp_path / "a.mhpt", tmp_path / "b.mhpt"]
    for part, recs in zip(parts, (records[:300], records[300:]), strict=True):  # a recording split after its snapshot
        with TraceWriter(part, header) as w:
            for rec in recs:
                w.write_record(rec)
    out = tmp_path / "joined.mhpt"
    assert run(["cat", *map(str, parts), "-o", str(out)], capsys)[0] == 0
    assert read_trace(out.read_bytes())[1] == records
    assert replay_file(str(out)).divergence_count == 0
    rc, _, err = run(["cat", str(trace), str(trace), "-o", str(tmp_path / "two.mhpt")], capsys)
    assert rc == 2 and "record 0: starts with a boot snapshot" in err and not (tmp_path / "two.mhpt").exists()


def test_repair_of_a_damaged_first_chunk_reports_the_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = tmp_path / "g.mhpt"
    assert run(["gen", "--seed", "1", "--events", "5000", "-o", str(gen)], capsys)[0] == 0
    data = bytearray(gen.read_bytes())
    data[2000] ^= 0xFF  # inside the first chunk (seq 0..4095)
    bad, fixed = tmp_path / "bad.mhpt", tmp_path / "fixed.mhpt"
    bad.write_bytes(data)
    rc, out, _ = run(["verify", str(bad)], capsys)
    assert rc == 1 and "4096 records missing from seq 0" in out
    assert run(["repair", str(bad), "-o", str(fixed)], capsys)[0] == 0
    assert run(["verify", str(fixed)], capsys)[0] == 0
    facts = json.loads(run(["info", str(fixed), "--json"], capsys)[1])
    assert (facts["losses"], facts["records"], facts["events"]["loss"]) == (4096, 905, 1) and facts["time_span_s"] > 0


@pytest.mark.parametrize(("command", "expect"), [("replay", "PASSED: 225 events"), ("dump", "224 0.000224000 state_digest"), ("verify", "clean")])
def test_a_trace_reads_from_standard_input(command: str, expect: str) -> None:
    """``-`` is standard input: ``mhp record -o - | mhp replay -`` (dump reads a pipe into memory)."""
    seed = Path(__file__).resolve().parent.parent / "corpus" / "seeds" / "seed-dimm.mhpt"
    proc = subprocess.run([sys.executable, "-m", "replay.cli", command, "-"], input=seed.read_bytes(), capture_output=True, timeout=120)  # a pipe
    assert proc.returncode == 0 and expect in proc.stdout.decode(), proc.stderr.decode()
