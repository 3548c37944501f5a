"""Lab set-up: host tools from Debian (QEMU, busybox, cpio, xz) and Debian's own 6.1 / 6.12 / 7.2 kernels, cached and unpacked.

Kernels are fetched with ``apt-get download`` (never installed) into ``$XDG_CACHE_HOME/mhp-replay/kernels``
(default ``~/.cache/mhp-replay/kernels``) and unpacked there with ``dpkg -x``. An ``index.json`` in that
folder records which package each kernel series resolved to; a second run finds everything in place and
runs no apt command at all.

6.1 and 6.12 come from the machine's own apt sources (Debian 12). 7.2 comes from Debian's unstable suite
through a private apt source list and state folder in the cache (``apt/sid``): the machine's own sources
stay as they are. Its ``linux-image-7.2.N+debM-amd64`` is a meta package; the kernel is in the
``linux-binary``, ``linux-modules`` and ``linux-base`` packages it depends on, all under
``usr/lib/modules/<release>/`` (vmlinuz, config, modules.builtin, kernel/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOST_PACKAGES = ("qemu-system-x86", "busybox-static", "cpio", "xz-utils")
HOST_TOOLS = ("qemu-system-x86_64", "busybox", "cpio", "xz")
KERNELS = ("6.1", "6.12", "7.2")

# Debian names: linux-image-6.1.0-ABI-amd64[-unsigned], linux-image-6.12.PATCH+debN-amd64[-unsigned] and
# linux-image-7.2.PATCH+debN-amd64; the cloud and rt flavours are not wanted.
_NAME_RE = {
    "6.1": re.compile(r"^linux-image-6\.1\.0-(\d+)-amd64(-unsigned)?$"),
    "6.12": re.compile(r"^linux-image-6\.12\.(\d+)\+deb(\d+)-amd64(-unsigned)?$"),
    "7.2": re.compile(r"^linux-image-7\.2\.(\d+)\+deb(\d+)-amd64(-unsigned)?$"),
}
# Series fetched from another Debian suite than the machine's, through a private apt source list.
SUITES = {"7.2": "deb http://deb.debian.org/debian sid main"}
# The packages a split kernel (7.x) spreads over, named in the meta package's Depends.
_PART_RE = re.compile(r"^linux-(binary|modules|base)-")


class LabSetupError(RuntimeError):
    """The lab cannot be set up or used: says what is missing and how to get it."""


@dataclass(frozen=True, slots=True)
class KernelPaths:
    """An unpacked Debian kernel package."""

    series: str  # "6.1", "6.12" or "7.2"
    package: str
    version: str  # Debian package version
    release: str  # uname -r, e.g. 6.1.0-56-amd64
    root: Path  # the dpkg -x tree

    @property
    def split(self) -> bool:
        """The 7.x layout: everything under usr/lib/modules/<release>, no /boot."""
        return not (self.root / "boot").is_dir() and (self.root / "usr" / "lib" / "modules" / self.release).is_dir()

    @property
    def vmlinuz(self) -> Path:
        return self.modules / "vmlinuz" if self.split else self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def config(self) -> Path:
        return self.modules / "config" if self.split else self.root / "boot" / f"config-{self.release}"

    @property
    def modules(self) -> Path:
        return self.root / "usr" / "lib" / "modules" / self.release if self.split else self.root / "lib" / "modules" / self.release


def cache_dir() -> Path:
    """The kernel cache: $XDG_CACHE_HOME/mhp-replay/kernels, else ~/.cache/mhp-replay/kernels."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mhp-replay" / "kernels"


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    """Run a command; its stdout, or LabSetupError with its stderr."""
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise LabSetupError(f"{cmd[0]}: command not found (is this a Debian machine?)") from None
    if p.returncode != 0:
        raise LabSetupError(f"{' '.join(cmd)} failed (exit {p.returncode}): {p.stderr.strip()[-800:]}")
    return p.stdout


def parse_search(output: str, series: str) -> list[tuple[tuple[int, ...], str]]:
    """Package names of one kernel series from ``apt-cache search`` output, with a sort key (newest last)."""
    if series not in _NAME_RE:
        raise ValueError(f"unknown kernel series {series!r}; expected one of {', '.join(KERNELS)}")
    found = []
    for line in output.splitlines():
        name = line.split(" - ", 1)[0].strip()
        m = _NAME_RE[series].match(name)
        if m:
            unsigned = name.endswith("-unsigned")
            nums = tuple(int(g) for g in m.groups() if g and g.isdigit())
            # at equal versions prefer the plain (signed) package, as LAB-NOTES did: it sorts last
            found.append(((*nums, 0 if unsigned else 1), name))
    return sorted(found)


