"""Lab set-up for Linux 7.2: the unstable suite through a private apt source list, and the split package layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from traces.lab.setup import KERNELS, KernelPaths, apt_options, module_releases, parse_depends, parse_search

# apt-cache search --names-only '^linux-image-7\.2' on the unstable suite (2026-12-01)
SID_SEARCH = """\
linux-image-7.2.13+deb14-amd64-dbg - Linux 7.2.13 for 64-bit PCs (debug symbols)
linux-image-7.2.13+deb14-cloud-amd64-dbg - Linux 7.2.13 for x86-64 cloud (debug symbols)
linux-image-7.2.13+deb14-rt-amd64-dbg - Linux 7.2.13 for 64-bit PCs (debug symbols)
linux-image-7.2.9+deb14-amd64 - Linux 7.2.9 for 64-bit PCs
linux-image-7.2.13+deb14-amd64 - Linux 7.2.13 for 64-bit PCs
linux-image-7.2.13+deb14-cloud-amd64 - Linux 7.2.13 for x86-64 cloud
linux-image-7.2.13+deb14-rt-amd64 - Linux 7.2.13 for 64-bit PCs, PREEMPT_RT
"""
# apt-cache show linux-image-7.2.13+deb14-amd64=7.2.13-1 (its first lines)
SID_SHOW = """\
Package: linux-image-7.2.13+deb14-amd64
Source: linux-signed-amd64 (7.2.13+1)
Version: 7.2.13-1
Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), \
linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)
Pre-Depends: linux-base (>= 4.17~)
Recommends: apparmor
"""


def test_7_2_is_a_lab_kernel_and_the_newest_plain_image_wins() -> None:
    assert KERNELS == ("6.1", "6.12", "7.2")
    assert [n for _, n in parse_search(SID_SEARCH, "7.2")] == ["linux-image-7.2.9+deb14-amd64", "linux-image-7.2.13+deb14-amd64"]
    assert parse_search(SID_SEARCH, "6.12") == []


def test_the_meta_package_names_the_kernel_s_parts() -> None:
    assert parse_depends(SID_SHOW) == ["linux-base-7.2.13+deb14-amd64", "linux-binary-7.2.13+deb14-amd64", "linux-modules-7.2.13+deb14-amd64"]
    assert parse_depends("Package: x\nVersion: 1\n") == []


def test_only_7_2_uses_a_private_apt_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's own sources and state are never named: a private list, lists folder and cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert apt_options("6.1") == apt_options("6.12") == []
    d = tmp_path / "mhp-replay" / "kernels" / "apt" / "7.2"
    assert apt_options("7.2") == [
        f"-o=Dir::Etc::SourceList={d / 'sources.list'}",
        "-o=Dir::Etc::SourceParts=/dev/null",
        f"-o=Dir::State::Lists={d / 'lists'}",
        f"-o=Dir::Cache={d / 'cache'}",
    ]


def tree(root: Path, files: list[str]) -> Path:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("x")
    return root


def test_the_split_layout_keeps_everything_under_usr_lib_modules(tmp_path: Path) -> None:
    rel = "7.2.13+deb14-amd64"
    root = tree(tmp_path / "k72", [f"usr/lib/modules/{rel}/{f}" for f in ("vmlinuz", "config", "modules.builtin", "kernel/drivers/virtio/virtio_mem.ko.xz")])
    k = KernelPaths("7.2", "linux-image-" + rel, "7.2.13-1", rel, root)
    assert k.split and module_releases(root) == [rel]
    assert (k.vmlinuz, k.config, k.modules) == (
        root / f"usr/lib/modules/{rel}/vmlinuz",
        root / f"usr/lib/modules/{rel}/config",
        root / f"usr/lib/modules/{rel}",
    )
    assert k.vmlinuz.is_file() and k.config.is_file()


def test_the_bookworm_layout_has_boot_and_lib_modules(tmp_path: Path) -> None:
    rel = "6.12.117+deb12-amd64"
    root = tree(tmp_path / "k612", [f"boot/vmlinuz-{rel}", f"boot/config-{rel}", f"lib/modules/{rel}/modules.builtin"])
    k = KernelPaths("6.12", "linux-image-" + rel, "6.12.117-1~deb12u1", rel, root)
    assert not k.split and module_releases(root) == [rel]
    assert (k.vmlinuz, k.config, k.modules) == (root / f"boot/vmlinuz-{rel}", root / f"boot/config-{rel}", root / f"lib/modules/{rel}")
