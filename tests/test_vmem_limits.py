"""virtio-mem's plug limits (drivers/virtio/virtio_mem.c, every version): no more memory is added while
too much of the device's memory is offline, and plugging resumes once enough of it is onlined."""

from __future__ import annotations

import errno
import tomllib

import pytest

from replay.model.profiles import PROFILES
from replay.simulate import Simulation, StepResult, simulate
from traces.events import InjectFailure, Op
from traces.scenario import Scenario, parse_scenario

OFFLINE = "memhp_default_state=offline memory_hotplug.online_policy=auto-movable memory_hotplug.auto_movable_ratio=301"
ONLINE = OFFLINE.replace("=offline", "=online")


def scenario(steps: str, cmdline: str = OFFLINE, device_block: str = "2M") -> str:
    return f"""
name = "limits"
[machine]
preset = "qemu-q35-4G"
[kernel]
cmdline = "{cmdline}"
[[device]]
id = "vm0"
type = "virtio-mem"
node = 0
max_size = "32G"
block_size = "{device_block}"
{steps}
"""


def load(text: str) -> Scenario:
    return parse_scenario(tomllib.loads(text), "limits.toml", text)


def run(text: str, profile: str) -> list[StepResult]:
    return list(simulate(load(text), profile))


def blocks(res: StepResult, state: str) -> list[int]:
    return [b for r in res.runs if r.state == state and r.group == "vm0" for b in range(r.first, r.last + 1)]


def step(**kv: str) -> str:
    return "[[step]]\n" + "".join(f'{k} = "{v}"\n' for k, v in kv.items())


@pytest.mark.parametrize("profile", PROFILES)
def test_sbm_stops_at_the_offline_threshold_and_resumes_when_half_is_onlined(profile: str) -> None:
    """128 MiB blocks: threshold max(2 x 128 MiB, 1 GiB) = 8 offline blocks. A 4 GiB request adds 48-55
    and ends with -ENOSPC; onlining 48-50 leaves 5 offline (> half); onlining 51 leaves 4 = 512 MiB,
    and the driver adds 56-59."""
    text = scenario(step(vmem="vm0", size="4G") + step(online="48-50") + step(online="51"))
    _, grow, three, four = run(text, profile)
    assert grow.rc == -errno.ENOSPC and blocks(grow, "offline") == list(range(48, 56))
    assert blocks(three, "online") == [48, 49, 50] and blocks(three, "offline") == list(range(51, 56))
    assert blocks(four, "online") == [48, 49, 50, 51] and blocks(four, "offline") == list(range(52, 60))


@pytest.mark.parametrize("profile", PROFILES)
def test_onlining_everything_drives_the_device_to_its_request(profile: str) -> None:
    """Onlining block by block keeps the driver going: after 48-79 are online, 4 GiB are plugged, 32 blocks
    (each retry adds up to the threshold again, so the last blocks added are still offline)."""
    text = scenario(step(vmem="vm0", size="4G") + step(online="48-71") + step(online="72-79"))
    *_, a, b = run(text, profile)
    assert blocks(a, "online") == list(range(48, 72)) and blocks(a, "offline") == list(range(72, 80))
    assert blocks(b, "online") == list(range(48, 80)) and blocks(b, "offline") == [] and b.rc == 0


@pytest.mark.parametrize("profile", PROFILES)
def test_with_auto_online_the_threshold_never_binds(profile: str) -> None:
    (_, grow) = run(scenario(step(vmem="vm0", size="4G"), cmdline=ONLINE), profile)
    assert grow.rc == 0 and len(blocks(grow, "online")) == 32 and blocks(grow, "offline") == []


@pytest.mark.parametrize("profile", PROFILES)
def test_bbm_threshold_holds_two_big_blocks(profile: str) -> None:
    """1 GiB device blocks: Big Block Mode with 1 GiB units, threshold max(2 x 1 GiB, 1 GiB) = 2 GiB: two big
    blocks (16 memory blocks) stay offline. Onlining the first big block leaves 1 GiB offline (half):
    the driver adds a third."""
    text = scenario(step(vmem="vm0", size="8G") + step(online="48-54") + step(online="55"), device_block="1G")
    _, grow, seven, eight = run(text, profile)
    assert grow.rc == -errno.ENOSPC and blocks(grow, "offline") == list(range(48, 64))
    assert blocks(seven, "offline") == list(range(55, 64))
    assert blocks(eight, "online") == list(range(48, 56)) and blocks(eight, "offline") == list(range(56, 72))


@pytest.mark.parametrize("profile", PROFILES)
def test_removing_offline_memory_makes_room_again(profile: str) -> None:
    """Shrinking unplugs offline blocks first (highest first); the offline memory they leave behind no longer counts."""
    text = scenario(step(vmem="vm0", size="4G") + step(vmem="vm0", size="512M") + step(vmem="vm0", size="4G"))
    _, _, shrink, regrow = run(text, profile)
    assert blocks(shrink, "offline") == [48, 49, 50, 51] and shrink.rc == 0
    assert blocks(regrow, "offline") == list(range(48, 56)) and regrow.rc == -errno.ENOSPC


@pytest.mark.parametrize("profile", PROFILES)
def test_blocks_whose_auto_online_failed_count_towards_the_threshold(profile: str) -> None:
    """With auto-online on, a block whose online the kernel refuses (a notifier NACK) stays offline: after
    eight such blocks the driver stops adding, though the request asks for 4 GiB."""
    sim = Simulation(load(scenario(step(vmem="vm0", size="4G"), cmdline=ONLINE)), PROFILES[profile])
    sim.boot()
    vm = sim.vmems["vm0"]
    assert vm.offline_threshold == 1 << 30 and vm.offline_size(sim.kernel.m) == 0
    for b in range(48, 56):
        sim.emit(InjectFailure(b, Op.ONLINE, errno.ENOMEM))
    res = sim.run_step(1, sim.scenario.steps[0])
    assert res.rc == -errno.ENOSPC and blocks(res, "offline") == list(range(48, 56)) and blocks(res, "online") == []
    assert vm.offline_size(sim.kernel.m) == 1 << 30 and not sim.driving
