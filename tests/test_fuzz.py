"""The model fuzzer's pieces: verdicts, structure-aware mutation, minimisation, regressions."""

from __future__ import annotations

import errno
import io
import itertools
import json
import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from fuzz.check import STATE_FEATURES, Mode, check_events, check_input, decode, parse_mode, state_feature
from fuzz.minimize import Minimizer
from fuzz.mutator import (
    PARAM_POOLS,
    custom_crossover,
    custom_mutator,
    decision_stats,
    encode,
    fail_and_follow,
    mutate_boot,
    mutate_events,
    new_device,
    on_boundary,
    random_event,
    reconfigure,
    simulate,
    solve_boundary,
    solve_group_term,
)
from replay.cli import main
from replay.model.profiles import get_profile
from replay.replayer import replay_events, replay_file
from tests.test_variants import SEQUENCES
from traces.errors import TraceFormatError
from traces.events import (
    AddFlags,
    AddMemory,
    BootParams,
    GroupRegister,
    GroupUnregister,
    InjectFailure,
    OnlineType,
    Op,
    Param,
    ParamWrite,
    Policy,
    RemoveMemory,
    ZoneType,
)
from traces.reader import TraceReader

ROOT = Path(__file__).resolve().parent.parent
SEEDS = sorted((ROOT / "corpus" / "seeds").glob("*.mhpt"))
REGRESSIONS = sorted(p for p in (ROOT / "corpus" / "regressions").glob("*.mhpt") if not p.name.endswith(".real.mhpt"))  # not mhp confirm's real traces


def test_seeds_are_quiet_on_the_reference_model() -> None:
    for seed in SEEDS:
        hit = check_input(seed.read_bytes(), Mode(), frozenset({"AM-RATIO:state", "AM-RATIO-NODE:state"}))
        assert hit is None, (seed.name, hit)


def test_state_features_number_every_decision_state_once() -> None:
    """zone x online type x policy x ratio band x group kind: each combination its own feature."""
    groups = [None, NS(is_dynamic=False, pages=8), NS(is_dynamic=True, pages=4), NS(is_dynamic=True, pages=8)]
    seen = set()
    for zone, otype, policy, ratio, group in itertools.product(ZoneType, OnlineType, Policy, (0, 50, 200, 301, 400, 2**31), groups):
        k = NS(m=NS(blocks={7: NS(group=group)}, block_pages=4, params=NS(auto_movable_ratio=ratio, online_policy=policy)))
        seen.add(state_feature(k, NS(decisions=[NS(block=7, zone=zone, online_type=otype)])))  # type: ignore[arg-type]
    assert seen == set(range(STATE_FEATURES))


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


def test_mutator_is_deterministic_given_its_seed() -> None:
    data, other = SEEDS[0].read_bytes(), SEEDS[-1].read_bytes()
    for seed in range(40):
        assert custom_mutator(data, 1 << 20, seed, lambda d, n: d) == custom_mutator(data, 1 << 20, seed, lambda d, n: d)
        assert custom_crossover(data, other, 1 << 20, seed) == custom_crossover(data, other, 1 << 20, seed)


def test_mutants_decode_to_the_events_encoded_and_as_the_reader_decodes() -> None:
    """encode/decode round-trip mutants exactly; the plain-trace fast path of decode agrees with
    TraceReader on mutants and on damaged mutants (a flipped byte anywhere)."""
    rng = random.Random(2)
    for i in range(150):
        events = mutate_events(decode(rng.choice(SEEDS).read_bytes()) or [], rng)
        data = encode(events)
        assert decode(data) == events
        bad = bytearray(data)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        for d in (data, bytes(bad), data[: rng.randrange(len(data))]):
            try:
                with TraceReader(io.BytesIO(d)) as r:
                    expected = list(r.events())
            except TraceFormatError:
                expected = None
            assert decode(d) == expected, i


def test_a_remembered_input_decodes_to_a_fresh_list_of_the_same_events() -> None:
    """decode remembers recent small inputs (the mutator reads the mutant the harness just ran):
    each call returns its own list, so a caller that edits it changes nothing for the next."""
    data = encode((decode(SEEDS[0].read_bytes()) or [])[:40])
    first = decode(data)
    assert first is not None
    first.clear()
    again = decode(data)
    assert again is not None and len(again) == 40 and again is not decode(data)
    assert decode(data[:-1]) is None and decode(data[:-1]) is None  # damaged: invalid, remembered or not


