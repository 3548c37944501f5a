"""The .mhpt codec: lossless round trips, fast path == construct path, damage found and reported."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.model.profiles import get_profile
from replay.simulate import Simulation, simulate, write_trace
from tests.strategies import numbered, records
from tests.test_observed import SCENARIOS
from traces.codec import INTERN_MAX, Record, Unknown, decode_chunk_fast, decode_payload, decode_payload_construct, encode_record, interned_count
from traces.errors import TraceFormatError
from traces.events import BlockObserved, BlockState, Loss, Mark, OnlineBlock, ZoneType
from traces.files import cat, compile_text, dump_trace, info, repair, verify
from traces.header import CHUNK_HEADER, TraceHeader
from traces.reader import TraceReader, read_trace
from traces.text import dump, parse_text
from traces.writer import TraceWriter

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def write(recs: list[Record], header: TraceHeader | None = None, chunk: int = 7) -> bytes:
    buf = io.BytesIO()
    w = TraceWriter(buf, header or TraceHeader(writer="test"), chunk_records=chunk)
    for r in recs:
        w.write_record(r)
    w.close()
    return buf.getvalue()


def text_round_trip(trace: Path, tmp_path: Path) -> str:
    """``mhp dump`` then ``mhp compile`` of ``trace``: asserts the result is byte-exact, returns the text."""
    text = io.StringIO()
    dump_trace(str(trace), text)
    src, again = tmp_path / "round.txt", tmp_path / "round.mhpt"
    src.write_text(text.getvalue())
    compile_text(str(src), str(again))
    assert again.read_bytes() == trace.read_bytes()
    return text.getvalue()


def scenario_trace(tmp_path: Path, name: str, profile: str = "6.1") -> Path:
    from traces.scenario import load_scenario

    sc = load_scenario(SCENARIOS / f"{name}.toml")
    sim = Simulation(sc, get_profile(profile))
    for _ in simulate(sc, sim=sim):
        pass
    out = tmp_path / f"{name}-{profile}.mhpt"
    write_trace(sim, str(out))
    return out


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_round_trips_on_every_corpus_scenario(tmp_path: Path, path: Path) -> None:
    trace = scenario_trace(tmp_path, path.stem)
    data = trace.read_bytes()
    header, recs = read_trace(data)
    assert read_trace(data, decoder="construct")[1] == recs
    text = "".join(dump(header, recs))
    header2, recs2 = parse_text(text)
    assert (header2, recs2) == (header, recs)
    (tmp_path / "t.txt").write_text(text)
    compile_text(str(tmp_path / "t.txt"), str(tmp_path / "again.mhpt"))
    assert (tmp_path / "again.mhpt").read_bytes() == data  # binary -> text -> binary is byte-exact


@pytest.mark.parametrize("path", sorted(CORPUS.rglob("*.mhpt")), ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_trace_round_trips_through_text_byte_exact(tmp_path: Path, path: Path) -> None:
    text_round_trip(path, tmp_path)


def test_corpus_has_traces_without_index() -> None:
    """The regressions are written without an index footer: the round trip above covers that layout."""
    assert not verify(str(sorted((CORPUS / "regressions").glob("*.mhpt"))[0])).stats.has_index


@pytest.mark.parametrize("index", [True, False])
def test_text_form_keeps_chunk_boundaries_and_index_presence(tmp_path: Path, index: bool) -> None:
    trace = tmp_path / "t.mhpt"
    with TraceWriter(trace, TraceHeader(writer="test"), chunk_records=7, index=index) as w:
        for i in range(30):
            w.write_record(Record(i, i, 0, Mark(f"m{i}")))
            if i == 9:
                w.flush()  # an explicit flush ends a 3-record chunk
    with TraceReader(trace) as r:
        assert [len(c.cols.seqs) for c in r.chunks()] == [7, 3, 7, 7, 6]
    text = text_round_trip(trace, tmp_path)
    assert text.count("%chunk\n") == 5 and ("%index absent\n" in text) is not index
    plain = tmp_path / "plain.txt"  # hand-written text without the directives: default layout
    plain.write_text("".join(ln for ln in text.splitlines(True) if ln not in ("%chunk\n", "%index absent\n")))
    compile_text(str(plain), str(tmp_path / "plain.mhpt"))
    assert (tmp_path / "plain.mhpt").read_bytes() == write([Record(i, i, 0, Mark(f"m{i}")) for i in range(30)], TraceHeader(writer="test"), chunk=4096)


def test_chunk_lines_open_chunks_where_they_stand(tmp_path: Path) -> None:
    src = tmp_path / "t.txt"
    src.write_text('%mhpt 1.0\n0 0.000000000 mark text="a"\n%chunk\n%chunk\nmark text="b"\nmark text="c"\n%chunk\n')
    compile_text(str(src), str(tmp_path / "t.mhpt"))
    with TraceReader(tmp_path / "t.mhpt") as r:
        assert [list(c.cols.seqs) for c in r.chunks()] == [[0], [1, 2]] and r.stats.has_index


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=30))
def test_generated_records_round_trip_and_both_decoders_agree(items: list) -> None:
    recs = numbered(items)
    data = write(recs)
    header, fast = read_trace(data)
    assert fast == recs
    assert read_trace(data, decoder="construct")[1] == recs
    assert parse_text("".join(dump(header, recs)))[1] == recs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=6), st.data())
def test_fast_and_construct_agree_on_damaged_payloads(items: list, data: st.DataObject) -> None:
    """Any payload, valid or not: both decoders return the same records or the same error."""
    payload = bytearray(b"".join(encode_record(r) for r in numbered(items)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del payload[data.draw(st.integers(0, len(payload))) :]
    count = data.draw(st.integers(0, 8))

    def run(fn):  # type: ignore[no-untyped-def]
        try:
            return list(fn(bytes(payload), count, 1000, 7).records())  # the chunk's payload at byte 1000, its first record the 8th
        except TraceFormatError as e:
            return str(e)

    assert run(decode_payload) == run(decode_payload_construct)


def test_fast_path_numbers_records_by_range_and_keeps_every_jump() -> None:
    def seqs(numbers: list[int]) -> Any:
        return decode_chunk_fast(b"".join(encode_record(Record(n, 0, 0, Mark(""))) for n in numbers)).seqs

    assert seqs([7, 8, 9]) == range(7, 10)
    assert seqs([5, 6, 9, 10, 3, 4]) == [5, 6, 9, 10, 3, 4]
    assert seqs([2, 2]) == [2, 2]


def test_identical_bodies_share_one_event_and_the_intern_cache_is_bounded() -> None:
    """The fast path interns events by body bytes: shared objects, same values, bounded memory."""
    same = [Record(i, i, 0, OnlineBlock(40, 1, 1, 1)) for i in range(3)]
    cols = decode_chunk_fast(b"".join(encode_record(r) for r in same))
    assert cols.events[0] is cols.events[1] is cols.events[2]
    assert list(cols.records()) == same
    many = [Record(i, i, 1 if i % 3 == 0 else 0, BlockObserved(i, BlockState.ONLINE, 0, (ZoneType.MOVABLE,))) for i in range(INTERN_MAX + 50)]
    payload = b"".join(encode_record(r) for r in many)
    cols = decode_chunk_fast(payload)
    assert list(cols.records()) == many == list(decode_payload_construct(payload, len(many)).records())
    assert interned_count(BlockObserved) <= INTERN_MAX


def test_unknown_types_and_appended_fields_are_kept() -> None:
    recs = [Record(0, 1, 0, Unknown(0x99, b"\x01\x02\x03")), Record(1, 2, 0x1, Mark("x"), b"\xaa\xbb")]
    header, back = read_trace(write(recs))
    assert back == recs
    assert parse_text("".join(dump(header, back)))[1] == recs


def test_the_fast_decoder_keeps_unknown_types_as_the_construct_one_does() -> None:
    """A chunk with records of a type this reader does not know (a newer writer's) stays on the
    fast path, and gives the same records as construct."""
    recs = [Record(i, i, 0, Unknown(0x99 + i % 2, bytes([i]) * (i % 5))) if i % 3 == 0 else Record(i, i, 0, Mark(f"m{i}")) for i in range(30)]
    payload = b"".join(encode_record(r) for r in recs)
    assert list(decode_chunk_fast(payload).records()) == recs == list(decode_payload_construct(payload, len(recs)).records())


def test_flipped_byte_is_found_and_repair_keeps_the_rest(tmp_path: Path) -> None:
    recs = [Record(i, i, 0, Mark(f"m{i}")) for i in range(100)]
    data = bytearray(write(recs, chunk=10))
    clean = tmp_path / "clean.mhpt"
    clean.write_bytes(data)
    assert verify(str(clean)).clean
    # damage a byte inside the 4th chunk's payload
    at = data.find(b"m35")
    data[at + 1] ^= 0x40
    bad = tmp_path / "bad.mhpt"
    bad.write_bytes(data)
    report = verify(str(bad))
    assert not report.clean and [p.kind for p in report.problems] == ["crc"]
    with pytest.raises(TraceFormatError, match="CRC mismatch"):
        list(TraceReader(str(bad)))
    fixed = tmp_path / "fixed.mhpt"
    rep = repair(str(bad), str(fixed))
    assert rep.kept == 90
    _, back = read_trace(fixed.read_bytes())
    texts = [r.event.text for r in back if isinstance(r.event, Mark)]
    assert texts == [f"m{i}" for i in range(100) if not 30 <= i < 40]
    loss = [r for r in back if isinstance(r.event, Loss)]
    assert [(r.seq, r.event.count) for r in loss] == [(30, 10)]
    assert verify(str(fixed)).clean


def test_truncation_yields_every_complete_chunk(tmp_path: Path) -> None:
    recs = [Record(i, i, 0, Mark(f"m{i}")) for i in range(50)]
    data = write(recs, chunk=10)
    cut = tmp_path / "cut.mhpt"
    cut.write_bytes(data[: data.find(b"m42") + 2])
    got = []
    with pytest.raises(TraceFormatError, match="truncated"):
        for rec in TraceReader(str(cut)):
            got.append(rec)
    assert [r.seq for r in got] == list(range(40))
    report = verify(str(cut))
    assert [p.kind for p in report.problems] == ["truncated"]
    out = tmp_path / "out.mhpt"
    assert repair(str(cut), str(out)).kept == 40
    assert verify(str(out)).clean
    _, back = read_trace(out.read_bytes())
    assert [(r.seq, r.ts, r.event.count) for r in back if isinstance(r.event, Loss)] == [(40, 39, 10)]  # the cut chunk's header count
    report, facts = info(str(out))
    assert report.clean and facts["losses"] == 10 and facts["time_span_s"] == 39e-9


def test_repair_marks_records_lost_before_the_first_intact_chunk(tmp_path: Path) -> None:
    data = bytearray(write([Record(i, i, 0, Mark(f"m{i}")) for i in range(30)], chunk=10))
    data[data.find(b"m5") + 1] ^= 0x40  # damage the first chunk
    bad = tmp_path / "bad.mhpt"
    bad.write_bytes(data)
    assert verify(str(bad)).stats.gaps == [(0, 10)]
    fixed = tmp_path / "fixed.mhpt"
    assert repair(str(bad), str(fixed)).kept == 20
    _, back = read_trace(fixed.read_bytes())
    assert [(r.seq, r.ts, r.event.count) for r in back if isinstance(r.event, Loss)] == [(0, 10, 10)]
    assert verify(str(fixed)).clean
    unmarked = tmp_path / "unmarked.mhpt"  # the same records without the loss record start at seq 10
    unmarked.write_bytes(write([r for r in back if not isinstance(r.event, Loss)]))
    report = verify(str(unmarked))
    assert not report.clean and report.stats.gaps == [(0, 10)] and "10 records missing from seq 0" in "\n".join(report.lines())


def test_repair_marks_records_lost_in_a_damaged_last_chunk(tmp_path: Path) -> None:
    data = bytearray(write([Record(i, i, 0, Mark(f"m{i}")) for i in range(25)], chunk=10))
    data[data.find(b"m22") + 1] ^= 0x40  # damage the last chunk (records 20-24)
    bad = tmp_path / "bad.mhpt"
    bad.write_bytes(data)
    fixed = tmp_path / "fixed.mhpt"
    assert repair(str(bad), str(fixed)).kept == 20
    _, back = read_trace(fixed.read_bytes())
    assert [(r.seq, r.ts, r.event.count) for r in back if isinstance(r.event, Loss)] == [(20, 19, 5)]
    assert verify(str(fixed)).clean


def test_killed_writer_leaves_a_readable_part_file(tmp_path: Path) -> None:
    target = tmp_path / "t.mhpt"
    w = TraceWriter(target, TraceHeader(), chunk_records=5)
    for i in range(23):
        w.write(Mark(str(i)))
    w.f.flush()  # what the OS has after a SIGKILL: the flushed chunks and a partial buffer
    assert not target.exists()
    part = tmp_path / "t.mhpt.part"
    report = verify(str(part))
    assert report.stats.records == 20 and report.clean
    w.close()
    assert target.exists() and not part.exists()
    assert verify(str(target)).stats.records == 23


def test_writer_keeps_a_small_index_for_a_long_recording(tmp_path: Path) -> None:
    """An idle recorder flushes a chunk per zone sample (8,640 a day); the writer holds each one's index
    entry until close, packed (28 bytes), not as a Python dict (about 290)."""
    import gc
    import tracemalloc

    target = tmp_path / "long.mhpt"
    w = TraceWriter(target, TraceHeader(), chunk_records=None)
    w.write(Mark("first"))
    w.flush()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(5000):
        w.write(Mark(""))
        w.flush()
    gc.collect()  # construct's build contexts are cycles, garbage rather than growth
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    w.close()
    assert grown < 5000 * 40, f"{grown / 5000:.0f} bytes a chunk"
    report = verify(str(target))
    assert report.clean and report.stats.has_index and report.stats.chunks == 5001 and report.stats.records == 5001


def test_writer_abort_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "t.mhpt"
    with pytest.raises(RuntimeError), TraceWriter(target, TraceHeader()) as w:
        w.write(Mark("x"))
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_values_that_do_not_fit_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"OnlineBlock\.block"):
        TraceWriter(io.BytesIO(), TraceHeader()).write(OnlineBlock(-1, 1, 0, 0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"BlockObserved\.valid_zones"):
        TraceWriter(io.BytesIO(), TraceHeader()).write(BlockObserved(1, BlockState.ONLINE, 0, (ZoneType.NONE,)))


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda d: b"\x89MHPT\n" + d[7:], "magic"),
        (lambda d: d[:8] + struct.pack(">I", 0x01020304) + d[12:], "byte-swapped"),
        (lambda d: d[:12] + struct.pack("<H", 2) + d[14:], "major version 2"),
        (lambda d: d[:40] + bytes([d[40] ^ 1]) + d[41:], "header CRC"),
        (lambda d: d[:10], "shorter than"),
        (lambda d: b"", "shorter than"),
    ],
)
def test_bad_headers(mutate, expect: str) -> None:  # type: ignore[no-untyped-def]
    data = write([Record(0, 0, 0, Mark("x"))])
    with pytest.raises(TraceFormatError, match=expect):
        read_trace(mutate(data))


def test_huge_chunk_length_is_damage_not_allocation(tmp_path: Path) -> None:
    data = bytearray(write([Record(0, 0, 0, Mark("x"))]))
    at = data.find(b"MHc1")
    struct.pack_into("<I", data, at + 16, 0xFFFFFFF0)
    f = tmp_path / "huge.mhpt"
    f.write_bytes(data)
    with pytest.raises(TraceFormatError, match=f"byte {at + 16}.*exceeds"):
        list(TraceReader(str(f)))


def test_record_errors_name_offset_record_and_field(tmp_path: Path) -> None:
    recs = [Record(0, 0, 0, Mark("a")), Record(1, 0, 0, BlockObserved(5, BlockState.ONLINE, 0, (ZoneType.MOVABLE,)))]
    payload = bytearray(b"".join(encode_record(r) for r in recs))
    at = len(encode_record(recs[0])) + 20 + 4  # the state byte of record 1
    payload[at] = 9
    with pytest.raises(TraceFormatError) as e:
        decode_payload(bytes(payload), 2, base_offset=1000, first_record=10)
    assert (e.value.offset, e.value.record, e.value.field) == (1000 + at, 11, "BlockObserved.state")
    assert "expected a BlockState value, found 9" in str(e.value)


def test_text_errors_name_line_and_column() -> None:
    good = '%mhpt 1.0\n# comment\n5 0.000000001 mark text="a"\nmark text="b"  # seq 6\n'
    _, recs = parse_text(good)
    assert [(r.seq, r.ts, r.event.text) for r in recs] == [(5, 1, "a"), (6, 1, "b")]
    cases = [
        ("online_block block=1 online_type=sideways attr=state source=user", 1, 34, "expected one of offline, online"),
        ("online_block block=1 attr=state source=user", 1, 1, "missing field online_type"),
        ('mark text="a" color=red', 1, 15, "mark: unknown field color"),
        ("online_block blokc=5 online_type=online attr=state source=user", 1, 14, "online_block: unknown field blokc"),
        ("%chunk 7", 1, 8, "%chunk takes nothing"),
        ("%index maybe", 1, 8, "%index: expected present or absent"),
        ("%mhpt 1.70000", 1, 1, "the minor version is a u16"),
        ('%source generator "x"', 1, 19, '%source: unexpected "x"'),
        ("teleport x=1", 1, 1, "unknown event 'teleport'"),
        ('mark text="a"\n3 0.5 mark text="b"', 2, 3, "time like"),
        ('4 0.000000000 mark text="a"\n2 0.000000000 mark text="b"', 2, 1, "does not increase"),
        ("add_memory start=4G size=-1 nid=0 flags=none", 1, 26, "outside u64 range"),
    ]
    for text, line, col, msg in cases:
        with pytest.raises(TraceFormatError) as e:
            parse_text(text, path="t.txt")
        assert (e.value.line, e.value.column) == (line, col), (text, str(e.value))
        assert msg in str(e.value) and str(e.value).startswith(f"t.txt: line {line}:{col}")
    _, lenient = parse_text("online_block block=3", strict=False)
    assert lenient[0].event.block == 3 and lenient[0].event.online_type == 0


def test_geometry_sizes_take_unit_suffixes() -> None:
    header, _ = parse_text("%geometry page_size=4K section_size=128M block_size=2G\n")
    assert (header.page_size, header.section_size, header.block_size) == (4096, 128 << 20, 2 << 30)


def test_cat_joins_and_renumbers(tmp_path: Path) -> None:
    a, b = tmp_path / "a.mhpt", tmp_path / "b.mhpt"
    a.write_bytes(write([Record(i, i, 0, Mark(f"a{i}")) for i in range(5)]))
    b.write_bytes(write([Record(i, i, 0, Mark(f"b{i}")) for i in range(3)]))
    assert cat([str(a), str(b)], str(tmp_path / "ab.mhpt")) == 8
    _, recs = read_trace((tmp_path / "ab.mhpt").read_bytes())
    assert [r.seq for r in recs] == list(range(8)) and recs[5].event.text == "b0"


def test_reading_uses_constant_memory_per_chunk() -> None:
    """Chunks are read one at a time: the reader never holds more than one chunk's bytes."""
    data = write([Record(i, i, 0, Mark("x" * 50)) for i in range(2000)], chunk=100)
    f = io.BytesIO(data)
    reads: list[int] = []
    orig = f.read

    def spy(n: int = -1) -> bytes:
        out = orig(n)
        reads.append(len(out))
        return out

    f.read = spy  # type: ignore[method-assign]
    assert sum(1 for _ in TraceReader(f)) == 2000
    assert max(reads) < 100 * 90 + CHUNK_HEADER.size + os.sysconf("SC_PAGE_SIZE")


def test_format_md_lists_every_event_with_its_fields() -> None:
    from traces.events import EVENT_TYPES, fields_of
    from traces.text import CLASS_NAMES

    doc = (Path(__file__).resolve().parent.parent / "traces" / "FORMAT.md").read_text()
    for code, cls in EVENT_TYPES.items():
        row = next((ln for ln in doc.splitlines() if ln.startswith(f"| {code:#04x} |")), None)
        assert row is not None, cls.__name__
        assert row.split("|")[2].strip() == CLASS_NAMES[cls]
        assert all(f.name in row for f in fields_of(cls)), cls.__name__
