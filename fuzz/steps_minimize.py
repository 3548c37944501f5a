"""Signature-preserving minimisation of steps inputs (fuzz/steps.py) at the step level, keeping them expressible.

The passes of fuzz/minimize.py over the list of steps (the tail after the hit's step cut, ddmin, one by one, so the
result is 1-minimal in steps), then simplification to a fixed point: sizes to fewer blocks, block ranges to one
block, online types and attributes to their defaults, ratio writes to round values, command-line words and
virtio-mem devices dropped, the preset made the plain 4 GiB q35. A candidate counts only if it keeps the signature
and its simulated trace still translates without an obstacle (replay/translate.py): the reproducer stays one
``mhp confirm`` can run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fuzz.check import Hit, Mode
from fuzz.minimize import Budget, Minimizer, deadline
from fuzz.steps import CMDLINE, _range, cmdline_text, cmdline_words, encode, normalize, obstacle, step_of_event
from fuzz.steps_check import check_doc, doc_events
from traces.lab.run import size_text
from traces.machines import PRESETS
from traces.scenario import parse_size

PLAIN_PRESET = "qemu-q35-4G"


@dataclass(slots=True)
class StepsResult:
    """The minimised document and how we got there."""

    doc: dict[str, Any]
    hit: Hit  # what the minimised document produces
    replays: int
    seconds: float
    one_minimal: bool  # the one-by-one pass over the steps completed within the budget

    @property
    def signature(self) -> str:
        return self.hit.signature


class StepsMinimizer(Minimizer):
    """Shrinks a document while it keeps ``signature`` (by default its first) and stays expressible; the
    signatures it hits before are ignored. ddmin and the one-by-one pass are fuzz/minimize.py's, over steps."""

    def __init__(self, mode: Mode, signature: str | None, *, max_replays: int = 5000, max_seconds: float = 60.0, ignore: frozenset[str] = frozenset()) -> None:
        super().__init__(mode, signature, max_replays=max_replays, max_seconds=max_seconds, ignore=ignore)
        self.base: dict[str, Any] = {}
        self.expressible: dict[bytes, bool] = {}

    def doc_of(self, steps: list[Any]) -> dict[str, Any]:
        """The normal form of the current base with these steps."""
        doc = {**self.base, "step": steps}
        return normalize(doc, PRESETS[doc["machine"]["preset"]])

    def doc_hit(self, doc: dict[str, Any]) -> Hit | None:
        return self.cached(encode(doc), lambda: check_doc(doc, self.mode, self.ignore))

    def keeps_doc(self, doc: dict[str, Any]) -> bool:
        """The document hits the signature and is expressible on the mode's profile."""
        h = self.doc_hit(doc)
        if h is None or h.signature != self.signature:
            return False
        key = encode(doc)
        if key not in self.expressible:
            with deadline(self.deadline):
                self.expressible[key] = obstacle(doc, self.mode.profile) is None
        return self.expressible[key]

    def keeps(self, events: list[Any]) -> bool:  # the steps, for fuzz/minimize.py's passes
        return self.keeps_doc(self.doc_of(events))

    def run_doc(self, doc: dict[str, Any], progress: Callable[[str, int], object] | None = None) -> StepsResult:
        """Minimise a normal-form document (ValueError if it does not hit the signature)."""
        t0 = time.monotonic()
        self.base = {k: copy.deepcopy(v) for k, v in doc.items() if k != "step"}
        events = doc_events(doc, self.mode)
        if events is None:
            raise ValueError("the document does not simulate")
        first = self.first_hit(events, lambda: self.doc_hit(doc), t0)
        cur = list(doc["step"])
        one_minimal = False
        try:
            last = step_of_event(events)[first.index]
            if 0 <= last < len(cur) - 1 and self.keeps(cur[: last + 1]):
                cur = cur[: last + 1]  # the steps after the hit's cannot matter
            cur = self.doc_of(self._ddmin(cur, progress))["step"] if len(cur) > 1 else cur
            cur, one_minimal = self._one_by_one(cur, progress) if len(cur) > 1 else (cur, True)
            cur = self._simplify_doc(cur, progress)
            if one_minimal and len(cur) > 1:
                cur, one_minimal = self._one_by_one(cur, progress)
        except Budget:
            pass
        out = self.doc_of(cur)
        hit = self.cache.get(encode(out)) or check_doc(out, self.mode, self.ignore)  # checked: the last candidate kept
        if hit is None or hit.signature != self.signature:  # (never: every step above keeps the signature) the input itself
            out, hit, one_minimal = doc, first, False
        return StepsResult(out, hit, self.replays, time.monotonic() - t0, one_minimal)

    def _simplify_doc(self, steps: list[Any], progress: Callable[[str, int], object] | None) -> list[Any]:
        """Simpler bases and steps while the signature stays (fixed point)."""
        changed = True
        while changed:
            changed = False
            for base in simpler_bases(self.base):
                doc = {**base, "step": steps}
                fixed = normalize(doc, PRESETS[base["machine"]["preset"]])
                if self.keeps_doc(fixed):
                    steps, changed = fixed["step"], True
                    self.base = {k: v for k, v in fixed.items() if k != "step"}  # its devices renamed as its steps name them
                    if progress:
                        progress("simplify", len(steps))
                    break
            for i, s in enumerate(steps):
                for simpler in simpler_steps(s, PRESETS[self.base["machine"]["preset"]].block_size, self.base["device"]):
                    cand = self.doc_of([*steps[:i], simpler, *steps[i + 1 :]])
                    if self.keeps_doc(cand):
                        steps, changed = cand["step"], True
                        if progress:
                            progress("simplify", len(steps))
                        break
                if changed:
                    break
        return steps