def test_a_variant_of_one_profile_s_code_needs_that_profile() -> None:
    """C1 changes CMA accounting, which only profile 7.2 has: elsewhere it would change nothing."""
    assert parse_mode("7.2", "C1", "ref") == Mode("7.2", "C1", "ref")
    assert parse_mode("6.1", "C1", "7.2,6.12").profile == "7.2"
    with pytest.raises(ValueError, match=r"--variant C1 changes code only profile 7\.2 has: give --profile 7\.2"):
        parse_mode("6.1", "C1", "ref")


def test_new_device_registers_a_group_and_adds_a_free_range_into_it() -> None:
    events = decode((ROOT / "corpus" / "seeds" / "seed-vmem.mhpt").read_bytes())
    assert events is not None
    pos = len(events)
    for seed in range(30):
        rng = random.Random(seed)
        dev = new_device(events, pos, rng)
        k = simulate(events)
        assert [type(e) for e in dev] == [GroupRegister, AddMemory]
        assert k.apply(dev[0]).rc == dev[1].nid and dev[1].flags & AddFlags.NID_IS_MGID
        if dev[1].start > max(k.m.blocks) * (128 << 20):  # a free range: the add succeeds (or meets a size rule)
            assert k.apply(dev[1]).rc in (0, -errno.EINVAL)


def test_reconfigure_writes_a_parameter_or_changes_a_boot_parameter() -> None:
    events = decode(SEEDS[0].read_bytes())
    assert events is not None
    pos = next(i for i, e in enumerate(events) if e.KIND != "boot")
    writes = boot = 0
    memmap = set()
    for seed in range(200):
        out = list(events)
        reconfigure(out, pos, random.Random(seed))
        if len(out) == len(events) + 1:
            writes += 1
            assert type(out[pos]) is ParamWrite and out[pos].value in PARAM_POOLS[out[pos].param]
            assert out[:pos] + out[pos + 1 :] == events
        else:
            changed = [i for i, (a, b) in enumerate(zip(events, out, strict=True)) if a != b]
            assert all(type(events[i]) is BootParams for i in changed)
            boot += 1
            memmap |= {out[i].memmap_on_memory for i in changed}
    assert writes > 50 and boot > 80 and 1 in memmap  # 4 run-time knobs, 6 boot ones


def test_parameter_writes_mostly_get_values_of_their_kind() -> None:
    rng = random.Random(4)
    writes = [e for e in (random_event(rng) for _ in range(3000)) if type(e) is ParamWrite]
    typed = sum(e.value in PARAM_POOLS[e.param] for e in writes)
    assert len(writes) > 100 and typed / len(writes) >= 0.7


def test_fail_and_follow_makes_the_add_fail_then_retries_or_tears_down() -> None:
    events = [*SEQUENCES["B1"][:-3], GroupRegister(True, 0, 32768), AddMemory(48 << 27, 2 << 27, 0, AddFlags.NID_IS_MGID)]
    follows = set()
    rcs: list[int] = []
    for seed in range(30):
        out = list(events)
        fail_and_follow(out, len(out) - 1, random.Random(seed))
        inj, add, follow = out[-3:]
        assert type(inj) is InjectFailure and inj.op is Op.REGISTER and inj.block in (48, 49) and add == events[-1]
        rcs.clear()
        simulate(out, lambda i, ev, k, o: rcs.append(o.rc))
        assert rcs[-2] < 0  # the add fails registering a block
        follows.add(type(follow))
        assert follow == add or follow in (RemoveMemory(add.start, add.size), GroupUnregister(add.nid))
    assert follows == {AddMemory, RemoveMemory, GroupUnregister}


def test_compound_moves_reach_failed_registration_sequences() -> None:
    """A new device whose add fails, followed by its group's unregistration, exposes B1."""
    events = decode((ROOT / "corpus" / "seeds" / "seed-vmem.mhpt").read_bytes())
    assert events is not None
    events = events[:40]
    for seed in range(200):
        rng = random.Random(seed)
        out = [*events, *new_device(events, len(events), rng)]
        if type(out[-1]) is not AddMemory:
            continue
        fail_and_follow(out, len(out) - 1, rng)
        hit = check_events(out, Mode("6.1", "B1", "ref"))
        if hit is not None and hit.signature.startswith("DIFF:GroupUnregister"):
            return
    raise AssertionError("no B1 exposure in 200 compound mutants")


