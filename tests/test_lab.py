"""The real-kernel lab: kernel-name resolution, initramfs content, QEMU options, guest samples; one live boot."""

from __future__ import annotations

import json
import lzma
import struct
from pathlib import Path

import pytest

from tests.helpers import require_lab
from traces.lab import cli
from traces.lab.initramfs import AGENT, INIT, initramfs_entries, is_static_elf, modinfo_depends, module_plan, read_newc, write_newc
from traces.lab.qemu import GuestConfig, LabError, kernel_append, qemu_command
from traces.lab.run import guest_writes, header, machine_record, parse_sample, run_scenario, step_record, write_command
from traces.lab.setup import KernelPaths, LabSetupError, cache_dir, cached_kernel, lab_ready, parse_candidate, parse_search
from traces.machines import PRESETS
from traces.scenario import ScenarioError, VirtioMemSpec, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "corpus" / "scenarios"

APT_SEARCH = """\
linux-image-6.1.0-47-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-56-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-56-rt-amd64 - Linux 6.1 for 64-bit PCs (signed), PREEMPT_RT
linux-image-6.1.0-9-amd64 - Linux 6.1 for 64-bit PCs (signed)
linux-image-6.1.0-56-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-56-amd64 - Linux 6.1 for 64-bit PCs (signed)
linux-image-6.1.0-56-amd64-dbg - Debug symbols for linux-image-6.1.0-56-amd64
linux-image-6.12.9+deb12-amd64 - Linux 6.12 for 64-bit PCs (signed)
linux-image-6.12.100+deb12-amd64 - Linux 6.12 for 64-bit PCs (signed)
linux-image-6.12.117+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.117+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12-amd64-signed-template - Template for signed linux-image packages for amd64
"""


# --- kernel names -----------------------------------------------------------------------------------


def test_newest_plain_kernel_of_each_series() -> None:
    assert parse_search(APT_SEARCH, "6.1")[-1][1] == "linux-image-6.1.0-56-amd64"  # signed beats -unsigned at equal ABI
    assert [n for _, n in parse_search(APT_SEARCH, "6.1")] == [
        "linux-image-6.1.0-9-amd64",
        "linux-image-6.1.0-47-amd64-unsigned",
        "linux-image-6.1.0-56-amd64-unsigned",
        "linux-image-6.1.0-56-amd64",
    ]
    assert [n for _, n in parse_search(APT_SEARCH, "6.12")] == [
        "linux-image-6.12.9+deb12-amd64",
        "linux-image-6.12.100+deb12-amd64",
        "linux-image-6.12.117+deb12-amd64-unsigned",
    ]
    with pytest.raises(ValueError, match="unknown kernel series"):
        parse_search(APT_SEARCH, "5.10")


def test_candidate_version_from_apt_cache_policy() -> None:
    policy = "linux-image-6.1.0-56-amd64:\n  Installed: (none)\n  Candidate: 6.1.192-2\n  Version table:\n     6.1.192-2 500\n"
    assert parse_candidate(policy) == "6.1.192-2"
    assert parse_candidate("linux-image-6.12.100+deb12-amd64-unsigned:\n  Installed: (none)\n  Candidate: (none)\n") is None
    assert parse_candidate("") is None


def test_cache_follows_xdg_and_names_the_setup_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "mhp-replay" / "kernels"
    with pytest.raises(LabSetupError, match=r"python -m traces\.lab --setup"):
        cached_kernel("6.1")
    with pytest.raises(LabSetupError, match="unknown kernel"):
        cached_kernel("4.19")
    assert "--setup" in (lab_ready("6.12") or "")


# --- initramfs --------------------------------------------------------------------------------------


def _module(deps: str) -> bytes:
    return b"\x7fELF....\x00license=GPL\x00depends=" + deps.encode() + b"\x00retpoline=Y\x00"


