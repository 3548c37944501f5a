"""Hostile input beyond the reader (issue 17): every command bounded, every error one line naming
file and position (``mhp SUBCOMMAND: FILE: POSITION: message``), nothing lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from replay.cli import main
from replay.replayer import replay_file
from traces.codec import BODIES, RECORD_HEADER, Record, Unknown, encode_record
from traces.events import AddFlags, AddMemory, BootBlocks, OnlineBlock, OnlineType
from traces.header import TraceHeader, build_chunk
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
    assert "(rc -22 EINVAL)" in step2 and "Memory block 48-55:     Normal (dimm0)" in step2
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


# --- defect 2: counts and sizes from input are bounded before anything is allocated or looped over ----------


def seed_records(name: str = "seed-dimm") -> tuple[TraceHeader, list[Record]]:
    with TraceReader(SEEDS / f"{name}.mhpt") as r:
        return r.header, list(r)


def raw_trace(path: Path, header: TraceHeader, records: list[bytes]) -> Path:
    """A trace of hand-made record bytes (the writer refuses what no machine can have)."""
    path.write_bytes(header.build() + build_chunk(0, len(records), b"".join(records)))
    return path


def huge_boot_blocks(tmp_path: Path) -> tuple[Path, int]:
    """seed-dimm's snapshot with one boot_blocks record of 2**32 - 1 blocks (an 8 KB trace); its byte offset."""
    header, records = seed_records()
    out, at = [], 0
    for rec in records:
        if type(rec.event) is BootBlocks and rec.event.first == 32:
            body = BODIES[BootBlocks.CODE].build({**rec.event._asdict(), "count": 2**32 - 1})  # type: ignore[attr-defined]
            at = len(header.build()) + 24 + sum(map(len, out)) + RECORD_HEADER.size
            out.append(RECORD_HEADER.pack(BootBlocks.CODE, 0, RECORD_HEADER.size + len(body), rec.seq, rec.ts) + body)  # type: ignore[attr-defined]
        else:
            out.append(encode_record(rec))
    return raw_trace(tmp_path / "huge.mhpt", header, out), at


@pytest.mark.parametrize("command", ["replay", "layout", "plot", "export", "minimize", "dump", "info"])
def test_a_boot_blocks_count_beyond_the_address_space_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    path, at = huge_boot_blocks(tmp_path)
    extra = {"plot": ["-o", str(tmp_path / "p.png")], "export": ["-o", str(tmp_path / "e.json")], "minimize": ["-o", str(tmp_path / "m.mhpt")]}
    rc, out, err = run([command, str(path), *extra.get(command, [])], capsys)
    if command == "replay":
        assert rc == 2 and "ERROR" in out
    elif command == "info":
        assert rc == 1 and f"byte {at}: records: " in out and "BootBlocks.count" in out
        return
    assert rc == 2
    one_error_line(err, command, path, f"byte {at}, record 7, field BootBlocks.count: BootBlocks: blocks 32+4294967295 end beyond block 524287")


def test_the_writer_and_the_text_form_refuse_what_the_reader_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header, records = seed_records()
    with pytest.raises(ValueError, match=r"BootBlocks.count: blocks 0\+524289 end beyond"), TraceWriter(tmp_path / "w.mhpt", header) as w:
        w.write(BootBlocks(0, 524289, 0, records[3].event.state, records[3].event.zone, True, -1, 0, 1))
    assert not list(tmp_path.iterdir())
    text = tmp_path / "t.txt"
    text.write_text("%mhpt 1.0\nboot_blocks first=524287 count=2 node=0 state=online zone=Normal early=true mgid=-1 vmemmap_pages=0 present_pages=1\n")
    rc, _, err = run(["compile", str(text), "-o", str(tmp_path / "t.mhpt")], capsys)
    assert rc == 2
    one_error_line(err, "compile", text, "line 2:26, field count: boot_blocks: blocks 524287+2 end beyond block 524287")


