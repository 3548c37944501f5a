"""``mhp fuzz --target lab``: the oracle on stored real traces, findings saved as refuted regressions, bad input as one
line; in the lab: a restored snapshot shows the boot state, and a short campaign with a seeded variant finds it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from fuzz import steps
from fuzz.lab import LabOutcome, LabSummary, campaign, decision_text, divergence_signature, judge, save_lab_regression, take
from replay.cli import main
from replay.replayer import replay_file
from tests.helpers import require_lab
from traces.lab.initramfs import build_initramfs
from traces.lab.qemu import GuestConfig
from traces.lab.run import LabRun
from traces.lab.setup import cached_kernel
from traces.lab.snapshot import RestoredGuest, ensure_snapshot, snapshot_key
from traces.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "corpus" / "scenarios"
REAL = ROOT / "corpus" / "real" / "6.12"
OBSERVED = ROOT / "corpus" / "observed" / "lab" / "6.12"
M2_SIGNATURE = "LAB:decision:add_memory:valid_zones:M2"


def outcome(name: str, variants: frozenset[str], obs: dict[str, Any] | None = None) -> LabOutcome:
    """The verdict fields of a stored lab run (the real trace and the host's samples of corpus scenario ``name``)."""
    doc = steps.decode((SCENARIOS / f"{name}.toml").read_bytes())
    assert doc is not None
    out = LabOutcome(name, doc, "6.12", package="linux-image-6.12.117+deb12-amd64 6.12.117-1~deb12u1")
    judge(out, str(REAL / f"{name}.mhpt"), obs or json.loads((OBSERVED / f"{name}.json").read_text()), variants)
    out.real = (REAL / f"{name}.mhpt").read_bytes()
    return out


# --- the oracle, on real traces already recorded ------------------------------------------------------------------


def test_a_seeded_variant_diverges_from_the_real_kernel_at_its_decision() -> None:
    out = outcome("seed-vmem", frozenset({"M2"}))
    assert out.error is None and out.divergence is not None and out.divergence_count > 0
    assert divergence_signature(out.divergence, "M2") == M2_SIGNATURE
    assert out.divergence["groups"][0]["dynamic"] and out.divergence["numbers"][0]["group_kernel"] == 0  # the credit M2 drops
    assert out.reference is None  # the reference model agrees with the kernel all along
    text = decision_text(out, "M2")
    assert text.startswith("M2 (dynamic-group credit dropped") and "model 'Normal', kernel 'Movable'" in text
    assert text.endswith("the reference model agrees with the kernel here: the variant's decision")


def test_a_divergence_the_reference_model_shares_is_not_the_variants() -> None:
    out = outcome("seed-vmem", frozenset({"M2"}))
    assert out.divergence is not None
    out.reference = {**out.divergence, "index": 40}
    assert decision_text(out, "M2").endswith("the reference model diverges earlier, at event 40: the model's, not the variant's")
    out.reference = out.divergence
    assert decision_text(out, "M2").endswith("the reference model diverges here too: the model's, not the variant's")


def test_the_reference_model_agrees_with_the_real_kernel() -> None:
    out = outcome("seed-vmem", frozenset())
    assert out.error is None and out.divergence is None and out.divergence_count == 0
    assert {"AddMemory 13: block ONLINE MOVABLE", "AddMemory 13: block ONLINE NORMAL"} <= set(out.features)  # after virtio-mem's hot-adds


def test_a_run_whose_recorder_and_host_disagree_is_no_finding() -> None:
    obs = json.loads((OBSERVED / "seed-vmem.json").read_text())
    obs["results"][1]["blocks"]["48"]["zones"] = "Normal"  # the host saw another zone than the recorder at step 2's mark
    out = outcome("seed-vmem", frozenset({"M2"}), obs)
    assert out.divergence is None and out.error is not None and "disagree" in out.error and "memory48" in out.error


def test_a_divergence_is_saved_as_a_refuted_regression(tmp_path: Path) -> None:
    out = outcome("seed-vmem", frozenset({"M2"}))
    trace = save_lab_regression(tmp_path, M2_SIGNATURE, out, "M2")
    meta = json.loads(trace.with_suffix(".json").read_text())
    assert meta["signature"] == M2_SIGNATURE and meta["variant"] == "M2" and meta["profile"] == "6.12"
    verdict = meta["verdicts"]["6.12"]
    assert verdict["verdict"] == "refuted" and verdict["real_trace"] == trace.name and verdict["divergence"] == out.divergence
    assert meta["decision"] == decision_text(out, "M2")
    assert load_scenario(trace.with_suffix(".toml")).devices[0].id == "vm0"
    again = replay_file(str(trace), variants=frozenset({"M2"}))
    assert again.divergences[0].to_json() == out.divergence
    assert replay_file(str(trace)).divergence_count == 0


def test_a_finding_is_kept_as_found_when_minimising_it_fails(tmp_path: Path) -> None:
    """A minimiser that raises (a bug in one of its runs) costs the campaign nothing: the finding is saved as found, the
    error is counted, and the campaign goes on."""
    out = outcome("seed-vmem", frozenset({"M2"}))
    summary = LabSummary("6.12", "M2", True, 1)

    def broken(found: LabOutcome, signature: str) -> tuple[LabOutcome, dict[str, Any] | None]:
        raise RuntimeError("a bug in a candidate's run")

    take(summary, out, 1.0, tmp_path / "regressions", tmp_path / "corpus", [], set(), broken)
    assert list(summary.signatures) == [M2_SIGNATURE] and "minimized" not in summary.signatures[M2_SIGNATURE]
    assert summary.errors == [f"seed-vmem: minimising {M2_SIGNATURE}: RuntimeError: a bug in a candidate's run"]
    meta = json.loads((tmp_path / "regressions" / f"{M2_SIGNATURE.replace(':', '_')}_6.12.json").read_text())
    assert "minimized" not in meta and meta["verdicts"]["6.12"]["divergence"] == out.divergence


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kernel", "9.9"], "--kernel 9.9: expected one of 6.1, 6.12, 7.2"),
        (["--variant", "M99"], "M99"),
        (["--variant", "M2", "--diff", "ref"], "--diff: the lab target compares the model with the real kernel"),
    ],
)
def test_bad_arguments_are_one_line(extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--target", "lab", "--runs", "1", "--corpus", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mhp fuzz: ") and message in err


