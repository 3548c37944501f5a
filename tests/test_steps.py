"""fuzz/steps.py: scenario documents as fuzz inputs, every mutant expressible on a real machine."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fuzz import steps
from fuzz.campaign import known_signatures, run
from fuzz.check import Mode, check_input
from fuzz.steps_check import check_doc, check_steps
from fuzz.steps_minimize import StepsMinimizer
from fuzz.steps_triage import confirm_regression, known_step_signatures, prepare_step_seeds, save_step_regression
from replay.cli import main
from replay.replayer import replay_file
from replay.translate import translate
from tests.helpers import require_lab
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


# --- the target: check, harness, minimiser, regressions, confirmation ----------------------------------------------

M4 = Mode("6.1", "M4", "ref")  # the seeded off-by-one at the ratio's boundary, against the reference model
M4_SIG = "DIFF:AddMemory:decision:M4-vs-ref"
TWO_NODE_SEEDS = ("numa-aware", "vmem-two-devices", "seed-vmem", "memoryless-node")


def fuzz_loop(mode: Mode, seed: int, budget: int) -> tuple[int, dict[str, Any]] | None:
    """The harness's loop without libFuzzer: mutate a pool (seeds, then every mutant) and check each mutant; the
    number of mutants until the first hit and its document."""
    rng = random.Random(seed)
    pool = [d for n in TWO_NODE_SEEDS if (d := steps.decode((SCENARIOS / f"{n}.toml").read_bytes())) is not None]
    for k in range(budget):
        m = steps.mutate(rng.choice(pool), rng)
        if check_doc(m, mode) is not None:
            return k + 1, m
        pool.append(m)
    return None


@pytest.fixture(scope="module")
def m4_doc() -> dict[str, Any]:
    found = fuzz_loop(M4, 3, 400)
    assert found is not None
    return found[1]


def test_the_seeds_raise_no_signature_of_the_reference_model_past_their_expected_findings() -> None:
    for p in sorted(SCENARIOS.glob("*.toml")):
        doc = steps.decode(p.read_bytes())
        assert doc is not None
        hit = check_doc(doc, Mode(), frozenset(load_scenario(p).expect_findings) | {"API-MISUSE:remove"})
        assert hit is None or hit.signature.startswith("AM-"), (p.name, hit)  # the ratio oracles: runs dropped may raise them


def test_mutation_finds_the_seeded_boundary_variant_within_a_few_hundred_inputs() -> None:
    found = fuzz_loop(M4, 2, 400)
    assert found is not None, "M4 not found in 400 mutants"
    doc = found[1]
    hit = check_doc(doc, M4)
    assert hit is not None and hit.signature == M4_SIG and steps.obstacle(doc) is None
    ref = check_doc(doc, Mode())  # the reference model alone does not raise it
    assert ref is None or ref.signature != M4_SIG


def test_the_harness_under_libfuzzer_writes_an_expressible_artifact(tmp_path: Path) -> None:
    """fuzz/steps_fuzzer.py with M4 against the reference, bounded by runs (3,000: M4 took 45-555 mutants in-process): it stops at a hit, whose artifact is a
    scenario with the signature that translates without an obstacle. libFuzzer's path depends on the coverage map, so any
    change to the instrumented code moves it: one -seed's 3,000 runs missed M4 once (at 14 exec/s), so up to three
    seeds run, each going on from the corpus the last one grew, until one hits."""
    seeds_dir = tmp_path / "seeds"
    seeds_dir.mkdir()
    for n in TWO_NODE_SEEDS:
        shutil.copy(SCENARIOS / f"{n}.toml", seeds_dir)
    corpus = prepare_step_seeds(tmp_path / "corpus", seeds_dir)
    (tmp_path / "a").mkdir()
    env = {**os.environ, "MHP_FUZZ_VARIANT": "M4", "MHP_FUZZ_DIFF": "ref", "PYTHONHASHSEED": "0"}
    for seed in (3, 7, 11):
        cmd = [sys.executable, str(ROOT / "fuzz" / "steps_fuzzer.py"), "-runs=3000", f"-seed={seed}", f"-artifact_prefix={tmp_path}/a/", str(corpus)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
        arts = list((tmp_path / "a").glob("crash-*"))
        if arts:
            break
    assert len(arts) == 1, proc.stderr[-3000:]
    doc = steps.decode(arts[0].read_bytes())
    assert doc is not None and steps.obstacle(doc) is None
    hit = check_steps(arts[0].read_bytes(), M4)
    assert hit is not None and hit.signature == M4_SIG


def test_the_minimiser_keeps_signature_and_expressibility_and_is_one_minimal(m4_doc: dict[str, Any]) -> None:
    res = StepsMinimizer(M4, M4_SIG, max_seconds=120).run_doc(m4_doc)
    assert res.signature == M4_SIG and res.one_minimal
    assert len(res.doc["step"]) <= len(m4_doc["step"]) and res.doc == steps.decode(steps.encode(res.doc))
    hit = check_doc(res.doc, M4)
    assert hit is not None and hit.signature == M4_SIG
    for kernel in ("6.1", "6.12"):
        assert steps.obstacle(res.doc, kernel) is None
    for i in range(len(res.doc["step"])):  # 1-minimal: without any one step the signature (or expressibility) is gone
        fewer = steps._fixed({**res.doc, "step": res.doc["step"][:i] + res.doc["step"][i + 1 :]})
        h = check_doc(fewer, M4)
        assert h is None or h.signature != M4_SIG or steps.obstacle(fewer) is not None
    words = steps.cmdline_words(res.doc["kernel"]["cmdline"])
    for w in words:  # simplified to a fixed point: every command-line word left is needed
        fewer = {**res.doc, "kernel": {"cmdline": steps.cmdline_text({k: v for k, v in words.items() if k != w})}}
        h = check_doc(fewer, M4)
        assert h is None or h.signature != M4_SIG or steps.obstacle(fewer) is not None


def test_a_steps_regression_is_its_scenario_beside_its_simulated_trace(tmp_path: Path, m4_doc: dict[str, Any]) -> None:
    res = StepsMinimizer(M4, M4_SIG, max_seconds=120).run_doc(m4_doc)
    trace = save_step_regression(tmp_path, M4_SIG, M4, res.doc, "the note")
    name = "STEPS-DIFF_AddMemory_decision_M4-vs-ref"
    assert trace == tmp_path / f"{name}.mhpt"
    assert {p.name for p in tmp_path.iterdir()} == {f"{name}{s}" for s in (".mhpt", ".txt", ".json", ".py.txt", ".toml")}
    meta = json.loads((tmp_path / f"{name}.json").read_text())
    assert meta["expressible"] is True and meta["input"] == "steps" and meta["scenario"] == f"{name}.toml" and meta["signature"] == M4_SIG
    assert known_step_signatures(tmp_path) == {M4_SIG} and known_step_signatures(ROOT / "corpus" / "regressions") <= known_signatures(
        ROOT / "corpus" / "regressions"
    )
    hit = check_input(trace.read_bytes(), Mode(meta["profile"], meta["variant"], meta["diff"]), frozenset(meta["ignore"]))
    assert hit is not None and hit.signature == M4_SIG
    sc = load_scenario(tmp_path / f"{name}.toml")  # the scenario file itself runs (mhp simulate, mhp lab)
    assert sc.name == name and steps.decode((tmp_path / f"{name}.toml").read_bytes()) == res.doc
    for kernel in ("6.1", "6.12"):
        assert translate(str(trace), kernel).obstacle is None  # mhp confirm reads the trace as expressible


def test_a_campaign_triages_a_steps_artifact_into_a_regression(tmp_path: Path, m4_doc: dict[str, Any]) -> None:
    """A crash artifact left in the artifacts folder is minimised and saved (target steps, one run of the harness)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "steps-crash-left-behind").write_bytes(steps.encode(m4_doc))
    summary = run("steps", runs=1, corpus=tmp_path / "c", artifacts=tmp_path / "a", regressions=tmp_path / "r", mode=M4, echo=False, minimize_seconds=60)
    assert list(summary.signatures) == [M4_SIG]
    info = summary.signatures[M4_SIG]
    assert info["file"] == str(tmp_path / "r" / "STEPS-DIFF_AddMemory_decision_M4-vs-ref.mhpt") and 0 < info["events"] <= len(m4_doc["step"])
    assert "steps after minimising" in "\n".join(summary.lines())
    assert {p.name for p in (tmp_path / "a" / "seeds-steps").iterdir()} == {p.name for p in SCENARIOS.glob("*.toml")}


