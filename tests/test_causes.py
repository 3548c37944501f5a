"""No bug hides behind a known signature: cause fingerprints, suppression by cause, the boot states
the seeds lacked, and variant C1 found as a new cause of a known signature."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest

from fuzz.boot_states import BOOT_STATES, SEEDS, boot_state, write_seeds
from fuzz.campaign import DEFAULT_IGNORE, Summary, _triage, run
from fuzz.cause import Cause, Known, booted, fingerprint, known_ignores, main
from fuzz.check import Hit, Mode, check_events, decode
from fuzz.hold import REREAD_EVERY, Holder
from fuzz.mutator import encode, mutate_boot
from fuzz.path import known_paths, pathed, plain, within
from traces.events import EVENT_TYPES, AddFlags, AddMemory, BootZone, GroupRegister, ZoneType

ROOT = Path(__file__).resolve().parent.parent
REGRESSIONS = ROOT / "corpus" / "regressions"
SEED_DIR = ROOT / "corpus" / "seeds"
C1 = Mode("7.2", "C1")
BLOCK = 128 << 20


def events_of(path: Path) -> list:
    events = decode(path.read_bytes())
    assert events is not None
    return events


def meta_of(name: str) -> dict:
    return json.loads((REGRESSIONS / f"{name}.json").read_text())


def states_of(events: list, profile: str) -> set[str]:
    """The fuzz.boot_states states a snapshot is in."""
    m = booted(events, profile)
    zones = [z for n in m.nodes.values() for z in n.zones]
    found = {
        "cma": any(z.cma_pages for z in zones if z.idx is not ZoneType.MOVABLE),
        "movable-at-boot": any(z.present_early_pages for z in zones if z.idx is ZoneType.MOVABLE),
        "boot-group": bool(m.groups),
        "offline-boot-block": any(b.state.name == "OFFLINE" for b in m.blocks.values()),
    }
    return {k for k, v in found.items() if v}


# --- the fingerprint ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("meta", sorted(REGRESSIONS.glob("*.json")), ids=lambda p: p.stem)
def test_every_regression_stores_the_cause_its_trace_has(meta: Path) -> None:
    """``python -m fuzz.cause`` wrote each regression's cause; recomputing it gives the same."""
    doc = json.loads(meta.read_text())
    mode = Mode(doc["profile"], doc["variant"], doc["diff"])
    cause = fingerprint(events_of(meta.with_suffix(".mhpt")), mode, doc["signature"], frozenset(doc["ignore"]))
    assert Cause.from_json(doc["cause"]) == cause
    assert cause.events and set(cause.events) <= {cls.__name__ for cls in EVENT_TYPES.values() if cls.KIND in ("request", "inject")}


def test_no_two_regressions_of_a_signature_share_a_cause() -> None:
    """Among the trace regressions and among the expressible (steps) ones: a steps regression may reproduce a trace
    regression's cause on a real machine (quirk Q1's AM-RATIO:state is both)."""
    metas = [json.loads(p.read_text()) for p in sorted(REGRESSIONS.glob("*.json"))]
    keys = [(bool(m.get("expressible")), m["signature"], Cause.from_json(m["cause"]).key()) for m in metas]
    assert len(keys) == len(set(keys))


def test_the_decision_path_names_the_branch_the_checks_and_the_terms() -> None:
    """The understated DIMM: a static group asked about 1 page, the system check passed, the block went
    Movable; the ratio 0 case takes the policy's early return; a variant's rc difference decides no zone."""
    assert Cause.from_json(meta_of("AM-RATIO_movable-decision")["cause"]) == Cause("static:Movable:pass:under", ("block",), (), ("AddMemory", "GroupRegister"))
    state = Cause.from_json(meta_of("AM-RATIO_state")["cause"])
    assert state.path == "ratio-0:Normal:-:-" and state.broken_by == "type-online_movable:Movable:-"
    assert state.key()[0] == state.broken_by  # a state finding: what broke the ratio, not the branch meeting it
    assert Cause.from_json(meta_of("DIFF_OfflineBlock_rc_M7-vs-ref")["cause"]).path == "OfflineBlock:ok"