def simpler_bases(base: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The document's machine, command line and devices made simpler one at a time, simplest first: a device
    dropped (its steps with it, by normalize), a command-line word dropped, the plain preset, a device's block
    size and node reset and its maximum size halved."""
    for k in range(len(base["device"])):
        yield {**base, "device": [d for j, d in enumerate(base["device"]) if j != k]}
    words = cmdline_words(base["kernel"]["cmdline"])
    for name in CMDLINE:
        if name in words:
            yield {**base, "kernel": {"cmdline": cmdline_text({w: v for w, v in words.items() if w != name})}}
    if base["machine"]["preset"] != PLAIN_PRESET:
        yield {**base, "machine": {"preset": PLAIN_PRESET}}
    for k, d in enumerate(base["device"]):
        for simpler in (
            {kk: v for kk, v in d.items() if kk != "block_size"},
            {**d, "node": 0},
            {**d, "max_size": size_text((parse_size(d["max_size"]) or 0) // 2)},
        ):
            if simpler != d:
                yield {**base, "device": [*base["device"][:k], simpler, *base["device"][k + 1 :]]}


def simpler_steps(s: dict[str, Any], block: int, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Simpler versions of one step, simplest first: fewer blocks (one, half), one block of a range, default
    online type and attribute, node 0, a round auto_movable_ratio."""
    out: list[dict[str, Any]] = []
    if "dimm" in s:
        n = (parse_size(s["dimm"]) or block) // block
        out += [{**s, "dimm": size_text(k * block)} for k in dict.fromkeys((1, n // 2, n - 1)) if 0 < k < n]
        if s.get("node"):
            out.append({**s, "node": 0})
    elif "vmem" in s:
        dev = next((d for d in devices if d["id"] == s["vmem"]), None)
        unit = max(parse_size(dev.get("block_size", "2M")) or 0, block) if dev else block
        n = (parse_size(s["size"]) or 0) // unit
        out += [{**s, "size": size_text(k * unit) if k else "0"} for k in dict.fromkeys((0, 1, n // 2, n - 1)) if 0 <= k < n]
    elif "online" in s or "offline" in s:
        action = "online" if "online" in s else "offline"
        first, last = _range(s[action])
        if last > first:
            mid = (first + last) // 2
            out += [{**s, action: b} for b in (first, last)] + [{**s, action: f"{first}-{mid}" if mid > first else first}]
        for key in ("type", "attr"):
            if key in s:
                out.append({k: v for k, v in s.items() if k != key})
    elif s.get("param") == "auto_movable_ratio":
        out += [{**s, "value": v} for v in ROUND_RATIOS if v != s["value"]]
    return out


ROUND_RATIOS = ("301", "100", "0")  # the default first