def test_an_impossible_snapshot_met_at_the_end_is_an_error_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the commands target: the snapshot's check runs at the first request, and when that is
    an offline held for its result until the trace ends, layout, plot and export named no file."""
    from traces.events import Attr, BootZone, OfflineBlock, Source, ZoneType

    def edit(events: list[Any]) -> list[Any]:
        boot = [e._replace(start_pfn=552866) if type(e) is BootZone and e.zone is ZoneType.NORMAL else e for e in events if e.KIND == "boot"]
        return [*boot, OfflineBlock(40, Attr.STATE, Source.USER)]

    from fuzz.surfaces import check_commands
    from replay.replayer import model_at
    from traces.errors import TraceFormatError

    path = rewrite(SEEDS / "seed-dimm.mhpt", tmp_path / "t.mhpt", edit)
    with pytest.raises(TraceFormatError) as e:
        model_at(str(path))
    assert e.value.path == str(path) and e.value.record == 10  # the first request
    check_commands(path.read_bytes())  # the commands target's oracle: every error names the file and a position
    for command in (["layout"], ["export", "-o", str(tmp_path / "t.json")], ["replay"]):
        rc, _, err = run([command[0], str(path), *command[1:]], capsys)
        assert rc == 2
        assert err.endswith("zone Normal (node 0) starts at 552866, inside zone DMA32 (node 0) (which ends at 1048576)\n"), err
        one_error_line(err, command[0], path, "record 10: ")


def test_a_zone_observation_of_no_zone_is_refused_at_its_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the commands target: a ZoneObserved of zone NONE (255) crashed replay's compare."""
    from fuzz.surfaces import fix_crcs
    from traces.events import ZoneObserved, ZoneType

    data = bytearray(rewrite(SEEDS / "seed-dimm.mhpt", tmp_path / "t.mhpt", lambda evs: [*evs, ZoneObserved(0, ZoneType.DMA, 1, 1, 1, 1)]).read_bytes())
    body = encode_record(Record(0, 0, 0, ZoneObserved(0, ZoneType.DMA, 1, 1, 1, 1)))[RECORD_HEADER.size :]
    at = data.rindex(body) + 2  # the zone byte, after the u16 node
    data[at] = ZoneType.NONE
    bad = tmp_path / "bad.mhpt"
    bad.write_bytes(fix_crcs(bytes(data)))
    for command in ("replay", "layout", "plot", "export"):
        rc, _, err = run([command, str(bad), *(["-o", str(tmp_path / "o")] if command in ("plot", "export") else [])], capsys)
        assert rc == 2 and "field ZoneObserved.zone: ZoneObserved: NONE is no zone" in err, (command, err)
        one_error_line(err, command, bad, "byte ")


def big_add(tmp_path: Path, size: int, requests: int) -> Path:
    """seed-dimm's snapshot, one add_memory of ``size`` bytes at 6 GiB, then ``requests`` online requests."""
    header, records = seed_records()
    boot = [r.event for r in records if r.event.KIND == "boot"]
    events = [*boot, AddMemory(6 << 30, size, 0, AddFlags.NONE), *[OnlineBlock(100, OnlineType.ONLINE, 0, 0)] * requests]  # type: ignore[arg-type]
    with TraceWriter(tmp_path / "big.mhpt", header) as w:
        for ev in events:
            w.write(ev, ts=0)
    return tmp_path / "big.mhpt"


def test_plot_samples_within_a_budget_of_block_states_and_bins_wide_ranges(tmp_path: Path) -> None:
    from replay.plot import code_at, grid, sample

    path = big_add(tmp_path, 1 << 40, 600)  # 8192 hot-added blocks, 611 events
    s = sample(str(path), budget=200_000)
    visited = sum(len({b for a, z, _ in row for b in range(a, z + 1)}) for row in s.rows)
    assert visited <= 200_000 + 8192 + 48 and s.events[-1] == 610 and len(s.events) < 100  # thinned, the last event kept
    assert code_at(s.rows[-1], 48 + 8191) == 2 and code_at(s.rows[-1], 48 + 8192) == 6  # Normal, then absent
    cells, per = grid(s, columns=1000)
    assert per == 9 and {len(line) for line in cells} == {916} and cells[-1][-1] == 2


def test_plot_of_a_trace_without_records_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header, _ = seed_records()
    with TraceWriter(tmp_path / "empty.mhpt", header):
        pass
    rc, _, err = run(["plot", str(tmp_path / "empty.mhpt"), "-o", str(tmp_path / "e.png")], capsys)
    assert rc == 2 and not (tmp_path / "e.png").exists()
    one_error_line(err, "plot", tmp_path / "empty.mhpt", "record 0: the trace has no events")


