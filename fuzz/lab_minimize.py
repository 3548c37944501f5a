"""Minimising a lab finding (fuzz/lab.py): the steps of its scenario, each candidate run on the real kernel.

fuzz/minimize.py's ddmin and one-by-one passes over the steps; a candidate keeps the finding when its real trace
diverges from the model (or the variant) under the same ``LAB:`` signature. The machine, command line and devices
stay as found, so every candidate restores the finding's snapshot. The budget counts lab runs and seconds; a run once
started is not interrupted (the guest ends with it), so the time budget can be overrun by one run.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fuzz import steps
from fuzz.check import Mode
from fuzz.lab import LabOutcome, LabTask, divergence_signature, doc_name, run_input
from fuzz.minimize import Budget, Minimizer


@dataclasses.dataclass(slots=True)
class LabShrink:
    """What minimising a finding gave: the smallest outcome that keeps it, and how we got there."""

    outcome: LabOutcome
    steps_before: int
    lab_runs: int
    seconds: float
    one_minimal: bool  # the one-by-one pass completed within the budget

    def to_json(self) -> dict[str, Any]:
        steps_after = len(self.outcome.doc["step"])
        return {"steps": [self.steps_before, steps_after], "lab_runs": self.lab_runs, "seconds": round(self.seconds, 1), "one_minimal": self.one_minimal}


class LabMinimizer(Minimizer):
    """Shrinks the steps of ``task``'s document while its lab run keeps the divergence ``signature``."""

    def __init__(self, task: LabTask, signature: str, variant: str | None, *, max_runs: int, max_seconds: float) -> None:
        super().__init__(Mode(task.kernel, variant), signature, max_replays=max_runs, max_seconds=max_seconds)
        self.task = task
        self.variant = variant
        self.outcomes: dict[bytes, LabOutcome] = {}

    def doc_of(self, steps_: list[Any]) -> dict[str, Any]:
        return {**self.task.doc, "step": steps_}

    def keeps(self, events: list[Any]) -> bool:  # the steps, for fuzz/minimize.py's passes
        doc = self.doc_of(events)
        key = steps.encode(doc)
        if key not in self.outcomes:
            self.spend()
            out = run_input(dataclasses.replace(self.task, name=doc_name(doc), doc=doc))
            self.replays -= out.invalid  # a candidate that is no scenario (an unplug of a DIMM dropped) runs no guest
            self.outcomes[key] = out
        out = self.outcomes[key]
        return out.error is None and out.divergence is not None and divergence_signature(out.divergence, self.variant) == self.signature

    def shrink(self, found: LabOutcome) -> LabShrink:
        """The smallest outcome keeping the signature that the budget reached (``found`` is the task's run)."""
        t0 = time.monotonic()
        cur = list(found.doc["step"])
        self.outcomes[steps.encode(self.doc_of(cur))] = found
        one_minimal = False
        try:
            if len(cur) > 1:
                cur = self._ddmin(cur, None)
            cur, one_minimal = self._one_by_one(cur, None) if len(cur) > 1 else (cur, True)  # one step: nothing to remove
        except Budget:
            pass
        return LabShrink(self.outcomes[steps.encode(self.doc_of(cur))], len(found.doc["step"]), self.replays, time.monotonic() - t0, one_minimal)