def fake_kernel(root: Path, compressed: bool, builtin_virtio: bool) -> KernelPaths:
    """A dpkg -x tree with a config, modules.builtin and .ko files whose .modinfo names their dependencies."""
    rel = "6.99.0-1-amd64"
    k = KernelPaths("6.1", "linux-image-test", "1", rel, root)
    (root / "boot").mkdir(parents=True)
    k.vmlinuz.write_bytes(b"kernel")
    m = "m" if not builtin_virtio else "y"
    k.config.write_text(
        "\n".join(
            [
                "CONFIG_MEMORY_HOTPLUG=y",
                "CONFIG_MEMORY_HOTREMOVE=y",
                "CONFIG_ACPI_HOTPLUG_MEMORY=y",
                "CONFIG_DEVTMPFS=y",
                "CONFIG_BLK_DEV_INITRD=y",
                f"CONFIG_VIRTIO_PCI={m}",
                f"CONFIG_VIRTIO_CONSOLE={m}",
                "CONFIG_VIRTIO_MEM=m",
                "# CONFIG_FOO is not set",
            ]
        )
        + "\n"
    )
    vdir = k.modules / "kernel" / "drivers" / "virtio"
    vdir.mkdir(parents=True)
    mods = {
        "virtio_ring": "",
        "virtio": "virtio_ring",
        "virtio_pci_modern_dev": "",
        "virtio_pci": "virtio_ring,virtio,virtio_pci_modern_dev",
        "virtio_mem": "virtio,virtio_ring",
        "virtio_console": "virtio,virtio_ring",
    }
    for name, deps in mods.items():
        data = _module(deps)
        if compressed:
            (vdir / f"{name}.ko.xz").write_bytes(lzma.compress(data, format=lzma.FORMAT_XZ))
        else:
            (vdir / f"{name}.ko").write_bytes(data)
    builtin = ["kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko"] if builtin_virtio else []
    (k.modules / "modules.builtin").write_text("".join(f"{b}\n" for b in builtin))
    return k


def test_module_plan_loads_dependencies_first(tmp_path: Path) -> None:
    k = fake_kernel(tmp_path, compressed=False, builtin_virtio=False)
    names = [m.name for m in module_plan(k)]
    assert set(names) == {"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci", "virtio_console", "virtio_mem"}
    for m in module_plan(k):
        assert all(names.index(d) < names.index(m.name) for d in m.depends)


def test_module_plan_skips_builtins_like_6_12(tmp_path: Path) -> None:
    k = fake_kernel(tmp_path, compressed=True, builtin_virtio=True)
    assert [m.name for m in module_plan(k)] == ["virtio_mem"]


def test_module_plan_refuses_a_kernel_without_virtio_mem(tmp_path: Path) -> None:
    k = fake_kernel(tmp_path, compressed=False, builtin_virtio=False)
    k.config.write_text(k.config.read_text().replace("CONFIG_VIRTIO_MEM=m", "# CONFIG_VIRTIO_MEM is not set"))
    with pytest.raises(LabSetupError, match="CONFIG_VIRTIO_MEM is not set"):
        module_plan(k)


def test_modinfo_depends() -> None:
    assert modinfo_depends(_module("virtio,virtio_ring")) == ("virtio", "virtio_ring")
    assert modinfo_depends(_module("")) == ()
    assert modinfo_depends(b"no modinfo") == ()


def test_initramfs_lists_busybox_init_agent_and_decompressed_modules(tmp_path: Path) -> None:
    k = fake_kernel(tmp_path / "k", compressed=True, builtin_virtio=False)
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF static busybox")
    entries = initramfs_entries(k, busybox)
    back = read_newc(write_newc(entries))
    assert back == entries
    files = {name: (mode, data) for name, mode, data in back}
    assert {"init", "agent.sh", "bin/busybox", "bin/sh", "modules.order", "dev", "proc", "sys"} <= set(files)
    assert files["init"] == (0o100755, INIT.encode())
    assert files["agent.sh"][1] == AGENT.encode()
    assert files["bin/sh"] == (0o120777, b"busybox")
    order = files["modules.order"][1].decode().split()
    assert order[-1] in ("virtio_mem", "virtio_console") and order[0] == "virtio_ring"
    for name in order:
        assert files[f"lib/modules/{name}.ko"][1].startswith(b"\x7fELF")  # .ko.xz were decompressed for insmod


def test_read_newc_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="newc"):
        read_newc(b"not a cpio archive")


