"""mhp replay: clean replays, one divergence per class with its report, exit codes, JSON, layout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from replay.cli import main
from replay.generate import generate_trace
from replay.replayer import replay_file
from tests.test_observed import SCENARIOS
from traces.events import AddMemory, BootBlocks, OfflineAndRemoveMemory, OfflineBlock, OnlineBlock, RemoveMemory
from traces.machines import PRESETS
from traces.reader import TraceReader, read_trace

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "corpus" / "seeds"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def edited(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, edit) -> Path:  # type: ignore[no-untyped-def]
    """A copy of a seed trace with its text form edited."""
    rc, text, _ = run(["dump", str(SEEDS / f"{name}.mhpt")], capsys)
    assert rc == 0
    new = edit(text)
    assert new != text
    src = tmp_path / "edited.txt"
    src.write_text(new)
    out = tmp_path / "edited.mhpt"
    assert run(["compile", str(src), "-o", str(out)], capsys)[0] == 0
    return out


def flip_block_144(text: str) -> str:
    return text.replace(
        "block_observed block=144 state=online node=0 valid_zones=Normal", "block_observed block=144 state=online node=0 valid_zones=Movable", 1
    )


@pytest.mark.parametrize("seed", sorted(p.stem for p in SEEDS.glob("*.mhpt")))
def test_simulated_traces_replay_without_divergence(seed: str) -> None:
    r = replay_file(str(SEEDS / f"{seed}.mhpt"))
    assert r.error is None and r.divergence_count == 0
    assert r.matched == r.observations > 0


def test_one_flipped_zone_is_one_decision_divergence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = edited(tmp_path, capsys, "seed-vmem", flip_block_144)
    r = replay_file(str(path), context=3)
    assert (r.divergence_count, r.divergences_by_kind) == (1, {"decision": 1})
    d = r.divergences[0]
    assert [(m.field, m.model, m.observed) for m in d.mismatches] == [("valid_zones", "Normal", "Movable")]
    assert d.request is not None and "add_memory start=0x480000000" in d.request  # block 144 = 18 GiB
    assert len(d.context) == 3 and "result rc=0" in d.context[-1]
    (glob,) = d.numbers  # the system-wide check failed, so the per-node check never ran
    assert (glob["nid"], glob["movable"], glob["limit"], glob["result"]) == (-1, 3_178_496, 3_155_819, False)
    assert d.groups[0]["dynamic"] and d.groups[0]["kernel"] == 32768
    assert any(z["zone"] == "Movable" and z["present"] == 96 * 32768 for z in d.zones)
    rc, out, _ = run(["replay", str(path)], capsys)
    assert rc == 1
    assert "decision divergence at event" in out and "valid_zones: model 'Normal', kernel 'Movable'" in out
    assert "limit 3155819 -> kernel zone" in out
    assert out.rstrip().endswith("FAILED: 809 events, 537 matched, 1 divergences, 0 findings")


def test_divergence_names_the_request_that_decided_the_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Block 48 was onlined by the first add of the virtio-mem device; 95 adds came after it before the observation."""
    rc, text, _ = run(["dump", str(ROOT / "corpus" / "real" / "6.1" / "seed-vmem.mhpt")], capsys)
    assert rc == 0
    add = next(line.split()[0] for line in text.splitlines() if " add_memory start=0x180000000 " in line)
    src = tmp_path / "t.txt"
    src.write_text(text.replace("block=48 state=online node=0 valid_zones=Movable", "block=48 state=online node=0 valid_zones=Normal", 1))
    assert run(["compile", str(src), "-o", str(tmp_path / "t.mhpt")], capsys)[0] == 0
    (d,) = replay_file(str(tmp_path / "t.mhpt")).divergences
    assert d.request is not None and d.request.startswith(f"{add} ") and "add_memory start=0x180000000" in d.request


@pytest.mark.parametrize(
    ("edit", "kind", "field"),
    [
        (lambda t: t.replace("result rc=0", "result rc=-16", 3).replace("result rc=-16", "result rc=0", 2), "errno", "rc"),
        (lambda t: re.sub(r"(zone_observed node=0 zone=Movable present=)3145728", r"\g<1>3145729", t, count=1), "accounting", "present"),
        (lambda t: t.replace("block_observed block=50 state=online", "block_observed block=50 state=offline", 1), "errno", "state"),
        (
            lambda t: re.sub(r"state_digest digest=0x[0-9a-f]+", "state_digest digest=0x1", t, count=2).replace("digest=0x1", "digest=0x0", 1),
            "accounting",
            "digest",
        ),
    ],
)
def test_divergence_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, kind: str, field: str) -> None:  # type: ignore[no-untyped-def]
    r = replay_file(str(edited(tmp_path, capsys, "seed-vmem", edit)))
    assert r.divergence_count >= 1 and set(r.divergences_by_kind) == {kind}
    assert r.divergences[0].mismatches[0].field == field