def test_confirm_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--target", "model", "--confirm", "--runs", "1"]) == 2
    assert "give --target steps" in capsys.readouterr().err
    assert main(["fuzz", "--target", "steps", "--confirm", "5.4", "--runs", "1"]) == 2
    assert "--confirm 5.4" in capsys.readouterr().err


def test_confirm_skips_a_kernel_the_lab_lacks(tmp_path: Path, m4_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    trace = save_step_regression(tmp_path / "r", M4_SIG, M4, m4_doc, "note")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))  # no kernel cached there
    verdicts = confirm_regression(trace, ["6.1"])
    assert verdicts["6.1"].startswith("not run: ") and "verdicts" not in json.loads(trace.with_suffix(".json").read_text())


def test_confirm_writes_the_real_kernels_verdict_into_the_regression(tmp_path: Path, m4_doc: dict[str, Any]) -> None:
    """Boots Debian's 6.1 in the lab: the minimised M4 reproducer, the reference model's trace of real-machine
    actions, is confirmed (the real kernel decides as the reference does: it refutes the variant), and the verdict
    goes into the regression's .json with the real trace beside it."""
    require_lab("6.1")
    res = StepsMinimizer(M4, M4_SIG, max_seconds=120).run_doc(m4_doc)
    trace = save_step_regression(tmp_path, M4_SIG, M4, res.doc, "note")
    assert confirm_regression(trace, ["6.1"]) == {"6.1": "confirmed"}
    entry = json.loads(trace.with_suffix(".json").read_text())["verdicts"]["6.1"]
    assert entry["verdict"] == "confirmed" and entry["package"] and (tmp_path / entry["real_trace"]).is_file()
    real = replay_file(str(tmp_path / entry["real_trace"]))
    assert real.error is None and real.divergence_count == 0


