"""Build shim for mypyc: the model (replay/model) is compiled from its own source when a C compiler is present.

``pip install .`` builds the compiled extension next to the pure modules; ``MHP_PURE=1`` at install time, or a
missing C compiler or Python headers, installs pure Python only. Which build runs: ``mhp --version`` (replay/build.py).
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# The modules mypyc compiles: the model (its package __init__ stays Python), and the replayer's feed and compare
# with the model-side observations they use (measured in docs/performance.md, "Compiled model").
COMPILED = sorted(
    [p.relative_to(ROOT).as_posix() for p in (ROOT / "replay" / "model").glob("*.py") if p.name != "__init__.py"] + ["replay/replayer.py", "replay/observe.py"]
)
MANIFEST = "replay/compiled.json"  # module -> sha256 of the source it was compiled from (replay/build.py checks it)


def _why_pure() -> str | None:
    """Why this install is pure Python, or None when it compiles."""
    if os.environ.get("MHP_PURE") == "1":
        return "MHP_PURE=1"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Python.h)"
    return None


class BuildExt(build_ext):
    """build_ext that also writes the manifest of the sources it compiled."""

    def run(self) -> None:
        super().run()
        base = ROOT if self.inplace else Path(self.build_lib)
        manifest = {p.removesuffix(".py").replace("/", "."): hashlib.sha256((ROOT / p).read_bytes()).hexdigest() for p in COMPILED}
        out = base / MANIFEST
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        tmp.replace(out)


def ext_modules() -> list[object]:
    why = _why_pure()
    if why is not None:
        print(f"mhp-replay: pure Python build ({why})")
        return []
    from mypyc.build import mypycify

    return list(mypycify(COMPILED, opt_level="3"))


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildExt})
