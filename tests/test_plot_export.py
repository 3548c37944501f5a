"""mhp plot and mhp export: real pictures and Perfetto-loadable JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from replay.cli import main
from replay.plot import ABSENT, OFFLINE, code_at, sample
from traces.atomic import atomic_path

SEEDS = Path(__file__).resolve().parent.parent / "corpus" / "seeds"


def test_plot_writes_a_png_and_samples_the_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "vmem.png"
    assert main(["plot", str(SEEDS / "seed-vmem.mhpt"), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert [p.name for p in tmp_path.iterdir()] == ["vmem.png"]
    s = sample(str(SEEDS / "seed-vmem.mhpt"))
    last = s.rows[-1]
    assert (s.first_block, s.last_block) == (0, 175)
    assert [code_at(last, b) for b in (48, 143, 144, 145, 148)] == [3, 3, 2, 3, 2]
    assert code_at(last, 20) == ABSENT and OFFLINE not in {code for _, _, code in last}
    assert max(s.ratio) <= 301 and s.configured[-1] == 301


def test_export_chrome_trace_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    assert main(["export", "--format", "chrome", str(SEEDS / "seed-dimm.mhpt"), "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    counters = [e for e in events if e["ph"] == "C" and e["name"] == "node0 Movable present pages"]
    assert counters[-1]["args"]["pages"] == 3 * 1048576
    assert [c["ts"] for c in counters] == sorted(c["ts"] for c in counters)
    adds = [e for e in events if e["ph"] == "i" and e["name"] == "add_memory"]
    assert len(adds) == 5 and "add_memory start=0x180000000" in adds[0]["args"]["record"]
    assert sum(1 for e in events if e["name"] == "mark") == 5


def test_outputs_get_the_umask_mode_and_a_missing_directory_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trace.json"
    old = os.umask(0o022)
    try:
        assert main(["export", "--format", "chrome", str(SEEDS / "seed-dimm.mhpt"), "-o", str(out)]) == 0
        assert out.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
    missing = tmp_path / "nowhere" / "x.png"
    assert main(["plot", str(SEEDS / "seed-dimm.mhpt"), "-o", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and ".part" not in err and "tmp" not in err.replace(str(tmp_path), "")


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.bin") as tmp:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
