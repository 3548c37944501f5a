"""The campaign's side of the steps target (``mhp fuzz --target steps``): its seeds, the signatures it knows, and the
triage of a hit: minimise (fuzz/steps_minimize.py), save as a regression (the scenario beside the simulated trace)
and, with ``--confirm``, run it on the real kernels (replay/confirm.py) and write the verdicts into its .json.

A steps regression is ``STEPS-<signature>``: ``.toml`` (the minimised scenario: ``mhp simulate`` and ``mhp lab``
run it), ``.mhpt`` / ``.txt`` (its simulated trace, the reproducer ``mhp replay`` and ``mhp confirm`` read),
``.py.txt`` (a ready-to-paste test) and ``.json`` (fuzz/campaign.py's fields, ``"expressible": true``, the
scenario's name and, once confirmed, ``verdicts`` per kernel as ``mhp confirm --record`` writes them). The steps
target knows only signatures that already have an expressible reproducer: one known from a regression no real
machine can run is found again, so that it gets one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fuzz.campaign import Summary, atomic_write, safe_name, save_regression
from fuzz.check import Mode
from fuzz.steps import decode, encode
from fuzz.steps_check import check_doc, doc_events
from fuzz.steps_minimize import StepsMinimizer

ROOT = Path(__file__).resolve().parent.parent
CONFIRM_KERNELS = ("6.1", "6.12")  # every regression carries a verdict for these (tests/test_confirm.py)
PREFIX = "STEPS-"


def known_step_signatures(regressions: Path) -> set[str]:
    """The signatures of the regressions whose reproducer is expressible."""
    out = set()
    for meta in regressions.glob("*.json"):
        doc = json.loads(meta.read_text())
        if doc.get("expressible"):
            out.add(doc["signature"])
    return out


def prepare_step_seeds(out: Path, scenarios: Path = ROOT / "corpus" / "scenarios") -> Path:
    """The corpus scenarios in their normal form (fuzz/steps.py decode) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.toml"):
        old.unlink()
    for path in sorted(scenarios.glob("*.toml")):
        doc = decode(path.read_bytes())
        if doc is not None:
            atomic_write(out / path.name, encode(doc))
    return out


def save_step_regression(regressions: Path, signature: str, mode: Mode, doc: dict[str, Any], note: str) -> Path:
    """Write the regression files of a minimised document (see the module docstring); returns the trace's path."""
    name = PREFIX + safe_name(signature)
    trace = save_regression(regressions, signature, mode, doc_events(doc, mode) or [], note, name=name)
    atomic_write(regressions / f"{name}.toml", encode({"name": name, "description": note, **doc}))
    meta_path = regressions / f"{name}.json"
    meta = json.loads(meta_path.read_text())
    meta.update({"input": "steps", "expressible": True, "scenario": f"{name}.toml", "steps": len(doc["step"])})
    atomic_write(meta_path, json.dumps(meta, indent=1) + "\n")
    return trace


def check_confirm(target: str, kernels: list[str]) -> None:
    """``--confirm``'s arguments (ValueError: a kernel the lab does not know, or a target other than steps)."""
    from traces.lab.setup import KERNELS

    if target != "steps":
        raise ValueError(f"--confirm confirms steps regressions: give --target steps, not {target}")
    for k in kernels:
        if k not in KERNELS:
            raise ValueError(f"--confirm {k}: expected kernels of {', '.join(KERNELS)}")


def confirm_regression(trace: Path, kernels: tuple[str, ...] | list[str], log: Callable[[str], object] | None = None) -> dict[str, str]:
    """``mhp confirm --record`` of a regression on each kernel the lab has (traces/lab/setup.py lab_ready); the
    verdict per kernel (a kernel the lab lacks: 'not run: <why>', nothing recorded)."""
    from replay.confirm import confirm, record_verdict
    from traces.lab.setup import lab_ready

    out = {}
    for kernel in kernels:
        why = lab_ready(kernel)
        if why:
            out[kernel] = f"not run: {why}"
            continue
        v = confirm(str(trace), kernel)
        record_verdict(v)
        out[kernel] = v.verdict
        if log is not None:
            log(v.line())
    return out


def triage_steps(
    art: Path,
    mode: Mode,
    summary: Summary,
    regressions: Path,
    known: set[str],
    first_hit: float,
    minimize_seconds: float,
    confirm_kernels: tuple[str, ...] | list[str] | None = None,
) -> None:
    """Signature of a steps artifact; a new one is minimised, saved and (``confirm_kernels``) confirmed."""
    doc = decode(art.read_bytes())
    hit = None if doc is None else check_doc(doc, mode, frozenset(known))
    if hit is None or hit.signature in known:
        return
    assert doc is not None
    known.add(hit.signature)
    result = StepsMinimizer(mode, hit.signature, max_seconds=minimize_seconds, ignore=frozenset(known - {hit.signature})).run_doc(doc)
    n = len(result.doc["step"])
    note = f"{hit.signature}: found by mhp fuzz --target steps ({mode.describe()}); {result.hit.message}. Minimised to {n} steps" + (
        " (1-minimal in steps)." if result.one_minimal else "."
    )
    path = save_step_regression(regressions, hit.signature, mode, result.doc, note)
    info: dict[str, Any] = {"first_hit_s": first_hit, "events": n, "file": str(path), "message": result.hit.message}
    if confirm_kernels:
        verdicts = confirm_regression(path, confirm_kernels)
        if mode.variant and mode.diff == "ref":  # the trace is the reference model's: the real kernel judges the variant
            verdicts = {
                k: f"{v} (the real kernel decides as the reference model: variant {mode.variant} refuted)" if v == "confirmed" else v
                for k, v in verdicts.items()
            }
        info["verdicts"] = verdicts
    summary.signatures[hit.signature] = info
