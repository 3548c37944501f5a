"""The guest's user space: Debian's own Python 3 and this project, installed into a root tree the initramfs carries.

The lab set-up downloads Debian's ``python3-minimal`` and ``libpython3-stdlib`` with every dependency (apt with an
empty package status, so the host's installed packages do not hide any; the host's apt sources and state stay as
they are) and unpacks them with ``dpkg -x`` into ``<cache>/userland/base-<digest>``, cached like the kernels. Each
lab run adds an overlay with this checkout installed by pip (``--no-deps --target``, plus the pinned ``construct``)
and an ``/usr/bin/mhp`` entry point, so the guest runs the unmodified ``mhp record``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import requires
from pathlib import Path

from traces.lab.setup import LabSetupError, _run, cache_dir

GUEST_PACKAGES = ("python3-minimal", "libpython3-stdlib")
SITE = "usr/lib/python3/dist-packages"
# Parts of the packages the recorder never needs: documentation, translations, the interpreter's test and GUI kits.
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "usr/share/lintian", "usr/share/bug")
PRUNE_STDLIB = ("idlelib", "lib2to3", "pydoc_data", "ensurepip", "turtledemo", "tkinter", "test")
ENTRY = "#!/usr/bin/python3\nimport sys\nfrom replay.cli import main\nsys.exit(main())\n"
PROJECT_PARTS = ("pyproject.toml", "traces", "replay", "fuzz")


def userland_dir() -> Path:
    """Where the guest's root trees are cached: next to the kernels."""
    return cache_dir() / "userland"



def download_debs(dest: Path) -> list[Path]:
    """Every .deb the guest packages need, resolved against an empty dpkg status (nothing counts as installed)."""
    (dest / "partial").mkdir(parents=True, exist_ok=True)
    status = dest / "status"
    status.touch()
    _run(
        [
            "apt-get", "-q", "-y", "--no-install-recommends", "--download-only",
            "-o", f"Dir::State::status={status}", "-o", f"Dir::Cache::archives={dest}", "-o", "Debug::NoLocking=1",
            "install", *GUEST_PACKAGES,
        ]
    )  # fmt: skip
    debs = sorted(dest.glob("*.deb"))
    if not debs:
        raise LabSetupError(f"apt-get left no .deb in {dest} for {' '.join(GUEST_PACKAGES)}")
    return debs


def compile_tree(path: Path) -> None:
    """Byte-compile a tree with this (same minor version) interpreter; hash-based .pyc files stay valid in the
    initramfs, whose files carry no modification times."""
    _run([sys.executable, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash", str(path)])


def prune(root: Path) -> None:
    """Drop what the guest never reads (documentation, translations, the interpreter's test and GUI kits)."""
    for rel in PRUNE:
        shutil.rmtree(root / rel, ignore_errors=True)
    for lib in root.glob("usr/lib/python3.*"):
        for name in PRUNE_STDLIB:
            shutil.rmtree(lib / name, ignore_errors=True)


def base_tree(log: bool = False) -> Path:
    """The unpacked Debian packages (cached by the names and versions of the .debs)."""
    top = userland_dir()
    existing = sorted(top.glob("base-*/usr/bin/python3"))
    if existing:
        return existing[-1].parents[2]
    if log:
        print(f"downloading the guest's Python ({' '.join(GUEST_PACKAGES)} and dependencies) ...", flush=True)
    debs = download_debs(top / "debs")
    digest = hashlib.sha256("\n".join(d.name for d in debs).encode()).hexdigest()[:12]
    target = top / f"base-{digest}"
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
    prune(tmp)
    for lib in tmp.glob("usr/lib/python3.*"):
        compile_tree(lib)
    if not (tmp / "usr/bin/python3").exists():
        raise LabSetupError(f"{tmp}: the unpacked packages have no usr/bin/python3")
    for old in top.glob("base-*"):
        if old != tmp:
            shutil.rmtree(old, ignore_errors=True)
    tmp.rename(target)
    shutil.rmtree(top / "debs", ignore_errors=True)
    return target


def project_root() -> Path:
    """The checkout this module runs from (the guest gets the same code)."""
    return Path(__file__).resolve().parents[2]


def project_digest(root: Path) -> str:
    """A digest of the project's Python sources and metadata (the overlay is rebuilt when it changes)."""
    h = hashlib.sha256()
    for part in PROJECT_PARTS:
        p = root / part
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
        for f in files:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def pinned(dist: str, name: str) -> str:
    """The requirement ``name==X`` as this project pins it (pyproject dependencies)."""
    for req in requires(dist) or ():
        m = re.match(rf"^{re.escape(name)}\s*(==\s*[\w.]+)", req)
        if m:
            return name + m.group(1).replace(" ", "")
    raise LabSetupError(f"{dist} does not pin {name}")


def overlay_tree() -> Path:
    """This checkout installed for the guest's Python (pip --target, no dependencies but construct), cached by digest.

    Built in a private temporary folder and renamed into place, so lab runs of several checkouts at once do not mix."""
    src = project_root()
    target = userland_dir() / f"project-{project_digest(src)}"
    if (target / "usr/bin/mhp").is_file():
        os.utime(target)  # in use: kept by the pruning below
        return target
    userland_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=userland_dir()))
    try:
        build, tmp = work / "src", work / "root"
        for part in PROJECT_PARTS:  # pip builds in place: a copy keeps build/ and *.egg-info out of the checkout
            p = src / part
            if p.is_file():
                build.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, build / part)
            else:
                shutil.copytree(p, build / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(src / "README.md", build / "README.md")
        construct = pinned("mhp-replay", "construct")
        _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(tmp / SITE), str(build), construct])
        shutil.rmtree(tmp / SITE / "bin", ignore_errors=True)  # pip's scripts name the host's interpreter
        compile_tree(tmp / SITE)
        (tmp / "usr/bin").mkdir(parents=True)
        (tmp / "usr/bin/mhp").write_text(ENTRY)
        (tmp / "usr/bin/mhp").chmod(0o755)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "usr/bin/mhp").is_file():  # not another run's finished copy of the same code
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    week = time.time() - 7 * 86400
    for old in userland_dir().glob("project-*"):  # other checkouts' copies, unused for a week
        if old != target and old.stat().st_mtime < week:
            shutil.rmtree(old, ignore_errors=True)
    return target


def tree_entries(root: Path, prefix_seen: set[str]) -> Iterator[tuple[str, int, bytes]]:
    """(name, mode, data) cpio entries of a tree: directories first, symbolic links as links, files with their mode."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in [*dirnames, *sorted(filenames)]:
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                if rel not in prefix_seen:
                    prefix_seen.add(rel)
                    yield rel, 0o120777, os.readlink(full).encode()
            elif stat.S_ISDIR(st.st_mode):
                if rel not in prefix_seen:
                    prefix_seen.add(rel)
                    yield rel, 0o040755, b""
            elif stat.S_ISREG(st.st_mode):
                prefix_seen.add(rel)
                yield rel, stat.S_IFREG | (st.st_mode & 0o777), Path(full).read_bytes()


def userland_entries(log: bool = False) -> list[tuple[str, int, bytes]]:
    """The guest's Python and this project as initramfs entries (base tree, then the project overlay)."""
    seen: set[str] = set()
    return [*tree_entries(base_tree(log), seen), *tree_entries(overlay_tree(), seen)]