def test_divergences_after_a_loss_marker_are_recording_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def edit(text: str) -> str:
        text = flip_block_144(text)
        return text.replace('mark text="step 2: vmem=vm0 size=14G"', 'loss count=3 reason="uevent overrun"', 1)

    path = edited(tmp_path, capsys, "seed-vmem", edit)
    r = replay_file(str(path))
    assert r.divergences_by_kind == {"loss": 1}


def test_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = str(SEEDS / "seed-dimm.mhpt")
    assert run(["replay", clean], capsys)[0] == 0
    finding = str(SEEDS / "stale-online-type.mhpt")
    rc, out, _ = run(["replay", finding, "--json"], capsys)
    doc = json.loads(out)
    assert rc == 1 and doc["totals"]["findings"] == 2 and doc["traces"][0]["finding_signatures"] == {"AM-RATIO:state": 1, "AM-RATIO-NODE:state": 1}
    assert set(doc["traces"][0]) >= {"path", "events", "divergences", "findings", "stats", "verdict"}
    bad = tmp_path / "bad.mhpt"
    data = bytearray((SEEDS / "seed-vmem.mhpt").read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(data)
    rc, out, err = run(["replay", clean, str(bad)], capsys)
    assert rc == 2 and "CRC mismatch" in err and "ERROR" in out
    rc, out, _ = run(["replay", "-j", "2", clean, finding, "--json"], capsys)
    doc = json.loads(out)
    assert rc == 1 and [t["path"] for t in doc["traces"]] == [clean, finding] and doc["totals"]["traces"] == 2


def test_layout_at_an_event(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["layout", str(SEEDS / "seed-dimm.mhpt"), "--at", "60", "--json"], capsys)
    doc = json.loads(out)
    runs = [(r["first"], r["last"], r["zone"]) for r in doc["runs"] if r["first"] >= 48]
    assert rc == 0 and runs == [(48, 79, "Movable"), (80, 111, "Movable")]
    assert doc["at"] == 60
    rc, out, _ = run(["layout", str(SEEDS / "seed-dimm.mhpt")], capsys)
    assert "Memory block 176-207:   Normal (group4)" in out and out.startswith("after event 224:")
    rc, out, _ = run(["layout", str(SEEDS / "seed-dimm.mhpt"), "--at", "0"], capsys)
    assert rc == 0 and "(no memory blocks yet)" in out
    rc, _, err = run(["layout", str(SEEDS / "seed-dimm.mhpt"), "--at", "225"], capsys)
    assert rc == 2 and "event 225 is past the trace's last event 224" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["layout", "--at", "-1"],
        ["replay", "--context", "-3"],
        ["replay", "--max-divergences", "-1"],
        ["replay", "-j", "0"],
        ["minimize", "-o", "x.mhpt", "--max-replays", "0"],
        ["minimize", "-o", "x.mhpt", "--time", "-1"],
        ["fuzz", "--runs", "-5"],
        ["fuzz", "--time", "0"],
        ["fuzz", "--merge-every", "0"],
        ["fuzz", "--seed-events", "-1"],
        ["record", "--duration", "-1", "-o", "x.mhpt"],
    ],
)
def test_counts_out_of_range_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, str(SEEDS / "seed-dimm.mhpt")] if argv[0] in ("layout", "replay", "minimize") else argv)
    assert e.value.code == 2 and ("is below" in (err := capsys.readouterr().err) or "is not above 0" in err)


def test_scenario_traces_of_both_profiles_replay_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for profile in ("6.1", "6.12"):
        out = tmp_path / f"numa-{profile}.mhpt"
        run(["simulate", str(SCENARIOS / "numa-aware.toml"), "--profile", profile, "-o", str(out)], capsys)
        r = replay_file(str(out))
        assert r.profile == profile and r.divergence_count == 0