def parse_candidate(policy_output: str) -> str | None:
    """The candidate version from ``apt-cache policy PKG`` output, None when nothing can be fetched."""
    m = re.search(r"^\s*Candidate:\s*(\S+)\s*$", policy_output, re.MULTILINE)
    if not m or m.group(1) == "(none)":
        return None
    return m.group(1)


def parse_depends(show_output: str) -> list[str]:
    """The packages a split kernel's meta package pulls in (linux-binary/-modules/-base), from ``apt-cache show``."""
    m = re.search(r"^Depends:\s*(.*)$", show_output, re.MULTILINE)
    names = [alt.split()[0] for dep in (m.group(1).split(",") if m else []) for alt in dep.split("|") if alt.split()]
    return sorted({n for n in names if _PART_RE.match(n)})


def apt_options(series: str) -> list[str]:
    """apt-get/apt-cache options for a series: none for the machine's own sources, else a private
    source list, package lists and cache in the kernel cache (the machine's apt state is not touched)."""
    if series not in SUITES:
        return []
    d = cache_dir() / "apt" / series
    return [
        f"-o=Dir::Etc::SourceList={d / 'sources.list'}",
        "-o=Dir::Etc::SourceParts=/dev/null",
        f"-o=Dir::State::Lists={d / 'lists'}",
        f"-o=Dir::Cache={d / 'cache'}",
    ]


def update_private_lists(series: str, log: bool = True) -> None:
    """apt-get update of a series' private source list (written first; apt wants its partial folders)."""
    d = cache_dir() / "apt" / series
    for sub in ("lists/partial", "cache/archives/partial"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "sources.list").write_text(SUITES[series] + "\n")
    if log:
        print(f"apt-get update of the private list for {series}: {SUITES[series]} ...", flush=True)
    _run(["apt-get", *apt_options(series), "update", "-q"])


def resolve_kernel(series: str) -> tuple[str, str]:
    """(package, version) of the newest downloadable plain amd64 kernel of a series (apt-cache)."""
    opts = apt_options(series)
    out = _run(["apt-cache", *opts, "search", "--names-only", "^linux-image-" + re.escape(series)])
    for _key, name in reversed(parse_search(out, series)):
        version = parse_candidate(_run(["apt-cache", *opts, "policy", name]))
        if version:
            return name, version
    raise LabSetupError(f"no downloadable linux-image-{series}.*-amd64 package found; run 'apt-get update' (as root) first")


def kernel_packages(series: str, package: str, version: str) -> list[str]:
    """The packages holding a kernel: the image itself, or for a split kernel the parts its meta package names."""
    if series not in SUITES:
        return [package]
    parts = parse_depends(_run(["apt-cache", *apt_options(series), "show", f"{package}={version}"]))
    if not any(p.startswith("linux-binary-") for p in parts) or not any(p.startswith("linux-modules-") for p in parts):
        raise LabSetupError(f"{package} {version}: no linux-binary/linux-modules packages among its dependencies ({parts})")
    return parts


def _dpkg_installed(pkg: str) -> bool:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False)
    return p.returncode == 0 and p.stdout.strip().endswith("install ok installed")


def missing_host_packages() -> list[str]:
    """Host packages (of HOST_PACKAGES) not installed."""
    if not shutil.which("dpkg-query"):
        return [p for p, t in zip(HOST_PACKAGES, HOST_TOOLS, strict=True) if not shutil.which(t)]
    return [p for p in HOST_PACKAGES if not _dpkg_installed(p)]


def install_host_packages(log: bool = True) -> list[str]:
    """apt-get install the missing host packages (root only); returns what was installed."""
    missing = missing_host_packages()
    if not missing:
        return []
    if os.geteuid() != 0:
        raise LabSetupError(f"missing packages {', '.join(missing)}: run 'python -m traces.lab --setup' as root")
    if log:
        print(f"installing {' '.join(missing)} ...", flush=True)
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
    _run([*env_cmd, "apt-get", "update", "-q"])
    _run([*env_cmd, "apt-get", "install", "-y", "-q", *missing])
    return missing


def _index_path() -> Path:
    return cache_dir() / "index.json"