def test_within_keeps_branch_and_zone_and_adds_no_term() -> None:
    assert within("static:Normal:global-:under", "static:Normal:node-:under,gmov")
    assert not within("static:Movable:pass:under", "static:Movable:pass:cma")  # the minimiser may not trade CMA for a shrunk group
    assert not within("dynamic:Movable:pass:-", "static:Movable:pass:-")
    assert within("OfflineBlock:ok", "OfflineBlock:ok") and not within("OfflineBlock:ok", "OfflineBlock:fail")


def test_ignore_entries_with_a_path_skip_that_path_only() -> None:
    events = events_of(REGRESSIONS / "AM-RATIO_movable-decision.mhpt")
    sig = "AM-RATIO:movable-decision"
    hit = check_events(events, Mode())
    assert hit is not None and hit.signature == sig and hit.path == "static:Movable:pass:under"
    assert check_events(events, Mode(), frozenset({pathed(sig, hit.path)})) is None
    other = check_events(events, Mode(), frozenset({pathed(sig, "static:Movable:pass:cma")}))
    assert other is not None and other.signature == sig
    assert known_paths(frozenset({pathed(sig, "a"), pathed(sig, "b"), "X"})) == {sig: frozenset({"a", "b"})}
    assert plain({pathed(sig, "a"), "X"}) == {sig, "X"}


def test_the_campaign_knows_every_regression_by_its_paths() -> None:
    entries = known_ignores(REGRESSIONS)
    assert pathed("AM-RATIO:movable-decision", "static:Movable:pass:under") in entries
    assert not {e for e in entries if " @ " not in e}  # every regression has its cause: no signature ignored whole


def test_a_boot_feature_counts_only_where_the_finding_needs_it() -> None:
    """CMA given to a regression that does not need it is no part of its cause; C1's reproducer needs it."""
    events = [e._replace(cma=512) if type(e) is BootZone else e for e in events_of(REGRESSIONS / "AM-RATIO_movable-decision.mhpt")]
    assert "cma" not in fingerprint(events, Mode("7.2"), "AM-RATIO:movable-decision").boot
    seed = events_of(SEED_DIR / "seed-vmem.cma.mhpt")
    cause = fingerprint(seed, C1, "AM-RATIO:movable-decision", frozenset(known_ignores(REGRESSIONS)))
    assert cause.boot == ("cma",) and "cma" in cause.tip and cause.path.endswith(":cma")