def test_minimize_honours_its_time_budget_inside_a_long_replay(tmp_path: Path) -> None:
    """A replay of the largest machine (2**19 blocks) takes seconds; a 0.3 s budget stops it in the
    middle instead of after it."""
    from fuzz.check import Mode, decode
    from fuzz.minimize import Minimizer

    events = decode(big_add(tmp_path, (64 << 40) - (6 << 30), 1).read_bytes())
    assert events is not None
    with pytest.raises(ValueError, match="the budget ran out before a replay of the whole input finished"):
        Minimizer(Mode("6.1"), None, max_seconds=0.3).run(events)


def test_a_budget_ring_during_a_garbage_collection_waits_instead_of_being_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gc callback that takes half the time (hypothesis installs one) would swallow a Budget raised
    inside it as unraisable; the deadline rings again outside the collection and reaches the caller,
    every time."""
    import gc
    import sys
    import time

    from fuzz.minimize import Budget, deadline

    def busy(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    def slow(phase: str, info: dict[str, int]) -> None:
        busy(0.001)

    swallowed: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", swallowed.append)
    gc.callbacks.append(slow)
    reached = 0
    try:
        for _ in range(12):
            try:
                with deadline(time.monotonic() + 0.03):
                    give_up = time.monotonic() + 3
                    while time.monotonic() < give_up:
                        gc.collect(0)
                        busy(0.002)
            except Budget:
                reached += 1
    finally:
        gc.callbacks.remove(slow)
    assert (reached, swallowed) == (12, [])


# --- defect 3: repair mends what verify reports about sequence numbers --------------------------------------


def test_repair_output_verifies_after_any_sequence_number_damage(tmp_path: Path) -> None:
    """Every bit of every record's seq in the first chunk flipped in turn, CRCs recomputed (damage
    verify reports as gaps or numbers going backwards): repair writes a trace that verifies clean."""
    from fuzz.surfaces import fix_crcs
    from traces.files import repair, verify

    data = (SEEDS / "seed-dimm.mhpt").read_bytes()
    header_len = int.from_bytes(data[16:20], "little")
    offsets, pos = [], header_len + 24
    for _ in range(40):
        offsets.append(pos + 4)
        pos += int.from_bytes(data[pos + 2 : pos + 4], "little")
    damaged = repaired = 0
    for at in offsets:
        for bit in range(0, 64, 3):
            bad = bytearray(data)
            bad[at + bit // 8] ^= 1 << bit % 8
            src = tmp_path / "bad.mhpt"
            src.write_bytes(fix_crcs(bytes(bad)))
            damaged += not verify(str(src)).clean
            repair(str(src), str(tmp_path / "fixed.mhpt"))
            repaired += verify(str(tmp_path / "fixed.mhpt")).clean
    assert damaged == repaired == len(offsets) * 22


# --- defect 4: verify checks the index entries ------------------------------------------------------------


def chunked(tmp_path: Path, records_per_chunk: int = 60) -> Path:
    header, records = seed_records("seed-vmem")
    with TraceWriter(tmp_path / "chunked.mhpt", header, chunk_records=records_per_chunk) as w:
        for rec in records:
            w.write_record(rec)
    return tmp_path / "chunked.mhpt"


def test_verify_reports_every_bit_flip_in_the_index_entries(tmp_path: Path) -> None:
    from traces.files import verify

    path = chunked(tmp_path)
    data = path.read_bytes()
    at = int.from_bytes(data[-16:-8], "little")
    n = int.from_bytes(data[at + 4 : at + 8], "little")
    assert n > 3 and verify(str(path)).clean
    missed = []
    for bit in range(0, n * 28 * 8, 5):
        bad = bytearray(data)
        bad[at + 8 + bit // 8] ^= 1 << bit % 8
        path.write_bytes(bad)
        report = verify(str(path))
        if report.clean or not any(p.kind == "index" and ("index entry" in p.message or "the index lists" in p.message) for p in report.problems):
            missed.append(bit)
    assert missed == []


def test_strict_reading_and_pipes_check_the_index_too(tmp_path: Path) -> None:
    import io

    from traces.errors import TraceFormatError

    data = bytearray(chunked(tmp_path).read_bytes())
    at = int.from_bytes(data[-16:-8], "little")
    data[at + 8 + 28 + 9] ^= 0x10  # entry 1's first_seq
    with pytest.raises(TraceFormatError, match="index entry 1 says first_seq/count/first_ts"):
        TraceReader(io.BytesIO(bytes(data))).read_all()

    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    data[at + 8 + 28 + 9] ^= 0x10
    data[at + 8 + 28 + 7] ^= 0x01  # entry 1's offset, far past the index
    with pytest.raises(TraceFormatError, match="index entry 1 says its chunk starts at byte"):
        TraceReader(Pipe(bytes(data))).read_all()


# --- defect 5: compile is bounded and every error names its line ---------------------------------------------


def test_tokenizing_a_long_quoted_string_takes_memory_in_proportion_to_it() -> None:
    """A possessive string pattern: no backtracking state per character (was ~175 bytes per byte)."""
    import tracemalloc

    from traces.text import _Line

    text = 'mark text="' + "a" * (2 << 20) + '"'
    tracemalloc.start()
    try:
        tokens = _Line(text, 1, None).tokens
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(tokens) == 2 and peak < 3 * len(text)


COMPILE_HEAD = '%mhpt 1.0\n%writer "w"\n'


@pytest.mark.parametrize(
    ("text", "position", "expect"),
    [
        ('18446744073709551616 0.000000000 mark text="x"\n', "line 3:1", "sequence number 18446744073709551616 does not fit in u64"),
        ('18446744073709551615 0.000000000 mark text="x"\nmark text="y"\n', "line 4:1", "does not fit in u64"),
        ('0 18446744073.709551616 mark text="x"\n', "line 3:3", "time 18446744073.709551616 s is beyond the u64 nanosecond clock"),
        ("%section 1 data=ffff\n", "line 3:10", "%section 1: not a free section type"),
        ("%section 65536 data=ff\n", "line 3:10", "not a free section type"),
        ("%geometry page_size=0x100000000 section_size=0x8000000 block_size=0x8000000\n", "line 3:1", "%geometry: page_size 4294967296 outside"),
        ("%geometry page_size=4096 section_size=0x8000000 block_size=0x10000000000000000\n", "line 3:1", "block_size 18446744073709551616 outside"),
        ('%clock "c" wall_ns=9223372036854775808\n', "line 3:1", "%clock: wall_ns 9223372036854775808 outside"),
        (f'%arch "{"x" * 70000}"\n', "line 3:1", "%arch: a header string holds at most 65535 UTF-8 bytes"),
        ('%kernel release="a" cmdline="b" bogus=1\n', "line 3:33", "%kernel: unknown key bogus (keys: release, cmdline)"),
        ('%arch "x" "y"\n', "line 3:11", '%arch: unexpected "y" (1 value without a key)'),
        ("%geometry page_size=4K page_size=4K section_size=128M block_size=128M\n", "line 3:24", "%geometry: page_size given twice"),
        ('%writer "again"\n', "line 3:1", "%writer given twice (first on line 2)"),
        (
            "".join(f"%section {100 + i} data={'ab' * 60000}\n" for i in range(20)),
            "line 22:1",
            "a 1200",
        ),
        ("raw code=200 data=" + "ab" * 65516 + "\n", "line 3:1", "record of 65536 bytes exceeds 65535"),
        ('mark text="x" @extra=' + "ab" * 65514 + "\n", "line 3:15", "record of 65536 bytes exceeds 65535"),
    ],
)
def test_compile_errors_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, position: str, expect: str) -> None:
    src = tmp_path / "t.txt"
    src.write_text(COMPILE_HEAD + text)
    rc, _, err = run(["compile", str(src), "-o", str(tmp_path / "t.mhpt")], capsys)
    assert rc == 2 and expect in err, err[:300]
    one_error_line(err, "compile", src, position + ":")
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_what_compile_writes_every_reader_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "t.txt"
    src.write_text(COMPILE_HEAD + '%section 8 data=ffff\n18446744073709551615 18446744073.709551615 mark text="last"\n')
    assert run(["compile", str(src), "-o", str(tmp_path / "t.mhpt")], capsys)[0] == 0
    with TraceReader(tmp_path / "t.mhpt") as r:
        assert r.header.unknown_sections == [(8, b"\xff\xff")] and [(rec.seq, rec.ts) for rec in r] == [(2**64 - 1, 2**64 - 1)]


# --- defect 8: every error names the file and the position ----------------------------------------------


def impossible_snapshot(events: list[Any]) -> list[Any]:
    """seed-dimm with a Normal zone too small for its 16 online blocks (found at the first request, event 15)."""
    from traces.events import BootZone, ZoneType

    return [ev._replace(present=1000, present_early=1000) if type(ev) is BootZone and ev.zone is ZoneType.NORMAL else ev for ev in events]


@pytest.mark.parametrize("command", ["layout", "plot", "export", "replay"])
def test_snapshot_errors_name_the_file_and_the_record(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    path = rewrite(SEEDS / "seed-dimm.mhpt", tmp_path / "bad.mhpt", impossible_snapshot)
    extra = {"plot": ["-o", str(tmp_path / "p.png")], "export": ["-o", str(tmp_path / "e.json")]}
    rc, _, err = run([command, str(path), *extra.get(command, [])], capsys)
    assert rc == 2 and "zone Normal" in err and "cannot hold its online blocks" in err
    one_error_line(err, command, path, "record 15: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mhpt"]


def test_minimize_of_a_clean_trace_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = SEEDS / "seed-dimm.mhpt"
    rc, _, err = run(["minimize", str(src), "-o", str(tmp_path / "m.mhpt")], capsys)
    assert rc == 2 and not (tmp_path / "m.mhpt").exists()
    one_error_line(err, "minimize", src, "the input does not produce any signature")


def test_an_impossible_explicit_machine_is_an_error_at_its_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err, f = simulate_text(tmp_path, capsys, MACHINE.replace("present = 524288", "present = 1000", 1), "-o", str(tmp_path / "t.mhpt"))
    assert rc == 2 and "cannot hold its online blocks" in err
    one_error_line(err, "simulate", f, "line 1: machine: not a boot layout a kernel can have: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_every_error_line_follows_the_convention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Errors raised without a file (the model's snapshot checks, a reader on standard input) get
    the subcommand's file from the one place that prints them."""
    from replay.cli import error_line
    from traces.errors import InputError

    assert error_line(InputError("m", record=3), "t.mhpt") == "t.mhpt: record 3: m"
    assert error_line(InputError("m", path="a.txt", line=2, column=5), "t.mhpt") == "a.txt: line 2:5: m"
    assert error_line(FileNotFoundError(2, "No such file or directory", "x.mhpt"), None) == "x.mhpt: No such file or directory"
    assert error_line(ValueError("--diff: give two profiles"), "t.mhpt") == "--diff: give two profiles"