def _read_index() -> dict[str, dict[str, str]]:
    try:
        data = json.loads(_index_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _kernel_from_entry(series: str, entry: dict[str, str]) -> KernelPaths | None:
    try:
        k = KernelPaths(series, entry["package"], entry["version"], entry["release"], cache_dir() / entry["dir"])
    except (KeyError, TypeError):
        return None
    return k if k.vmlinuz.is_file() and k.modules.is_dir() and k.config.is_file() else None


def cached_kernel(series: str) -> KernelPaths:
    """The unpacked kernel of a series, or LabSetupError naming the set-up command."""
    if series not in KERNELS:
        raise LabSetupError(f"unknown kernel {series!r}; expected one of {', '.join(KERNELS)}")
    entry = _read_index().get(series)
    k = _kernel_from_entry(series, entry) if isinstance(entry, dict) else None
    if k is None:
        raise LabSetupError(f"kernel {series} is not in {cache_dir()}: run 'python -m traces.lab --setup' (as root) first")
    return k


def fetch_kernel(series: str, refresh: bool = False, log: bool = True) -> KernelPaths:
    """Download and unpack the newest kernel of a series unless the cache has one (or ``refresh``)."""
    if not refresh:
        try:
            return cached_kernel(series)
        except LabSetupError:
            pass
    package, version = resolve_kernel(series)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    index = _read_index()
    old = index.get(series)
    if isinstance(old, dict) and old.get("package") == package and old.get("version") == version:
        k = _kernel_from_entry(series, old)
        if k is not None:
            return k
    parts = kernel_packages(series, package, version)
    if log:
        print(f"downloading {' '.join(parts)} {version} ...", flush=True)
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    # apt-get download writes into the working directory; as root its _apt sandbox may warn about it.
    _run(["apt-get", *apt_options(series), "download", "-q", *(f"{p}={version}" for p in parts)], cwd=debs)
    files = []
    for part in parts:
        deb = next((p for p in sorted(debs.glob(f"{part}_*.deb")) if _deb_version(p) == version), None)
        if deb is None:
            raise LabSetupError(f"apt-get download {part}={version} left no .deb in {debs}")
        files.append(deb)
    target = cache / f"{package}_{version}".replace("~", "_").replace(":", "_")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in files:
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
    releases = module_releases(tmp)
    if len(releases) != 1:
        raise LabSetupError(f"{' '.join(map(str, files))}: expected one lib/modules/<release>, found {releases}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    for deb in files:
        deb.unlink()
    index[series] = {"package": package, "version": version, "release": releases[0], "dir": target.name}
    tmp_index = _index_path().with_suffix(".tmp")
    tmp_index.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    tmp_index.rename(_index_path())
    k = _kernel_from_entry(series, index[series])
    if k is None:
        raise LabSetupError(f"{target}: unpacked package lacks boot/vmlinuz, boot/config or lib/modules for {releases[0]}")
    return k


def module_releases(root: Path) -> list[str]:
    """The kernel releases an unpacked tree has modules for (lib/modules, or usr/lib/modules in 7.x)."""
    return sorted(p.name for d in (root / "lib" / "modules", root / "usr" / "lib" / "modules") if d.is_dir() for p in d.iterdir() if p.is_dir())


def _deb_version(deb: Path) -> str:
    """The version part of a downloaded .deb's name (apt-get encodes ':' as '%3a')."""
    return deb.name.split("_")[1].replace("%3a", ":")


def setup(kernels: tuple[str, ...] = KERNELS, refresh: bool = False, log: bool = True) -> dict[str, KernelPaths]:
    """Install the host tools and fetch the kernels; idempotent (nothing happens when all is in place)."""
    install_host_packages(log)
    out = {}
    for series in kernels:
        if series not in KERNELS:
            raise LabSetupError(f"unknown kernel {series!r}; expected one of {', '.join(KERNELS)}")
        if series in SUITES and (refresh or (not (cache_dir() / "apt" / series / "lists").is_dir() and lab_ready_kernel(series) is not None)):
            update_private_lists(series, log)  # a first fetch, or --refresh: the suite's package lists
        try:
            out[series] = fetch_kernel(series, refresh, log)
        except LabSetupError:
            if refresh or os.geteuid() != 0:
                raise
            # the package lists may be stale: one apt-get update, then try again
            if series in SUITES:
                update_private_lists(series, log)
            else:
                _run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "update", "-q"])
            out[series] = fetch_kernel(series, refresh, log)
    return out


def lab_ready(series: str) -> str | None:
    """None when QEMU, busybox and the kernel are available, else the reason they are not."""
    for tool in ("qemu-system-x86_64", "cpio"):
        if not shutil.which(tool):
            return f"{tool} not found: run 'python -m traces.lab --setup' as root"
    if not Path("/bin/busybox").is_file() and not shutil.which("busybox"):
        return "busybox not found: run 'python -m traces.lab --setup' as root"
    return lab_ready_kernel(series)


def lab_ready_kernel(series: str) -> str | None:
    """None when the kernel of a series is unpacked in the cache, else why not."""
    try:
        cached_kernel(series)
    except LabSetupError as e:
        return str(e)
    return None