def test_a_bad_corpus_file_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.toml").write_text('name = "bad"\n[machine]\npreset = "no-such-machine"\n')
    assert main(["fuzz", "--target", "lab", "--runs", "1", "--corpus", str(tmp_path), "--regressions", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'bad.toml'}: line 3: machine.preset" in err and "no-such-machine" in err
    assert not (tmp_path / "r").exists()


# --- in the lab -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("snapshots")


def test_a_restored_snapshot_shows_the_boot_state(snapshots: Path) -> None:
    require_lab("6.12")
    sc = load_scenario(SCENARIOS / "seed-vmem.toml")
    kp = cached_kernel("6.12")
    cfg = GuestConfig(kp.vmlinuz, build_initramfs(kp), sc.machine, sc.cmdline, tuple(sc.devices))
    snap = ensure_snapshot(cfg, sc, snapshots)
    assert snap.created and snap.path.name == f"{snapshot_key(cfg)}.mig"
    observed = json.loads((OBSERVED / "seed-vmem.json").read_text())["results"][0]
    assert snap.boot["blocks"] == observed["blocks"] and snap.boot["params"] == observed["params"]  # a fresh boot's layout
    assert not ensure_snapshot(cfg, sc, snapshots).created  # the second time it comes from the cache
    randoms = []
    for _ in range(2):
        with RestoredGuest(snap) as g:
            assert LabRun(g, sc).settled() == snap.boot  # blocks, zones (present and managed pages), parameters
            rc, out = g.agent("date +%s; head -c 16 /dev/urandom | od -An -tx1")
            assert rc == 0
            clock, rand = out.split("\n", 1)
            assert abs(int(clock) - time.time()) < 30  # the guest's clock was set from the host's, not the snapshot's
            randoms.append(rand)
    assert randoms[0] != randoms[1]  # vmgenid: the kernel reseeded its random generator on each restore


def m2_campaign(tmp_path: Path, resizes: tuple[str, ...], **options: Any) -> LabSummary:
    """A 6.12 campaign of variant M2 from one seed: seed-vmem's device resized to ``resizes`` in turn; its snapshots
    in ``tmp_path`` (none yet: the first input's guest boots, saves its snapshot, runs on)."""
    require_lab("6.12")
    doc = steps.decode((SCENARIOS / "seed-vmem.toml").read_bytes())
    assert doc is not None
    doc["step"] = [{"vmem": "vm0", "size": size} for size in resizes]
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "vmem.toml").write_bytes(steps.encode(doc))
    dirs = {name: tmp_path / name for name in ("corpus", "regressions")}
    return campaign("6.12", seconds=None, variant="M2", seeds=[tmp_path / "seeds"], snapshot_dir=tmp_path / "snapshots", echo=False, **dirs, **options)