# --- defect 9: crash safety ----------------------------------------------------------------------------------


def test_a_writer_never_overwrites_a_crashed_runs_part_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``mhp record -o X`` after a crash: X.part (what the crashed run recorded) is kept as X.1.part."""
    from traces.events import Mark
    from traces.files import verify

    target = tmp_path / "x.mhpt"
    crashed = TraceWriter(target, TraceHeader(), chunk_records=5)
    for i in range(12):
        crashed.write(Mark(str(i)))
    crashed.f.flush()  # killed here: X.part holds two chunks
    before = (tmp_path / "x.mhpt.part").read_bytes()
    with TraceWriter(target, TraceHeader()) as again:
        again.write(Mark("new run"))
    assert again.kept == tmp_path / "x.mhpt.1.part" and again.kept.read_bytes() == before
    assert f"{tmp_path / 'x.mhpt.part'}: left by an earlier run that did not finish; kept as {again.kept}" in capsys.readouterr().err
    assert verify(str(again.kept)).stats.records == 10 and verify(str(target)).stats.records == 1
    (tmp_path / "x.mhpt.part").write_bytes(b"a second crash")
    src = tmp_path / "t.txt"
    src.write_text('%mhpt 1.0\nmark text="x"\n')
    rc, _, err = run(["compile", str(src), "-o", str(target)], capsys)
    assert rc == 0 and "kept as" in err and (tmp_path / "x.mhpt.2.part").read_bytes() == b"a second crash"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt", "x.mhpt", "x.mhpt.1.part", "x.mhpt.2.part"]


def test_a_header_that_does_not_fit_leaves_no_part_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="header does not fit"):
        TraceWriter(tmp_path / "x.mhpt", TraceHeader(page_size=2**32))
    assert list(tmp_path.iterdir()) == []


# --- found by the fuzz targets -------------------------------------------------------------------------------


@pytest.mark.parametrize("request_type", ["RemoveMemory", "OfflineAndRemoveMemory"])
def test_a_removal_beyond_the_address_space_is_refused_before_the_model_walks_it(tmp_path: Path, capsys: pytest.CaptureFixture[str], request_type: str) -> None:
    """commands fuzzer: remove_memory of 2**57 bytes made the model list 2**30 block ids (7 GB, minutes)."""
    from traces import events

    cls = getattr(events, request_type)
    header, records = seed_records()
    boot = [encode_record(r) for r in records if r.event.KIND == "boot"]
    body = BODIES[cls.CODE].build({"start": 1 << 36, "size": 1 << 57})
    bad = RECORD_HEADER.pack(cls.CODE, 0, RECORD_HEADER.size + len(body), len(boot), 0) + body
    path = raw_trace(tmp_path / "rm.mhpt", header, [*boot, bad])
    for command in ("replay", "layout"):
        rc, _, err = run([command, str(path)], capsys)
        assert rc == 2
        one_error_line(err, command, path, f"byte {path.stat().st_size - len(body)}, record {len(boot)}, field {request_type}.size: ")
    with pytest.raises(ValueError, match="ends beyond the 46-bit physical address space"):
        encode_record(Record(0, 0, 0, cls(1 << 36, 1 << 57)))
    encode_record(Record(0, 0, 0, cls((1 << 46) - (128 << 20), 128 << 20)))  # the last block: fine


def test_a_kernel_release_without_a_version_names_the_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """commands fuzzer: '6.q.0-56-amd64' ended replay, layout, plot and export in a ValueError without the file. Such
    a release gets the default profile, and replay says which and why (issue 13: a release no profile covers)."""
    from dataclasses import replace

    header, records = seed_records()
    path = tmp_path / "release.mhpt"
    with TraceWriter(path, replace(header, kernel_release="6.q.0-56-amd64")) as w:
        for rec in records:
            w.write_record(rec)
    for command in ("replay", "layout", "export"):
        extra = {"export": ["-o", str(tmp_path / "e.json")]}.get(command, [])
        rc, _, err = run([command, str(path), *extra], capsys)
        assert rc in (0, 1) and "Traceback" not in err, err
        if command == "replay":
            assert "no kernel version in release '6.q.0-56-amd64': the default profile" in err
    assert run(["layout", str(path), "--profile", "6.1"], capsys)[0] == 0


def test_numbers_longer_than_python_converts_are_positioned_errors_and_quotes_are_clipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Integers of more than 4300 digits raise a bare ValueError in int() and tomllib; errors quote
    at most a clip of what they name."""
    rc, _, err, f = simulate_text(tmp_path, capsys, "[machine]\nblock_size = " + "9" * 5000 + "\n")
    assert rc == 2
    one_error_line(err, "simulate", f, "line 2:14: TOML: an integer of more than 4300 digits")
    rc, _, err, f = simulate_text(tmp_path, capsys, '[machine]\npreset = "qemu-q35-4G"\n[[step]]\ndimm = ' + "9" * 4000 + "\n")
    assert rc == 2 and len(err) < 200
    one_error_line(err, "simulate", f, "line 4: step[0].dimm: a 13288-bit number outside 1..64T")
    src = tmp_path / "t.txt"
    for body, position in [
        ("9" * 5000 + ' 0.000000000 mark text="x"', "line 2:1: sequence number or time beyond u64"),
        ("0 " + "9" * 5000 + '.000000000 mark text="x"', "line 2:1: sequence number or time beyond u64"),
        ("%section " + "9" * 5000 + " data=ff", "line 2:1: %section: malformed (a number of 5000 characters)"),
        ("online_block block=" + "9" * 5000 + " online_type=online attr=state source=user", "line 2:20, field block: online_block.block: expected an integer"),
        ("x" * 3000 + " a=1", "line 2:1: unknown event 'xxxxxxxx"),
    ]:
        src.write_text("%mhpt 1.0\n" + body + "\n")
        rc, _, err = run(["compile", str(src), "-o", str(tmp_path / "t.mhpt")], capsys)
        assert rc == 2 and len(err) < 600, err[:600]
        one_error_line(err, "compile", src, position)
