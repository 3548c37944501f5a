"""mhp simulate against the lab's observation JSON (corpus/observed/lab/<kernel>/<scenario>.json): after every step
the same blocks (state, valid_zones, node), present pages and managed pages since boot, up to the first step whose
outcome the model marks as one it cannot predict and that came out otherwise on the real kernel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from replay.simulate import StepResult, simulate
from traces.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
LAB = sorted((ROOT / "corpus" / "observed" / "lab").glob("*/*.json"))


def model_state(res: StepResult) -> tuple[dict[int, tuple[str, str, int]], dict[tuple[int, str], tuple[int, int]]]:
    blocks = {b: (r.state, ",".join(r.valid_zones), r.node) for r in res.runs for b in range(r.first, r.last + 1)}
    zones = {(int(str(z["node"])), str(z["zone"])): (int(str(z["present"])), int(str(z["managed_since_boot"]))) for z in res.zones}
    return blocks, zones


def lab_state(sample: dict[str, Any], boot: dict[tuple[int, str], int]) -> tuple[dict[int, tuple[str, str, int]], dict[tuple[int, str], tuple[int, int]]]:
    blocks = {int(b): (v["state"], v["zones"], v["node"]) for b, v in sample["blocks"].items()}
    zones = {(z["node"], z["zone"]): (z["present"], z["managed"] - boot[(z["node"], z["zone"])]) for z in sample["zones"] if z["zone"] != "Device"}
    return blocks, zones


@pytest.mark.parametrize("path", LAB, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_simulate_agrees_with_the_lab_after_every_step(path: Path) -> None:
    observed = json.loads(path.read_text())
    results = list(simulate(load_scenario(ROOT / "corpus" / "scenarios" / f"{path.stem}.toml"), path.parent.name))
    assert len(results) == len(observed["results"])
    boot = {(z["node"], z["zone"]): z["managed"] for z in observed["results"][0]["zones"]}
    marked = False
    for res, sample in zip(results, observed["results"], strict=True):
        marked = marked or bool(res.unknowable)
        if model_state(res) != lab_state(sample, boot):
            assert marked, f"step {res.index} ({res.label}) differs from the lab and no step so far was marked unknowable"
            break  # what follows an outcome the model had to assume is not comparable
