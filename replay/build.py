"""Which build of the model runs: compiled by mypyc from the same source (setup.py), or pure Python.

A compiled install has an extension module beside each compiled module's source and ``replay/compiled.json``,
the sha256 of every source it compiled. The sources run instead, all of them, when ``MHP_PURE=1`` is set or
when a source no longer matches its compiled build (a checkout edited since): a meta path finder then loads
those modules from their ``.py`` files. ``replay/__init__.py`` installs it before any model module is imported.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

_ROOT = Path(__file__).resolve().parent.parent  # the directory holding the replay package
MANIFEST = _ROOT / "replay" / "compiled.json"


def _source(module: str) -> Path:
    return _ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _has_extension(module: str) -> bool:
    stem = _source(module).with_suffix("")
    return any(stem.with_name(stem.name + suffix).exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _manifest() -> dict[str, str]:
    try:
        data = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _state(manifest: dict[str, str]) -> tuple[str, str]:
    """("compiled" or "pure", why)."""
    if not manifest or not all(_has_extension(m) for m in manifest):
        return "pure", "no compiled model installed"
    if os.environ.get("MHP_PURE") == "1":
        return "pure", "MHP_PURE=1"
    for module, digest in sorted(manifest.items()):
        try:
            if hashlib.sha256(_source(module).read_bytes()).hexdigest() != digest:
                return "pure", f"{module} changed since it was compiled"
        except OSError:
            return "pure", f"{module}: no source"
    return "compiled", f"mypyc, {len(manifest)} modules"


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Loads the compiled modules from their sources."""

    def __init__(self, modules: set[str]) -> None:
        self.modules = modules

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(fullname))


_MODULES = _manifest()
BUILD, WHY = _state(_MODULES)
if BUILD == "pure" and _MODULES and not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _SourceFinder(set(_MODULES)))


def describe() -> str:
    """One line: which build of the model runs and why."""
    return f"model: {'compiled' if BUILD == 'compiled' else 'pure Python'} ({WHY})"


def in_use() -> str:
    """The build the imported model modules come from: "compiled" or "pure" (checked on the modules themselves)."""
    from replay.model import kernel

    return "compiled" if not (kernel.__file__ or "").endswith(".py") else "pure"