@pytest.mark.parametrize("seed", [1, 2, 3, 7])
def test_generated_traces_replay_without_divergence_and_are_deterministic(tmp_path: Path, seed: int) -> None:
    a, b = tmp_path / "a.mhpt", tmp_path / "b.mhpt"
    generate_trace(str(a), seed, 3000, "6.12" if seed % 2 else "6.1")
    generate_trace(str(b), seed, 3000, "6.12" if seed % 2 else "6.1")
    assert a.read_bytes() == b.read_bytes()
    r = replay_file(str(a))
    assert r.error is None and r.events == 3000 and r.divergence_count == 0 and r.matched > 1000
    assert set(r.finding_signatures) <= {"AM-RATIO:state", "AM-RATIO-NODE:state", "AM-STATIC-MIXED:Normal", "AM-STATIC-MIXED:DMA32"}
    header = TraceReader(str(a)).header
    assert header.block_size == 1 << 27 and "online_policy=" in header.params and "auto_movable_ratio=" in header.params


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_generated_traces_run_on_every_preset(tmp_path: Path, preset: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``mhp gen --preset``: the machine's geometry (a 64 GiB guest has 2 GiB blocks), DIMMs of whole blocks, user
    space onlining and offlining only above 4 GiB; it replays without divergence on every profile."""
    profile = ("6.1", "6.12", "7.2")[sorted(PRESETS).index(preset) % 3]
    out = tmp_path / "gen.mhpt"
    assert run(["gen", "--seed", "3", "--events", "1500", "--profile", profile, "--preset", preset, "-o", str(out)], capsys)[0] == 0
    header, records = read_trace(out.read_bytes())
    booted = {e.first for e in PRESETS[preset].events if isinstance(e, BootBlocks)}
    assert header.block_size == PRESETS[preset].events[0].block_size  # type: ignore[union-attr]
    assert header.source_detail == f"mhp gen --seed 3 --profile {profile} --preset {preset}"  # how to make it again
    adds = [r.event for r in records if isinstance(r.event, AddMemory)]
    users = [r.event for r in records if isinstance(r.event, (OnlineBlock, OfflineBlock))]
    assert adds and users and booted
    assert all(a.size % header.block_size == 0 for a in adds)
    assert all(u.block * header.block_size >= 4 << 30 for u in users)
    assert max(a.start + a.size for a in adds) <= PRESETS[preset].device_memory_end
    r = replay_file(str(out))
    assert r.error is None and r.events == 1500 and r.divergence_count == 0


def test_a_long_generated_workload_stays_inside_the_machines_device_memory(tmp_path: Path) -> None:
    """On the 64 GiB guest (192 GiB of room, 2 GiB DIMMs up to 64 GiB), 20,000 events of plugging and unplugging: the
    DIMMs and virtio-mem devices never hold more than QEMU's maxmem allows, and every device sits inside its region."""
    preset = PRESETS["qemu-q35-64G"]
    out = tmp_path / "gen.mhpt"
    generate_trace(str(out), 8, 20_000, "6.12", preset.name)
    _, records = read_trace(out.read_bytes())
    live: dict[int, int] = {}
    for ev in (r.event for r in records):
        if isinstance(ev, AddMemory):
            assert ev.start + ev.size <= preset.device_memory_end
            live[ev.start] = ev.size
        elif isinstance(ev, (RemoveMemory, OfflineAndRemoveMemory)):
            live.pop(ev.start, None)
        assert sum(live.values()) <= preset.hotplug_room


def _movable_managed(delta: int):  # type: ignore[no-untyped-def]
    """An edit: the first Movable zone observation with 3 blocks or more in it reports ``delta`` managed pages more."""

    def edit(t: str) -> str:
        m = next(m for m in re.finditer(r"(zone_observed node=0 zone=Movable present=(\d+) \S+ \S+ managed=)(\d+)", t) if int(m.group(2)) >= 3 * 32768)
        return t[: m.start(3)] + str(int(m.group(3)) + delta) + t[m.end(3) :]

    return edit


@pytest.mark.parametrize(("name", "delta", "divergences"), [("seed-vmem", -32768, 0), ("seed-vmem", -3 * 32768, 0), ("seed-vmem", 1, 1), ("seed-dimm", -1, 1)])
def test_managed_may_lack_what_virtio_mem_holds_outside_the_buddy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, delta: int, divergences: int
) -> None:
    """Fake-offline virtio-mem pages: managed below the model's by at most the zone's online virtio-mem blocks, never
    above; a zone of DIMMs only gets no slack."""
    r = replay_file(str(edited(tmp_path, capsys, name, _movable_managed(delta))))
    assert r.divergence_count == divergences and set(r.divergences_by_kind) <= {"accounting"}
