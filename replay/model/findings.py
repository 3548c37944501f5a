"""Findings: what an oracle reports, as plain data with a de-duplication signature."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Finding:
    """One oracle hit at one event; ``signature`` ignores ids and numbers that vary per input."""

    oracle: str
    event_index: int
    message: str
    key: tuple[str, ...] = ()  # normalised context that is part of the signature
    context: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def signature(self) -> str:
        return ":".join((self.oracle, *self.key))

    def to_json(self) -> dict[str, object]:
        return {
            "oracle": self.oracle,
            "signature": self.signature,
            "event_index": self.event_index,
            "message": self.message,
            "context": {k: _plain(v) for k, v in self.context.items()},
        }


def _plain(v: object) -> object:
    return v if isinstance(v, (int, str, bool, float, type(None))) else str(v)
