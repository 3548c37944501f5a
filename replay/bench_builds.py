"""``mhp bench``: a benchmark script run under the pure and the compiled build in one run, figures side by side.

The script (tests/bench/bench_<what>.py) runs once with ``MHP_PURE=1`` and, when a compiled model is installed,
once more with it; their outputs are printed line by line: a line both builds print alike once, a line that
differs as a pure and a compiled row with the ratio of their first differing figure. The machine's load
average is printed with each run (the figures depend on it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from replay import build

NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _run(script: Path, args: Sequence[str], root: Path, pure: bool) -> tuple[list[str], str]:
    env = {k: v for k, v in os.environ.items() if k != "MHP_PURE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))
    if pure:
        env["MHP_PURE"] = "1"
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), *args], cwd=root, env=env, stdout=subprocess.PIPE, text=True, check=False)
    note = f"{time.monotonic() - t0:.0f} s, load average {load:.2f} -> {os.getloadavg()[0]:.2f}, exit {proc.returncode}"
    return proc.stdout.splitlines(), note


def _ratio(pure: str, compiled: str) -> str:
    """compiled / pure of the first figure that differs, as text ('' if none)."""
    for a, b in zip(NUMBER.findall(pure), NUMBER.findall(compiled), strict=False):
        if a != b:
            x, y = float(a.replace(",", "")), float(b.replace(",", ""))
            return f"  [{y / x:.2f}x]" if x else ""
    return ""


def side_by_side(pure: list[str], compiled: list[str]) -> list[str]:
    """The two outputs merged line by line."""
    out = []
    for i in range(max(len(pure), len(compiled))):
        a = pure[i] if i < len(pure) else ""
        b = compiled[i] if i < len(compiled) else ""
        if a == b:
            out.append(f"  {a}")
        else:
            out += [f"P {a}", f"C {b}{_ratio(a, b)}"]
    return out


def bench_both(script: Path, args: Sequence[str], root: Path) -> int:
    """Run ``script`` under both builds (the pure one only, when nothing is compiled) and print the figures."""
    pure, pure_note = _run(script, args, root, True)
    if build.BUILD != "compiled":
        print(f"P = pure Python ({pure_note}); no compiled build to compare: {build.describe()}")
        print("\n".join(pure))
        return 0
    compiled, compiled_note = _run(script, args, root, False)
    print(f"P = pure Python ({pure_note})")
    print(f"C = {build.describe().removeprefix('model: ')} ({compiled_note}); [x]: compiled / pure")
    print("\n".join(side_by_side(pure, compiled)))
    return 0
