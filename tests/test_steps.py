"""fuzz/steps.py: scenario documents as fuzz inputs, every mutant expressible on a real machine."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from fuzz import steps
from replay.translate import translate
from traces.codec import Record
from traces.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "corpus" / "scenarios"


def seeds() -> list[dict[str, Any]]:
    out = []
    for p in sorted(SCENARIOS.glob("*.toml")):
        doc = steps.decode(p.read_bytes())
        assert doc is not None, p
        out.append(doc)
    return out


def mutants(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` mutants, each of a seed or of an earlier mutant (so some are many mutations deep)."""
    rng = random.Random(seed)
    pool = seeds()
    out = []
    for _ in range(n):
        m = steps.mutate(rng.choice(pool), rng) if rng.random() < 0.8 else steps.crossover(rng.choice(pool), rng.choice(pool), rng)
        pool.append(m)
        out.append(m)
    return out


def test_seeds_decode_to_their_normal_form_and_round_trip() -> None:
    for doc in seeds():
        assert steps.decode(steps.encode(doc)) == doc
        assert steps.obstacle(doc) is None


def test_decode_keeps_only_what_the_lab_does() -> None:
    doc = steps.decode((SCENARIOS / "dimm-unplug-busy.toml").read_bytes())
    assert doc is not None
    assert [next(iter(s)) for s in doc["step"]] == ["dimm", "online", "unplug"]  # the two guest workloads (run) dropped
    assert doc["step"][0] == {"dimm": "1G", "node": 0, "id": "d0"} and doc["step"][2] == {"unplug": "d0"}  # ids explicit and unique
    raw = b'[machine]\npreset = "qemu-q35-4G"\n[[step]]\ndimm = "200M"\n[[step]]\nonline = 48\nfails = "EBUSY"\n[[step]]\nunplug = "nope"\n'
    doc = steps.decode(raw)
    assert doc is not None and doc["step"] == [{"dimm": "128M", "node": 0, "id": "d0"}, {"online": 48}]  # a whole block; no injected failure


@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b"[machine\n", b'[machine]\npreset = "nope"\n', b"[[step]]\ndimm = 1\n"])
def test_decode_rejects_what_is_no_scenario(data: bytes) -> None:
    assert steps.decode(data) is None


def test_mutants_are_expressible_scenarios_in_normal_form() -> None:
    """Every mutant parses, round-trips through its bytes, and its simulated trace translates without an obstacle
    on 6.1 and 6.12 (the check ``mhp confirm`` makes)."""
    changed = 0
    for m in mutants(60):
        assert steps.decode(steps.encode(m)) == m
        sc = steps.scenario(m)
        assert len(sc.steps) <= steps.MAX_STEPS
        for kernel in ("6.1", "6.12"):
            events = steps.simulated(m, kernel)
            tr = translate("<mutant>", kernel, [Record(i, 0, 0, ev) for i, ev in enumerate(events)])
            assert tr.obstacle is None, (kernel, tr.obstacle, steps.encode(m).decode())
        changed += m not in seeds()
    assert changed >= 50


def test_mutations_reach_the_lab_actions_and_knobs() -> None:
    """Over many mutants every step kind, several presets, devices and command-line parameters appear."""
    ms = mutants(120, seed=3)
    kinds = {next(iter(s)) for m in ms for s in m["step"]}
    assert kinds == {"dimm", "unplug", "vmem", "online", "offline", "param", "auto_online"}
    assert len({m["machine"]["preset"] for m in ms}) >= 4
    words = {w.partition("=")[0] for m in ms for w in m["kernel"]["cmdline"].split()}
    assert {"memory_hotplug.memmap_on_memory", "movable_node", "memory_hotplug.auto_movable_ratio"} <= words


def test_mutate_is_deterministic_and_leaves_its_input_alone() -> None:
    doc = seeds()[0]
    before = steps.encode(doc)
    a = steps.mutate(doc, random.Random(5))
    b = steps.mutate(doc, random.Random(5))
    assert a == b and steps.encode(doc) == before


def test_aim_ratio_writes_the_ratio_on_the_boundary_of_a_decision() -> None:
    """The input-to-state move: a ratio write before a step at which the step's first auto-movable comparison flips:
    the smallest ratio allowing its movable memory, or one less."""
    from fuzz.mutator import decision_stats

    doc = steps.decode((SCENARIOS / "seed-dimm.toml").read_bytes())
    assert doc is not None
    sides = set()
    for seed in range(10):
        ctx = steps._Ctx(doc, random.Random(seed))
        ctx.aim_ratio()
        out = steps._fixed(ctx.doc)
        at = next(k for k, s in enumerate(out["step"]) if "param" in s)
        ratio = int(out["step"][at]["value"])
        events = steps.simulated(out)
        of_step = steps.step_of_event(events)
        st = next(st for i, st, _ in decision_stats(events) if of_step[i] == at + 1)
        assert ratio * st.kernel_early // 100 == st.limit
        assert steps.boundary_ratio(st) - ratio in (0, 1)
        assert ((ratio - 1) * st.kernel_early // 100 >= st.movable) != (ratio * st.kernel_early // 100 >= st.movable) or (
            ratio * st.kernel_early // 100 >= st.movable
        ) != ((ratio + 1) * st.kernel_early // 100 >= st.movable)
        sides.add(st.limit >= st.movable)
    assert sides == {True, False}


def test_libfuzzer_hooks_work_on_bytes() -> None:
    data = (SCENARIOS / "seed-vmem.toml").read_bytes()
    out = steps.custom_mutator(data, 1 << 16, 11)
    assert steps.decode(out) is not None and out != data
    assert steps.decode(steps.custom_mutator(b"garbage", 1 << 16, 1)) is not None  # garbage: a mutant of the smallest document
    x = steps.custom_crossover(data, (SCENARIOS / "seed-dimm.toml").read_bytes(), 1 << 16, 4)
    assert steps.decode(x) is not None


def test_load_scenario_reads_an_encoded_document(tmp_path: Path) -> None:
    m = mutants(3)[-1]
    (tmp_path / "m.toml").write_bytes(steps.encode(m))
    assert len(load_scenario(tmp_path / "m.toml").steps) == len(m["step"])