def test_mutate_boot_changes_boot_records_only() -> None:
    """One field of one boot record, or a boot state of fuzz.boot_states (tests/test_causes.py)."""
    events = decode(SEEDS[0].read_bytes())
    assert events is not None
    params = 0
    for seed in range(100):
        out = list(events)
        mutate_boot(out, random.Random(seed))
        assert [e for e in out if e.KIND != "boot"] == [e for e in events if e.KIND != "boot"]
        if len(out) == len(events):
            changed = [i for i, (a, b) in enumerate(zip(events, out, strict=True)) if a != b]
            params += any(type(out[i]) is BootParams for i in changed)
    assert params >= 5  # each boot record type is equally likely, whatever its count


@pytest.mark.parametrize("seed", ["seed-dimm", "dimm-manual-mix"])
def test_solve_boundary_lands_a_decision_on_movable_equal_limit(seed: str) -> None:
    """The input-to-state move: the reference model's comparison lands on movable == limit, where
    < and <= disagree (M4 is exposed)."""
    events = decode((ROOT / "corpus" / "seeds" / f"{seed}.mhpt").read_bytes())
    assert events is not None and not on_boundary(events)
    solved = 0
    for s in range(10):
        out = solve_boundary(events, random.Random(s))
        if out is None:
            continue
        solved += 1
        assert any(st.movable == st.limit for _, st, _ in decision_stats(out))
        hit = check_events(out, Mode("6.1", "M4", "ref"))
        assert hit is not None and hit.signature.startswith("DIFF:"), hit
    assert solved >= 5


def test_solve_group_term_grows_a_dynamic_group_whose_movable_memory_earns_nothing() -> None:
    """At a ratio >= 2^31 the kernel's s32 copy cuts every dynamic group's term to 0; the move adds
    enough memory to a second virtio-mem group that gmov * 100 // ratio > 0 at the written ratio (M5
    is exposed). On the plain seed (one dynamic group at ratio 301) there is nothing to solve."""
    events = decode((ROOT / "corpus" / "seeds" / "seed-vmem.mhpt").read_bytes())
    assert events is not None
    events = [e for e in events if e.KIND != "observe"][:60]
    assert solve_group_term(events, random.Random(0)) is None
    base = [*events[:10], ParamWrite(Param.AUTO_MOVABLE_RATIO, str(2**31)), *events[10:20]]
    base += [GroupRegister(True, 0, 32768), AddMemory(64 << 30, 128 << 20, 1, AddFlags.NID_IS_MGID), *events[20:]]
    out = solve_group_term(base, random.Random(0))
    assert out is not None and len(out) == len(base) + 1
    (add,) = [e for e in out if e not in base]
    assert type(add) is AddMemory and add.nid == 1 and add.start >= 64 << 30
    k = simulate(out)
    assert k.m.groups[1].present_movable_pages * 100 // 2**31 > 0
    hit = check_events(out, Mode("6.1", "M5", "ref"))
    assert hit is not None and hit.signature == "DIFF:AddMemory:numbers:M5-vs-ref"


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


def test_the_first_difference_ends_a_differential_check() -> None:
    """6.1 refuses the memmap_on_memory add 6.12 accepts: everything after it is a consequence,
    so ignoring that difference leaves nothing (not the offline's present pages, say)."""
    events = decode((ROOT / "corpus" / "real" / "6.12" / "memmap-on-memory.mhpt").read_bytes())
    assert events is not None
    mode = Mode("6.1", None, "6.12")
    hit = check_events(events, mode)
    assert hit is not None and hit.signature == "DIFF:AddMemory:rc:6.1-vs-6.12"
    assert check_events(events, mode, frozenset({hit.signature})) is None
    assert check_events(events[: hit.index], mode) is None  # nothing before it either


