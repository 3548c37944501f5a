"""Outcomes the model cannot know: offlining kernel-zone and boot memory (unmovable allocations decide).

simulate marks such a step and computes what follows for the kernel's answer (``fails``) or for success;
replay takes the kernel's result as that answer.
"""

from __future__ import annotations

import errno
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from replay.cli import main
from replay.model.outcome import Unknowable
from replay.model.profiles import get_profile
from replay.replayer import replay_events
from replay.simulate import Simulation, StepResult, simulate
from tests.helpers import BP, OFFLINE_AUTO, boot
from traces.events import Attr, BlockObserved, BlockState, BootBlocks, BootMachine, BootZone, OfflineBlock, OnlineBlock, OnlineType, Result, Source, ZoneType
from traces.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "corpus" / "scenarios"
KERNEL = "memhp_default_state=online memory_hotplug.online_policy=auto-movable memory_hotplug.auto_movable_ratio=301"


def run(steps: str, profile: str = "6.1") -> list[StepResult]:
    text = f'name = "u"\n[machine]\npreset = "qemu-q35-4G"\n[kernel]\ncmdline = "{KERNEL}"\n{steps}'
    return list(simulate(parse_scenario(tomllib.loads(text), "u.toml", text), profile))


def zone_of(res: StepResult, block: int) -> str | None:
    return next((r.zone or r.state for r in res.runs if r.first <= block <= r.last), None)


@pytest.mark.parametrize("profile", ["6.1", "6.12", "7.2"])
def test_offlining_boot_normal_memory_is_marked_and_assumed_to_succeed(profile: str) -> None:
    _, res = run("[[step]]\noffline = 40\n", profile)
    (u,) = res.unknowable
    assert (u.block, u.op, u.answer) == (40, "offline", 0) and "Normal" in u.reason
    assert res.rc == 0 and zone_of(res, 40) == "offline"
    assert u.to_json() == {"block": 40, "op": "offline", "reason": u.reason, "answer": None, "assumed": "success"}


def test_the_kernel_s_answer_decides_what_follows() -> None:
    """fails = "EBUSY": marked, with the answer; block 40 stays online in Normal."""
    _, res = run('[[step]]\noffline = 40\nfails = "EBUSY"\n')
    (u,) = res.unknowable
    assert u.answer == -errno.EBUSY and u.to_json()["answer"] == "EBUSY" and u.to_json()["assumed"] is None
    assert res.rc == -errno.EBUSY and res.errno == "EBUSY" and zone_of(res, 40) == "Normal"


def test_hot_added_movable_memory_offlines_as_the_model_says() -> None:
    """A DIMM in ZONE_MOVABLE takes movable allocations only: no mark. Its answer, if given, is used all the same."""
    _, _, plain, failed = run('[[step]]\ndimm = "1G"\n[[step]]\noffline = 50\n[[step]]\noffline = 51\nfails = "EBUSY"\n')
    assert plain.unknowable == [] and zone_of(plain, 50) == "offline"
    assert failed.unknowable == [] and failed.rc == -errno.EBUSY and zone_of(failed, 51) == "Movable"


def test_offlines_the_kernel_refuses_before_isolation_are_no_unknowns() -> None:
    """Block 0 spans DMA and DMA32 (zone NULL: -EINVAL), block 15 has holes (-EINVAL): the model knows."""
    _, zero, fifteen = run("[[step]]\noffline = 0\n[[step]]\noffline = 15\n")
    assert (zero.rc, zero.unknowable, fifteen.rc, fifteen.unknowable) == (-errno.EINVAL, [], -errno.EINVAL, [])


def test_boot_memory_in_zone_movable_is_unknown_until_it_was_offline_once() -> None:
    """Early ZONE_MOVABLE memory (kernelcore=/movablecore=) may hold memblock allocations; once offlined
    and onlined again it holds only what the buddy allocator put there."""
    k = boot(
        [
            BootMachine(BP * 4096, 1, 1),
            BootZone(0, ZoneType.NORMAL, 32 * BP, 8 * BP, 8 * BP, 8 * BP, 0),
            BootZone(0, ZoneType.MOVABLE, 40 * BP, 8 * BP, 8 * BP, 8 * BP, 0),
            BootBlocks(32, 8, 0, BlockState.ONLINE, ZoneType.NORMAL, True, -1, 0, BP),
            BootBlocks(40, 8, 0, BlockState.ONLINE, ZoneType.MOVABLE, True, -1, 0, BP),
        ],
        OFFLINE_AUTO,
    )
    first = k.apply(OfflineBlock(47, Attr.STATE, Source.USER))
    assert first.rc == 0 and [u.reason for u in first.unknowable] == ["online since boot: memblock allocations may hold the block"]
    assert k.apply(OnlineBlock(47, OnlineType.ONLINE_MOVABLE, Attr.STATE, Source.USER)).rc == 0
    again = k.apply(OfflineBlock(47, Attr.STATE, Source.USER))
    assert again.rc == 0 and again.unknowable == ()


def test_simulate_json_reports_parameters_block_size_zones_errno_and_marks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(SCENARIOS / "offline-reonline.toml"), "--json", "--profile", "6.12"]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    assert all(s["block_size"] == 128 << 20 for s in steps)
    assert steps[0]["params"] == {
        "online_policy": "auto-movable",
        "auto_movable_ratio": "301",
        "auto_movable_numa_aware": "Y",
        "memmap_on_memory": "N",
        "auto_online_blocks": "online",
    }
    marked = [s["step"] for s in steps if s["unknowable"]]
    assert marked == [4]  # offline=40 from Normal; step 7 offlines it again from Movable, where step 5 onlined it
    assert all(s["errno"] is None for s in steps) and all("managed" in z and "present" in z for s in steps for z in s["zones"])


def offline_40_failed() -> list[Any]:
    """offline-reonline simulated on 6.1 up to its step 4 (offline=40), as if the kernel had refused: -EBUSY, block 40
    still in Normal (the real traces hold no results: a recorder sees no sysfs write's return code)."""
    sim = Simulation(load_scenario(ROOT / "corpus" / "scenarios" / "offline-reonline.toml"), get_profile("6.1"))
    list(simulate(sim.scenario, sim=sim))
    events = list(sim.events)
    at = next(i for i, ev in enumerate(events) if isinstance(ev, OfflineBlock) and ev.block == 40)
    assert events[at + 1] == Result(0)
    return [*events[: at + 1], Result(-errno.EBUSY), BlockObserved(40, BlockState.ONLINE, 0, (ZoneType.NORMAL,))]


def test_replay_takes_the_kernel_s_result_as_the_answer() -> None:
    res = replay_events(offline_40_failed(), get_profile("6.1"))
    assert (res.divergence_count, res.unknowable_answers) == (0, 1)


def test_a_result_the_offline_cannot_give_stays_a_divergence() -> None:
    """-EINVAL comes from checks before isolation, which the model knows: not an answer to take."""
    events = offline_40_failed()
    events[-2] = Result(-errno.EINVAL)
    res = replay_events(events, get_profile("6.1"))
    assert res.unknowable_answers == 0 and res.divergences_by_kind.get("errno") == 2


def test_unknowable_text_form() -> None:
    u = Unknowable(40, "offline", "Normal: unmovable kernel allocations may hold the block", -errno.EBUSY)
    assert (
        u.describe()
        == "offline memory40: outcome the model cannot predict (Normal: unmovable kernel allocations may hold the block); the kernel's answer EBUSY"
    )