def test_recomputing_causes_rewrites_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for suffix in (".mhpt", ".json"):
        shutil.copy(REGRESSIONS / f"AM-RATIO_state{suffix}", tmp_path)
    doc = json.loads((tmp_path / "AM-RATIO_state.json").read_text())
    del doc["cause"]
    (tmp_path / "AM-RATIO_state.json").write_text(json.dumps(doc))
    assert main([str(tmp_path / "AM-RATIO_state.json")]) == 0
    assert json.loads((tmp_path / "AM-RATIO_state.json").read_text())["cause"] == meta_of("AM-RATIO_state")["cause"]
    assert main([str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m fuzz.cause: ") and "missing.json" in err[0]


# --- suppression by cause ----------------------------------------------------------------------------------------


def test_a_known_cause_on_a_new_path_is_minimised_and_suppressed(tmp_path: Path) -> None:
    """The understated DIMM (a static group of 1 page) on a machine a virtio-mem device filled up to the
    ratio: a new path (the device's requirement and movable pages in play), the known cause once minimised."""
    events = events_of(SEED_DIR / "seed-vmem.mhpt")  # with its observations: the minimiser drops them first
    events += [GroupRegister(False, 0, 1), AddMemory(204 * BLOCK, BLOCK, 1, AddFlags.NID_IS_MGID)]
    art = tmp_path / "crash-noisy"
    art.write_bytes(encode(events))
    regs = tmp_path / "r"
    shutil.copytree(REGRESSIONS, regs)
    known = Known.load(regs).ignores() | set(DEFAULT_IGNORE)
    hit = check_events(events, Mode(), frozenset(known))
    assert hit is not None and hit.signature == "AM-RATIO:movable-decision" and hit.path == "static:Movable:pass:under,req,gmov"
    summary = Summary("model", "profile 6.1")
    _triage(art, "model", Mode(), summary, regs, known, 0.0, 30)
    assert summary.signatures == {} and summary.known_causes == {"AM-RATIO:movable-decision": 1, "AM-RATIO-NODE:movable-decision": 1}
    assert sorted(p.name for p in regs.iterdir()) == sorted(p.name for p in REGRESSIONS.iterdir())  # nothing saved
    assert check_events(events, Mode(), frozenset(known)) is None  # the harness skips both paths from now on
    assert summary.lines()[-1] == "known cause (suppressed): AM-RATIO-NODE:movable-decision x1, AM-RATIO:movable-decision x1"


def test_a_known_signature_on_a_new_path_is_held_and_the_harness_goes_on(tmp_path: Path) -> None:
    """fuzz/hold.py: the harness writes such an input beside the crash artifacts and skips that
    (signature, path) from then on; a signature the regressions lack is not held (it crashes)."""
    events = [*events_of(SEED_DIR / "seed-vmem.mhpt"), GroupRegister(False, 0, 1), AddMemory(204 * BLOCK, BLOCK, 1, AddFlags.NID_IS_MGID)]
    data = encode(events)
    ignore_file = tmp_path / "ignore.txt"
    ignore_file.write_text("\n".join(sorted(Known.load(REGRESSIONS).ignores() | set(DEFAULT_IGNORE))) + "\n")
    holder = Holder(str(ignore_file), f"{tmp_path}/steps-")
    held = []
    while (hit := check_events(events, Mode(), holder.current())) is not None:
        assert holder.hold(data, hit)
        held.append(pathed(hit.signature, hit.path))
    assert [h.partition(" @ ")[0] for h in held] == ["AM-RATIO:movable-decision", "AM-RATIO-NODE:movable-decision"]
    assert [p.name for p in tmp_path.glob("steps-held-*")] == [f"steps-held-{hashlib.sha1(data).hexdigest()}"]
    assert not Holder(None, f"{tmp_path}/").hold(data, Hit("AM-RATIO:movable-decision", 0, "", "static:Movable:pass:under,req,gmov"))
    assert not Holder(str(ignore_file), None).hold(data, Hit("AM-RATIO:movable-decision", 0, "", "static:Movable:pass:under,req,gmov"))
    ignore_file.write_text("AM-RATIO:movable-decision\n")  # the campaign learned more: read at the next look
    os.utime(ignore_file, ns=(0, 0))
    for _ in range(REREAD_EVERY):
        entries = holder.current()
    assert entries == frozenset({"AM-RATIO:movable-decision", *held})


@pytest.fixture(scope="module")
def c1_campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Summary]:
    """C1 (CMA counted as kernel memory) under a 200-run campaign on 7.2 with every regression known."""
    d = tmp_path_factory.mktemp("c1")
    shutil.copytree(REGRESSIONS, d / "r")
    summary = run("model", runs=200, seconds=None, corpus=d / "c", artifacts=d / "a", regressions=d / "r", mode=C1, echo=False, minimize_seconds=30)
    return d, summary


def test_c1_is_reported_as_a_new_cause_of_a_known_signature(c1_campaign: tuple[Path, Summary]) -> None:
    _, summary = c1_campaign
    assert "AM-RATIO:movable-decision" in {json.loads(p.read_text())["signature"] for p in REGRESSIONS.glob("*.json")}  # known
    new = {k: v for k, v in summary.signatures.items() if v["signature"] == "AM-RATIO:movable-decision"}
    assert new and all(k.startswith("AM-RATIO:movable-decision__cause-") and v["known_signature"] for k, v in new.items()), summary.signatures
    for info in new.values():
        assert "cma" in info["cause"]["tip"] and info["cause"]["boot"] == ["cma"]
        saved = Path(info["file"])
        assert saved.name.startswith("AM-RATIO_movable-decision__cause-")
        meta = json.loads(saved.with_suffix(".json").read_text())
        assert meta["signature"] == "AM-RATIO:movable-decision" and meta["cause"] == info["cause"] and meta["variant"] == "C1"
        hit = check_events(events_of(saved), C1, frozenset(meta["ignore"]))
        assert hit is not None and hit.signature == "AM-RATIO:movable-decision"
        assert check_events(events_of(saved), Mode("7.2"), frozenset(meta["ignore"])) is None  # the reference model is right there
    text = "\n".join(summary.lines())
    assert "new cause of a known signature" in text and "AM-RATIO:movable-decision__cause-" in text
    d, _ = c1_campaign  # the harness held those hits and went on: one libFuzzer run did the 200 inputs
    assert len((d / "a" / "campaigns.jsonl").read_text().splitlines()) == 1 and list((d / "a").glob("held-*"))


def test_a_saved_cause_is_not_saved_again(c1_campaign: tuple[Path, Summary]) -> None:
    """Every artifact of the C1 campaign, triaged again against the regressions it left: all known causes."""
    d, _ = c1_campaign
    before = sorted(p.name for p in (d / "r").iterdir())
    known = Known.load(d / "r").ignores() | set(DEFAULT_IGNORE)
    summary = Summary("model", C1.describe())
    for art in sorted([*(d / "a").glob("crash-*"), *(d / "a").glob("held-*")]):
        _triage(art, "model", C1, summary, d / "r", known, 0.0, 30)
    assert summary.signatures == {} and sorted(p.name for p in (d / "r").iterdir()) == before


# --- boot states -------------------------------------------------------------------------------------------------


def test_the_boot_state_seeds_are_what_the_script_writes(tmp_path: Path) -> None:
    for base in {b for b, _, _ in SEEDS}:
        shutil.copy(SEED_DIR / f"{base}.mhpt", tmp_path)
    written = write_seeds(tmp_path)
    assert [p.name for p in written] == [f"{b}.{n}.mhpt" for b, n, _ in SEEDS]
    for p in written:
        assert p.read_bytes() == (SEED_DIR / p.name).read_bytes(), p.name


@pytest.mark.parametrize(("base", "name", "profile"), SEEDS, ids=lambda x: str(x))
def test_each_boot_state_seed_boots_and_is_quiet_on_the_reference(base: str, name: str, profile: str) -> None:
    events = events_of(SEED_DIR / f"{base}.{name}.mhpt")
    assert states_of(events, profile) == {name} and states_of(events_of(SEED_DIR / f"{base}.mhpt"), profile) == set()
    for mode in (Mode(), Mode(profile)):
        assert check_events(events, mode, frozenset({"AM-RATIO:state", "AM-RATIO-NODE:state"})) is None


def test_mutate_boot_produces_every_boot_state() -> None:
    events = events_of(SEED_DIR / "seed-dimm.mhpt")
    seen = set()
    for s in range(200):
        out = list(events)
        mutate_boot(out, random.Random(s))
        try:
            seen |= states_of(out, "7.2")
        except ValueError:  # a one-field change may make the snapshot impossible
            continue
    assert seen == set(BOOT_STATES)


def test_a_mutated_cma_state_exposes_c1_past_every_known_cause() -> None:
    """seed-vmem with CMA from the mutator (not the committed seed): C1 hits the known signature on a new path."""
    events = events_of(SEED_DIR / "seed-vmem.mhpt")
    known = frozenset(known_ignores(REGRESSIONS))
    assert check_events(events, C1, known) is None
    hits = []
    for s in range(20):
        out = boot_state(events, random.Random(s), "cma")
        assert out is not None
        hit = check_events(out, C1, known)
        if hit is not None:
            hits.append(hit)
        assert check_events(out, Mode("7.2"), frozenset({"AM-RATIO:state", "AM-RATIO-NODE:state"})) is None
    assert any(h.signature == "AM-RATIO:movable-decision" for h in hits) and all(h.path.endswith("cma") for h in hits), hits