def test_a_campaign_with_confirm_asks_the_lab_for_each_new_regression(tmp_path: Path, m4_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """--confirm's path through the campaign: the new regression is confirmed on each kernel given; with no kernel
    cached (an empty cache folder) that is a 'not run' verdict in the summary and nothing in the regression."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "steps-crash-left-behind").write_bytes(steps.encode(m4_doc))
    summary = run("steps", runs=1, corpus=tmp_path / "c", artifacts=tmp_path / "a", regressions=tmp_path / "r", mode=M4, echo=False, confirm=["6.1", "6.12"])
    verdicts = summary.signatures[M4_SIG]["verdicts"]
    assert set(verdicts) == {"6.1", "6.12"} and all(v.startswith("not run: ") for v in verdicts.values())
    assert "; 6.1: not run: " in "\n".join(summary.lines())
    assert "verdicts" not in json.loads((tmp_path / "r" / "STEPS-DIFF_AddMemory_decision_M4-vs-ref.json").read_text())


def test_a_model_crash_while_simulating_is_a_crash_hit_not_a_campaign_crash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The simulation runs the model: where it crashes, the check gets check_events' CRASH hit on the event it crashed
    on, the mutator goes on, and the regression's trace ends with that event."""
    from fuzz import check
    from tests.helpers import CrashingKernel

    monkeypatch.setattr(check, "Kernel", CrashingKernel)  # the check's model and the simulation's (fuzz.steps)
    monkeypatch.setattr(steps, "Kernel", CrashingKernel)
    doc = steps.decode(b'[machine]\npreset = "qemu-q35-4G-2node"\n[[step]]\ndimm = "384M"\nnode = 1\n')
    assert doc is not None
    hit = check_doc(doc, Mode())
    assert hit is not None and hit.signature == "CRASH:ZeroDivisionError:try_online_node"
    assert steps.obstacle(doc) is None  # left for the check to report
    assert steps.decode(steps.encode(steps.mutate(doc, random.Random(1)))) is not None
    res = StepsMinimizer(Mode(), hit.signature, max_seconds=30).run_doc(doc)
    trace = save_step_regression(tmp_path, hit.signature, Mode(), res.doc, "a crash")
    again = check_input(trace.read_bytes(), Mode())
    assert again is not None and again.signature == hit.signature


DAMAGE = b'0123456789-="[]\n Gx'  # bytes that keep TOML close to valid


def test_decode_takes_damaged_scenarios_without_raising() -> None:
    """Byte-level damage to the seeds (what a fuzzer's other mutators or a hand edit give): decode answers a
    normal-form document or None, never an exception."""
    rng = random.Random(13)
    datas = [p.read_bytes() for p in sorted(SCENARIOS.glob("*.toml"))]
    decoded = 0
    for _ in range(400):
        data = bytearray(rng.choice(datas))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            data[at : at + rng.randint(0, 3)] = bytes(rng.choice(DAMAGE) for _ in range(rng.randint(0, 3)))
        doc = steps.decode(bytes(data))
        if doc is not None:
            decoded += 1
            assert steps.decode(steps.encode(doc)) == doc
    assert decoded > 50  # some damage leaves a scenario (82 of 400 with this seed)


def test_mutants_can_be_checked_for_another_kernel() -> None:
    """The lab target fuzzes 6.12 or 7.2 too: ``kernel`` picks the translation that checks the mutants."""
    rng = random.Random(21)
    pool = seeds()
    for _ in range(15):
        m = steps.mutate(rng.choice(pool), rng, kernel="7.2")
        assert steps.obstacle(m, "7.2") is None
        pool.append(m)
    assert steps.obstacle(steps.crossover(pool[-1], pool[0], rng, kernel="6.12"), "6.12") is None
