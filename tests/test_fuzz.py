"""The model fuzzer's pieces: verdicts, structure-aware mutation, minimisation, regressions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from fuzz.check import Mode, check_events, check_input, decode
from fuzz.minimize import Minimizer
from fuzz.mutator import custom_crossover, custom_mutator, encode, mutate_events
from replay.model.profiles import get_profile
from replay.replayer import replay_events
from tests.test_variants import SEQUENCES
from traces.events import AddFlags, AddMemory, GroupRegister

ROOT = Path(__file__).resolve().parent.parent
SEEDS = sorted((ROOT / "corpus" / "seeds").glob("*.mhpt"))
REGRESSIONS = sorted((ROOT / "corpus" / "regressions").glob("*.mhpt"))


def test_seeds_are_quiet_on_the_reference_model() -> None:
    for seed in SEEDS:
        hit = check_input(seed.read_bytes(), Mode(), frozenset({"AM-RATIO:state", "AM-RATIO-NODE:state"}))
        assert hit is None, (seed.name, hit)


def test_mutants_are_almost_all_valid_traces() -> None:
    """The structure-aware mutator keeps >= 90% of mutants decodable (measured over 600 mutants)."""
    rng = random.Random(5)
    valid = total = 0
    for i in range(600):
        data = rng.choice(SEEDS).read_bytes()
        other = rng.choice(SEEDS).read_bytes()
        out = custom_crossover(data, other, 1 << 20, i) if i % 3 == 2 else custom_mutator(data, 1 << 20, i, lambda d, n: d[: n // 2])
        total += 1
        valid += decode(out) is not None
    assert valid / total >= 0.9, valid / total


def test_mutations_change_structure_and_keep_the_snapshot() -> None:
    events = decode(SEEDS[0].read_bytes())
    assert events is not None
    boot = [e for e in events if e.KIND == "boot"]
    rng = random.Random(1)
    changed = 0
    for _ in range(50):
        out = mutate_events(events, rng)
        changed += out != events
        assert sum(e.KIND == "boot" for e in out) >= len(boot) - 4
    assert changed >= 45


@pytest.mark.parametrize("name", ["M1", "M4", "M7", "M9"])
def test_variant_hits_minimise_to_one_minimal_traces(name: str) -> None:
    mode = Mode("6.1", name, "ref")
    hit = check_events(SEQUENCES[name], mode)
    assert hit is not None and hit.signature.startswith("DIFF:")
    res = Minimizer(mode, hit.signature, max_seconds=60).run(SEQUENCES[name])
    assert res.one_minimal and res.signature == hit.signature
    assert len(res.events) <= len(SEQUENCES[name])
    for i in range(len(res.events)):  # 1-minimal: dropping any single event loses the signature
        rest = res.events[:i] + res.events[i + 1 :]
        h = check_events(rest, mode)
        assert h is None or h.signature != hit.signature
    assert check_input(encode(res.events), mode).signature == hit.signature  # type: ignore[union-attr]


def long_failing_trace() -> list:
    """1,000 events: M7's sequence with the seed-vmem trace's requests mixed in before its last event."""
    events = list(SEQUENCES["M7"][:-1])
    rng = random.Random(3)
    pad = [e for e in decode((ROOT / "corpus" / "seeds" / "seed-vmem.mhpt").read_bytes()) or [] if e.KIND == "request"]
    while len(events) < 999:
        events.append(rng.choice(pad))
    return [*events, SEQUENCES["M7"][-1]]


def test_minimising_a_long_failing_trace() -> None:
    """A 1,000-event trace with a late finding shrinks to a handful of events."""
    events = long_failing_trace()
    mode = Mode("6.1", "M7", "ref")
    hit = check_events(events, mode)
    assert hit is not None
    res = Minimizer(mode, hit.signature, max_seconds=120).run(events)
    assert res.one_minimal and len(res.events) <= 12


def test_model_crash_has_its_own_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    from replay.model import add_remove

    monkeypatch.setattr(add_remove, "try_online_node", lambda m, nid: 1 / 0)
    hit = check_events([GroupRegister(False, 0, 8), AddMemory(48 << 27, 1 << 27, 0, AddFlags.NID_IS_MGID)], Mode())
    assert hit is not None and hit.signature == "CRASH:ZeroDivisionError:<lambda>"


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.stem)
def test_regressions_keep_their_signature(path: Path) -> None:
    meta = json.loads(path.with_suffix(".json").read_text())
    mode = Mode(meta["profile"], meta["variant"], meta["diff"])
    hit = check_input(path.read_bytes(), mode)
    assert hit is not None and hit.signature == meta["signature"]
    assert meta["note"]
    if not meta["variant"] and not meta["diff"]:  # findings of the reference model replay as findings
        events = decode(path.read_bytes())
        assert events is not None
        assert meta["signature"] in replay_events(events, get_profile(meta["profile"])).finding_signatures
