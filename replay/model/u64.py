"""The kernel's unsigned 64-bit counter arithmetic; wraps are recorded as findings."""

from __future__ import annotations

from replay.model.findings import Finding

MASK = (1 << 64) - 1
S64_MIN = 1 << 63


def to_s64(v: int) -> int:
    """Reinterpret a u64 value as s64 (two's complement)."""
    return v - (1 << 64) if v & S64_MIN else v


class Accounting:
    """Applies counter deltas modulo 2^64 and records every wrap-around as a finding."""

    __slots__ = ("event_index", "findings")

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.event_index = -1

    def add(self, old: int, delta: int, owner: object, counter: str) -> int:
        """``old + delta`` in u64 as the kernel computes ``owner.counter += delta``; wraps are findings."""
        new = old + delta
        if 0 <= new <= MASK:
            return new
        kind = "ACCT-UNDERFLOW" if new < 0 else "ACCT-OVERFLOW"
        kind_of = type(owner).__name__
        self.findings.append(
            Finding(
                kind,
                self.event_index,
                f"{kind_of}.{counter} {'-' if delta < 0 else '+'}= {abs(delta)} wraps (was {old}) on {owner}",
                (kind_of, counter),
                {"object": str(owner), "counter": counter, "old": old, "delta": delta},
            )
        )
        return new & MASK
