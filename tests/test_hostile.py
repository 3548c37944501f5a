"""Hostile input beyond the reader (issue 17): every command bounded, every error one line naming
file and position (``mhp SUBCOMMAND: FILE: POSITION: message``), nothing lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from replay.cli import main
from replay.replayer import replay_file
from traces.codec import Unknown
from traces.reader import TraceReader
from traces.writer import TraceWriter

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "corpus" / "seeds"
REAL = ROOT / "corpus" / "real" / "6.1"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str, command: str, path: Path | str, position: str = "") -> None:
    """The convention: one line, ``mhp COMMAND: FILE: POSITION: message``, no traceback."""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"mhp {command}: {path}: {position}"), err


def rewrite(src: Path, dst: Path, edit: Callable[[list[Any]], list[Any]]) -> Path:
    """``src``'s events edited by ``edit``, written to ``dst`` with ``src``'s header."""
    with TraceReader(src) as r:
        header, events = r.header, list(r.events())
    with TraceWriter(dst, header) as w:
        for i, ev in enumerate(edit(events)):
            w.write(ev, ts=i)
    return dst


# --- defect 1: records of unknown type are skipped by every model-driven command -------------------------


def with_unknown(events: list[Any]) -> list[Any]:
    """An unknown record (FORMAT.md: readers skip it) after the boot snapshot and before the last event."""
    boot = next(i for i, ev in enumerate(events) if ev.KIND != "boot")
    return [*events[:boot], Unknown(200, b"\x01\x02"), *events[boot:-1], Unknown(201, b""), events[-1]]


@pytest.mark.parametrize("command", ["replay", "layout", "plot", "export", "minimize"])
def test_unknown_record_types_are_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    src = REAL / "ratio-runtime.mhpt"  # a finding to minimise
    path = rewrite(src, tmp_path / "u.mhpt", with_unknown)
    assert run(["verify", str(path)], capsys)[0] == 0
    out = tmp_path / "out"
    argv = {"replay": [], "layout": [], "plot": ["-o", f"{out}.png"], "export": ["-o", f"{out}.json"], "minimize": ["-o", f"{out}.mhpt"]}[command]
    rc, _, err = run([command, str(path), *argv], capsys)
    assert rc == (1 if command == "replay" else 0), err
    if command == "replay":
        plain, skipped = replay_file(str(src)), replay_file(str(path))
        assert (skipped.finding_signatures, skipped.divergence_count, skipped.matched) == (plain.finding_signatures, 0, plain.matched)


# --- defect 7 and issue 13 item 6: scenario files are strict and bounded ----------------------------------

MACHINE = """[machine]
block_size = "128M"
device_memory_base = "6G"
possible_nodes = [0]
cpu_nodes = [0]
[[machine.zone]]
zone = "Normal"
start_pfn = 1048576
spanned = 524288
present = 524288
[[machine.blocks]]
first = 32
count = 16
zone = "Normal"
[kernel]
cmdline = "memhp_default_state=offline"
[[step]]
dimm = "1G"
"""


def simulate_text(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, *extra: str) -> tuple[int, str, str, Path]:
    f = tmp_path / "s.toml"
    f.write_text(text)
    rc, out, err = run(["simulate", str(f), *extra], capsys)
    return rc, out, err, f


@pytest.mark.parametrize(
    ("old", "new", "position", "expect"),
    [
        ('block_size = "128M"', "block_size = 0", "line 2", "machine.block_size: 0 outside 128M..32T"),
        ('block_size = "128M"', 'block_size = "192M"', "line 2", "192M is not a power of two"),
        (
            '[[machine.zone]]\nzone = "Normal"\nstart_pfn = 1048576\nspanned = 524288\npresent = 524288\n',
            "zone = 5\n",
            "line 6",
            "machine.zone: expected [[machine.zone]] tables",
        ),
        ("[[machine.blocks]]", "[[machine.blockz]]", "line 11", "machine: unknown key 'blockz'"),
        ('zone = "Normal"\nstart', "zone = 5\nstart", "line 7", "machine.zone[0].zone: expected a string, got 5"),
        ("start_pfn = 1048576", "start_pfn = -1", "line 8", "machine.zone[0].start_pfn: -1 outside 0..17179869184"),
        ("present = 524288", "present = 524289", "line 10", "machine.zone[0].present: 524289 outside 0..524288"),
        ("count = 16", "count = 4294967295", "line 13", "machine.blocks[0].count: 4294967295 outside 1..524256 (the blocks a 46-bit"),
        ("count = 16", "count = -3", "line 13", "machine.blocks[0].count: -3 outside 1..524256"),
        ("first = 32", "first = -1", "line 12", "machine.blocks[0].first: -1 outside 0..524287"),
        ("possible_nodes = [0]", "possible_nodes = 1", "line 4", "node sets are lists of node ids, not bit masks"),
        ("cpu_nodes = [0]", "cpu_nodes = [1]", "line 5", "cpu_nodes must be a subset of possible_nodes"),
        ('device_memory_base = "6G"', 'device_memory_base = "5G"', "line 3", "5G overlaps boot memory, which ends at 6G"),
        ("present = 524288", "present = 524288\nbogus = 1", "line 11", "machine.zone[0]: unknown key 'bogus'"),
        ("count = 16", "count = 16\nnode = 3", "line 14", "machine.blocks[0].node: node 3 is not a node of this machine (nodes 0)"),
        ("first = 32", "first = 32\nsize = 1", "line 13", "machine.blocks[0]: unknown key 'size'"),
        ("cpu_nodes = [0]", "cpu_nodes = [0]\nram = 4", "line 6", "machine: unknown key 'ram'"),
        ('cmdline = "memhp_default_state=offline"', 'cmdline = ""\nversion = 2', "line 17", "kernel: unknown key 'version'"),
        ('dimm = "1G"', 'dimm = "1G"\nnode = 70', "line 19", "step[0].node: node 70 is not a node of this machine"),
        ('dimm = "1G"', 'dimm = "65T"', "line 18", "step[0].dimm: 65T outside 1..64T"),
        ('dimm = "1G"', 'dimm = "1G"\nid = "a b"', "line 19", "step[0].id: expected an id of letters"),
        ('dimm = "1G"', 'offline = "0-4294967295"', "line 18", "block 4294967295 is beyond block 524287"),
        ('dimm = "1G"', 'param = "auto_movable_ratio"\nvalue = "1\\n2"', "line 19", "step[0].value: expected one line of at most 255"),
        ('dimm = "1G"', f'mark = "{"x" * 300}"', "line 18", "step[0].mark: expected one line of at most 255"),
        ('dimm = "1G"', f'mark = "{"x" * 250}"', "line 17", "step[0]: too long to label in a trace"),
        ('dimm = "1G"', 'online = 48\nfails = "errorcode"', "line 19", "expected an errno name"),
    ],
)
def test_bad_scenario_values_are_errors_at_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, position: str, expect: str
) -> None:
    assert old in MACHINE
    rc, _, err, f = simulate_text(tmp_path, capsys, MACHINE.replace(old, new, 1), "-o", str(tmp_path / "t.mhpt"))
    assert rc == 2 and expect in err, err
    one_error_line(err, "simulate", f, position + ":")
    assert not any(p.suffix in (".mhpt", ".part") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    ("table", "key"),
    [("[[device]]", "colour"), ("[[step]]", "colour"), ("[kernel]", "colour"), ("[machine]", "colour")],
)
def test_an_unknown_key_in_any_table_is_an_error_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, key: str) -> None:
    text = '[machine]\npreset = "qemu-q35-4G"\n[kernel]\ncmdline = ""\n[[device]]\nid = "vm0"\ntype = "virtio-mem"\nmax_size = "4G"\n'
    text += '[[step]]\nvmem = "vm0"\nsize = "1G"\n'
    at = text.index(table) + len(table) + 1
    line = text[:at].count("\n") + 1
    rc, _, err, f = simulate_text(tmp_path, capsys, text[:at] + f"{key} = 1\n" + text[at:])
    assert rc == 2 and key in err
    one_error_line(err, "simulate", f, f"line {line}:")


def test_a_range_goes_on_past_a_failing_block_like_a_shell_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """online = "47-55": block 47 is online already (EINVAL), 48-55 come online all the same, as
    ``for b in $(seq 47 55); do echo online > memory$b/state; done`` does on a real kernel."""
    rc, out, _, _ = simulate_text(tmp_path, capsys, MACHINE + '[[step]]\nonline = "47-55"\n[[step]]\nmark = "after the range"\n')
    assert rc == 0
    step2 = out[out.index("== step 2") : out.index("== step 3")]
    assert "(rc -22)" in step2 and "Memory block 48-55:     Normal (dimm0)" in step2
    assert "== step 3: mark=after the range\n" in out and out[out.index("== step 3") :].count("Memory block") == 2


def test_a_mark_step_labels_the_layout_and_does_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from traces.lab.run import step_record
    from traces.scenario import load_scenario

    rc, out, _, f = simulate_text(tmp_path, capsys, MACHINE + '[[step]]\nmark = "before onlining"\n', "--json", "-o", str(tmp_path / "m.mhpt"))
    assert rc == 0
    import json

    steps = json.loads(out)["steps"]
    assert steps[2]["label"] == "mark=before onlining" and steps[2]["runs"] == steps[1]["runs"] and steps[2]["rc"] == 0
    assert step_record(load_scenario(f).steps[1]) == {"mark": "before onlining"}
    with TraceReader(tmp_path / "m.mhpt") as r:
        assert "step 2: mark=before onlining" in [ev.text for ev in r.events() if type(ev).__name__ == "Mark"]