def minimize(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``mhp minimize ARGV``: exit code and the signature it reports (stderr if it failed)."""
    rc = main(["minimize", *argv, "--time", "60"])
    out, err = capsys.readouterr()
    sig = next((line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("signature ")), err)
    return rc, sig


def test_minimize_replays_like_replay_and_keeps_the_trace_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 6.12 trace minimises on 6.12 (its kernel release), and the result replays there by itself."""
    src, out = ROOT / "corpus" / "real" / "6.12" / "ratio-runtime.mhpt", tmp_path / "x.mhpt"
    assert minimize([str(src), "-o", str(out)], capsys) == (0, "AM-RATIO:state")
    with TraceReader(src) as a, TraceReader(out) as b:
        assert b.header.writer == "mhp minimize" and b.header.cmdline == ""  # the original command line no longer holds
        boot = next(ev for ev in b.events() if isinstance(ev, BootParams))
        assert f"auto_movable_ratio={boot.auto_movable_ratio} " in b.header.params  # the parameters the reproducer boots
        same = replace(b.header, writer=a.header.writer, cmdline=a.header.cmdline, params=a.header.params, minor=a.header.minor)
        assert b.header.minor == 1 and same == a.header
    result = replay_file(str(out))
    assert result.profile == "6.12" and "AM-RATIO:state" in result.finding_signatures


def test_minimize_reaches_a_signature_the_trace_hits_later(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = ROOT / "corpus" / "real" / "6.1" / "ratio-runtime.mhpt", tmp_path / "y.mhpt"
    assert minimize([str(src), "-o", str(out), "--signature", "AM-STATIC-MIXED:Normal"], capsys) == (0, "AM-STATIC-MIXED:Normal")
    assert "AM-STATIC-MIXED:Normal" in replay_file(str(out)).finding_signatures
    rc, err = minimize([str(src), "-o", str(out), "--signature", "AM-RATIO:nothing"], capsys)
    assert rc == 2 and "does not produce AM-RATIO:nothing (it hits AM-RATIO:state" in err


def test_minimize_accept_any_reports_the_signature_it_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = ROOT / "corpus" / "real" / "6.1" / "ratio-runtime.mhpt", tmp_path / "z.mhpt"
    rc, sig = minimize([str(src), "-o", str(out), "--accept-any"], capsys)
    hit = check_input(out.read_bytes(), Mode("6.1"))
    assert rc == 0 and hit is not None and sig == hit.signature


def test_fuzz_and_minimize_take_diff_as_two_profiles_or_ref(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_mode("6.1", None, "6.1,6.12") == Mode("6.1", None, "6.12")
    assert parse_mode("6.1", None, "6.12,6.1") == Mode("6.12", None, "6.1")
    assert parse_mode("6.12", "M1", "ref") == Mode("6.12", "M1", "ref")
    for args in ((None, "6.12"), (None, "ref"), (None, "6.1,6.13")):
        with pytest.raises(ValueError):
            parse_mode("6.1", *args)
    assert main(["fuzz", "--diff", "6.12", "--time", "1", "--corpus", str(tmp_path)]) == 2
    assert "give two profiles A,B" in capsys.readouterr().err and not any(tmp_path.iterdir())
    src, out = ROOT / "corpus" / "real" / "6.12" / "memmap-on-memory.mhpt", tmp_path / "d.mhpt"
    assert minimize([str(src), "-o", str(out), "--diff", "6.1,6.12"], capsys) == (0, "DIFF:AddMemory:rc:6.1-vs-6.12")
    rc, err = minimize([str(src), "-o", str(out), "--diff", "6.1,6.12", "--signature", "AM-RATIO:state"], capsys)
    assert rc == 2 and "ends at its first difference" in err


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
    """A model that crashes on an add (the check's Kernel replaced: the model's own modules may be compiled, and
    compiled code calls its functions directly)."""
    from fuzz import check
    from tests.helpers import CrashingKernel

    monkeypatch.setattr(check, "Kernel", CrashingKernel)
    boot = [ev for ev in decode((ROOT / "corpus" / "seeds" / "seed-dimm.mhpt").read_bytes()) or [] if ev.KIND == "boot"]
    hit = check_events([*boot, GroupRegister(False, 0, 8), AddMemory(48 << 27, 1 << 27, 0, AddFlags.NID_IS_MGID)], Mode())
    assert hit is not None and hit.signature == "CRASH:ZeroDivisionError:try_online_node"


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.stem)
def test_regressions_keep_their_signature(path: Path) -> None:
    meta = json.loads(path.with_suffix(".json").read_text())
    mode = Mode(meta["profile"], meta["variant"], meta["diff"])
    hit = check_input(path.read_bytes(), mode, frozenset(meta.get("ignore", [])))  # what it shows past those it hits first
    assert hit is not None and hit.signature == meta["signature"]
    assert meta["note"]
    if not meta["variant"] and not meta["diff"]:  # findings of the reference model replay as findings
        events = decode(path.read_bytes())
        assert events is not None
        assert meta["signature"] in replay_events(events, get_profile(meta["profile"])).finding_signatures