def _elf(with_interp: bool) -> bytes:
    head = bytearray(64)
    head[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", head, 32, 64)
    struct.pack_into("<HH", head, 54, 56, 2)
    phdrs = struct.pack("<I52x", 1) + struct.pack("<I52x", 3 if with_interp else 1)
    return bytes(head) + phdrs


def test_static_elf_detection(tmp_path: Path) -> None:
    (tmp_path / "static").write_bytes(_elf(False))
    (tmp_path / "dynamic").write_bytes(_elf(True))
    (tmp_path / "text").write_bytes(b"#!/bin/sh\n")
    assert is_static_elf(tmp_path / "static")
    assert not is_static_elf(tmp_path / "dynamic")
    assert not is_static_elf(tmp_path / "text")


# --- QEMU options -------------------------------------------------------------------------------------


def test_qemu_command_for_a_virtio_mem_scenario(tmp_path: Path) -> None:
    sc = load_scenario(SCENARIOS / "vmem-bbm.toml")
    cfg = GuestConfig(Path("/k/vmlinuz"), Path("/k/initrd"), sc.machine, sc.cmdline, tuple(sc.devices))
    cmd = qemu_command(cfg, tmp_path)
    text = " ".join(cmd)
    assert cmd[0] == "qemu-system-x86_64"
    assert " ".join(sc.machine.qemu_args) in text
    assert "-accel tcg -cpu max" in text and "-enable-kvm" not in text
    assert cmd[cmd.index("-kernel") + 1] == "/k/vmlinuz" and cmd[cmd.index("-initrd") + 1] == "/k/initrd"
    append = cmd[cmd.index("-append") + 1]
    assert append.startswith("console=ttyS0") and append.endswith(sc.cmdline)
    assert f"memory-backend-ram,id=mem-vm0,size={32 << 30},reserve=off" in cmd
    assert f"virtio-mem-pci,id=vm0,memdev=mem-vm0,node=0,requested-size=0,block-size={512 << 20}" in cmd
    assert f"socket,id=qmp,path={tmp_path / 'qmp.sock'},server=on,wait=off" in cmd
    assert "virtserialport,bus=vser.0,chardev=agent,name=mhp.agent" in cmd


def test_qemu_command_for_numa_dimm_scenario(tmp_path: Path) -> None:
    sc = load_scenario(SCENARIOS / "numa-aware.toml")
    cmd = qemu_command(GuestConfig(Path("k"), Path("i"), sc.machine, sc.cmdline), tmp_path)
    assert "node,nodeid=1,cpus=1,memdev=n1" in cmd and "virtio-mem-pci" not in " ".join(cmd)


def test_the_guest_has_no_network_device(tmp_path: Path) -> None:
    """QEMU's default NIC (user-mode networking) is switched off; no other network device is added."""
    sc = load_scenario(SCENARIOS / "seed-vmem.toml")
    cmd = qemu_command(GuestConfig(Path("k"), Path("i"), sc.machine, sc.cmdline, tuple(sc.devices)), tmp_path)
    assert cmd[cmd.index("-nic") + 1] == "none" and cmd.count("-nic") == 1
    assert not [a for a in cmd if a.startswith(("-netdev", "user,")) or "virtio-net" in a or "e1000" in a]


@pytest.mark.parametrize("value", ["301; touch {pwned}", "$(touch {pwned})", "`touch {pwned}`", "'; touch {pwned}; echo '", "a > {pwned}", "| tee {pwned}"])
def test_a_parameter_value_is_written_literally_never_run(tmp_path: Path, value: str) -> None:
    """Issue 17 defect 10: a scenario's param value reaches the guest shell as data: a POSIX shell
    running the lab's write command writes exactly the value and runs nothing in it."""
    import subprocess

    pwned, target = tmp_path / "pwned", tmp_path / "auto_movable_ratio"
    text = value.format(pwned=pwned)
    sc = parse_scenario({"machine": {"preset": "qemu-q35-4G"}, "step": [{"param": "auto_movable_ratio", "value": text}]}, "t.toml")
    [(_, _, written)] = guest_writes(sc.steps[0])
    subprocess.run(["sh", "-c", write_command(str(target), written)], check=True)
    assert target.read_text() == text + "\n" and not pwned.exists()


def test_kernel_append_and_unplug_online() -> None:
    m = PRESETS["qemu-q35-4G"]
    keep = VirtioMemSpec("vm0", 0, 1 << 30)
    no = VirtioMemSpec("vm1", 0, 1 << 30, unplug_online=False)
    assert kernel_append(GuestConfig(Path("k"), Path("i"), m, "  movable_node\n")) == "console=ttyS0 panic=-1 nokaslr movable_node"
    assert kernel_append(GuestConfig(Path("k"), Path("i"), m, "", (no,))).endswith("virtio_mem.unplug_online=0")
    with pytest.raises(LabError, match="unplug_online"):
        kernel_append(GuestConfig(Path("k"), Path("i"), m, "", (keep, no)))


def test_explicit_memory_maps_cannot_run_in_the_lab(tmp_path: Path) -> None:
    custom = tmp_path / "custom.toml"
    custom.write_text(
        '[machine]\nblock_size = "128M"\ndevice_memory_base = "6G"\n[[machine.zone]]\nzone = "Normal"\nstart_pfn = 0\nspanned = 32768\npresent = 32768\n'
    )
    sc = load_scenario(custom)
    with pytest.raises(LabError, match="only presets"):
        qemu_command(GuestConfig(Path("k"), Path("i"), sc.machine), tmp_path)
    with pytest.raises(ScenarioError, match="machine presets"):
        run_scenario(custom, "6.1")


# --- steps and samples --------------------------------------------------------------------------------


def test_steps_as_recorded_and_their_sysfs_writes() -> None:
    sc = load_scenario(SCENARIOS / "offline-reonline.toml")
    assert [step_record(s) for s in sc.steps] == [
        {"dimm": "2G"},
        {"guest": "offline 56-63"},
        {"guest": "online 56-59 online"},
        {"guest": "offline 40"},
        {"guest": "online 40 online_movable"},
        {"guest": "online 60-63", "attr": "online"},
        {"guest": "offline 40", "attr": "online"},
        {"guest": "online 40", "attr": "online"},
    ]
    assert guest_writes(sc.steps[1])[0] == (56, "/sys/devices/system/memory/memory56/state", "offline")
    assert len(guest_writes(sc.steps[1])) == 8
    assert guest_writes(sc.steps[4]) == [(40, "/sys/devices/system/memory/memory40/state", "online_movable")]
    assert guest_writes(sc.steps[5])[0] == (60, "/sys/devices/system/memory/memory60/online", "1")
    assert guest_writes(sc.steps[6]) == [(40, "/sys/devices/system/memory/memory40/online", "0")]
    rt = load_scenario(SCENARIOS / "ratio-runtime.toml")
    assert step_record(rt.steps[1]) == {"guest": "param auto_movable_ratio 0"}
    assert guest_writes(rt.steps[1]) == [(None, "/sys/module/memory_hotplug/parameters/auto_movable_ratio", "0")]
    assert step_record(rt.steps[4]) == {"guest": "auto offline"}
    assert guest_writes(rt.steps[4]) == [(None, "/sys/devices/system/memory/auto_online_blocks", "offline")]
    of = parse_scenario({"machine": {"preset": "qemu-q35-4G"}, "step": [{"offline": 50, "fails": "EBUSY"}]}, "inline.toml")
    assert step_record(of.steps[0]) == {"guest": "offline 50", "fails": "EBUSY"}
    du = load_scenario(SCENARIOS / "dimm-unplug.toml")
    assert [step_record(s) for s in du.steps][2:4] == [{"unplug": "dimm0"}, {"dimm": "1G", "id": "dimm2"}]


def test_header_names_machine_numa_and_devices() -> None:
    assert machine_record(PRESETS["qemu-q35-4G"]) == {"machine": "q35", "mem": "4G"}
    assert machine_record(PRESETS["qemu-q35-4G-2node"])["numa"] == ["2G", "2G"]
    assert machine_record(PRESETS["qemu-q35-4G-memless1"])["numa"] == ["4G", "0"]
    sc = load_scenario(SCENARIOS / "vmem-bbm.toml")
    k = KernelPaths("6.12", "linux-image-x", "1", "6.12.0-1-amd64", Path("/nonexistent"))
    h = header(sc, k, "6.12.0-1-amd64")
    assert h["kernel"] == "6.12" and h["machine"] == "q35" and h["cmdline"] == sc.cmdline
    assert h["virtio_mem"] == [{"id": "vm0", "node": 0, "size": "32G", "block_size": "512M"}]
    assert h["steps"][0] == {"vmem": "vm0", "size": "12G"}


SAMPLE = """\
B 0 0 online none
B 10 0 online DMA32
B 2 0 online DMA32
B 48 1 offline Movable Normal
B 49 0 -
Node 0, zone      DMA
  per-node stats
        spanned  4095
        present  3998
        managed  3840
  start_pfn:           1
Node 1, zone   Normal
        spanned  0
        present  0
        managed  0
P online_policy auto-movable
P auto_movable_ratio 301
P auto_movable_numa_aware Y
P auto_online_blocks online
P block_size_bytes 8000000
"""


def test_parse_sample() -> None:
    s = parse_sample(SAMPLE)
    assert list(s["blocks"]) == ["0", "2", "10", "48", "49"]
    assert s["blocks"]["48"] == {"state": "offline", "zones": "Movable,Normal", "node": 1}
    assert s["blocks"]["49"] == {"state": "", "zones": "", "node": 0}  # caught mid-removal
    assert s["zones"] == [
        {"node": 0, "zone": "DMA", "present": 3998, "managed": 3840},
        {"node": 1, "zone": "Normal", "present": 0, "managed": 0},
    ]
    assert s["params"] == ["auto-movable", "301", "Y", "online", "8000000"]
    with pytest.raises(LabError, match="incomplete"):
        parse_sample(SAMPLE.replace("P auto_online_blocks online\n", ""))


def test_cli_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--kernel", "6.1"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main([str(SCENARIOS / "seed-dimm.toml"), "--kernel", "5.4", "-o", "x.json"])
    assert e.value.code == 2
    assert cli.main([str(SCENARIOS / "missing.toml"), "--kernel", "6.1", "-o", "x.json"]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- live ---------------------------------------------------------------------------------------------


def test_live_seed_dimm_on_real_kernel(tmp_path: Path) -> None:
    """Boots Debian's 6.1 under QEMU and runs seed-dimm; the result must equal corpus/observed/seed-dimm.json."""
    require_lab("6.1")
    out = tmp_path / "seed-dimm.json"
    obs = run_scenario(SCENARIOS / "seed-dimm.toml", "6.1", out)
    assert json.loads(out.read_text()) == obs
    expected = json.loads((ROOT / "corpus" / "observed" / "seed-dimm.json").read_text())
    assert [r["step"] for r in obs["results"]] == [r["step"] for r in expected["results"]]
    assert [r.get("rc") for r in obs["results"]] == [None, 0, 0, 0, 0, 0]
    for mine, real in zip(obs["results"], expected["results"], strict=True):
        assert mine["blocks"] == real["blocks"]
        assert [(z["node"], z["zone"], z["present"]) for z in mine["zones"]] == [(z["node"], z["zone"], z["present"]) for z in real["zones"]]
        assert mine["params"] == real["params"]


def test_cli_trace_options(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [str(SCENARIOS / "seed-dimm.toml"), "--kernel", "6.1", "-o", "x.txt"],
        [str(SCENARIOS / "seed-dimm.toml"), "--kernel", "6.1", "-o", "x.mhpt", "--trace"],
    ):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
    assert ".mhpt" in capsys.readouterr().err
    assert cli.main([str(SCENARIOS / "missing.toml"), "--kernel", "6.1", "-o", "x.mhpt"]) == 2


def test_a_run_step_is_a_guest_command_the_model_does_not_see() -> None:
    from replay.simulate import simulate

    sc = load_scenario(SCENARIOS / "dimm-unplug-busy.toml")
    run = [s for s in sc.steps if s.action == "run"]
    assert len(run) == 2 and step_record(run[0]) == {"guest": f"run {run[0].args['run']}"}
    results = list(simulate(sc, "6.12"))
    assert results[2].rc == 0 and results[2].runs == results[1].runs  # the workload moved no block