def test_a_lab_campaign_finds_a_seeded_variant(tmp_path: Path) -> None:
    s = m2_campaign(tmp_path, ("14G",), runs=2, mutate=steps.mutate, stop_on_first=True)  # one resize past 12 GiB: the kernel mixes in Normal blocks
    assert s.errors == [] and s.inputs == 1 and s.snapshots_made == 1  # the first input finds it, and the campaign stops
    assert len(list((tmp_path / "snapshots").glob("*.mig"))) == 1
    assert list(s.signatures) == [M2_SIGNATURE]
    meta = json.loads((tmp_path / "regressions" / f"{M2_SIGNATURE.replace(':', '_')}_6.12.json").read_text())
    assert meta["verdicts"]["6.12"]["verdict"] == "refuted" and meta["decision"].startswith("M2 (")
    assert "the variant's decision" in meta["decision"]


def test_a_lab_finding_is_saved_minimised(tmp_path: Path) -> None:
    """Four resizes that M2 diverges on (the campaign found them so): the campaign shrinks them on the kernel to the
    steps that keep the divergence, and the regression it saves is the small one."""
    s = m2_campaign(tmp_path, ("12G", "14G", "6G", "16G"), runs=1, mutate=None, minimize_runs=12)
    assert s.errors == [] and list(s.signatures) == [M2_SIGNATURE]
    how = s.signatures[M2_SIGNATURE]["minimized"]
    assert how["steps"][0] == 4 and 1 <= how["steps"][1] < 4 and 1 <= how["lab_runs"] <= 12 and how["one_minimal"]
    saved = tmp_path / "regressions" / f"{M2_SIGNATURE.replace(':', '_')}_6.12"
    meta = json.loads(Path(f"{saved}.json").read_text())
    assert meta["minimized"] == how
    assert len(load_scenario(Path(f"{saved}.toml")).steps) == how["steps"][1]
    res = replay_file(f"{saved}.mhpt", profile="6.12", variants=frozenset({"M2"}))
    first = next(d for d in res.divergences if d.kind != "loss").to_json()
    assert divergence_signature(first, "M2") == M2_SIGNATURE  # the saved real trace is the minimised run's


# --- the lab's regressions ------------------------------------------------------------------------------------------

LAB_REGRESSIONS = sorted((ROOT / "corpus" / "regressions" / "lab").glob("*.json"))


def test_every_lab_regression_replays_to_its_refuted_verdict() -> None:
    """Each regression a lab campaign saved: its real trace still diverges where its verdict says (with its variant, if
    any), under the signature it was saved with, and its scenario still reads."""
    assert LAB_REGRESSIONS
    for path in LAB_REGRESSIONS:
        meta = json.loads(path.read_text())
        verdict = meta["verdicts"][meta["profile"]]
        assert verdict["verdict"] == "refuted" and meta["decision"] in meta["note"]
        variants = frozenset({meta["variant"]}) if meta["variant"] else frozenset()
        res = replay_file(str(path.with_name(verdict["real_trace"])), profile=meta["profile"], variants=variants)
        first = next(d for d in res.divergences if d.kind != "loss").to_json()
        assert divergence_signature(first, meta["variant"]) == meta["signature"], path.name
        assert (first["index"], first["mismatches"]) == (verdict["divergence"]["index"], verdict["divergence"]["mismatches"]), path.name
        load_scenario(path.with_name(meta["scenario"]))
