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

    def add(self, obj: object, counter: str, delta: int) -> int:
        """``obj.counter += delta`` in u64, as the kernel does; returns the new value."""
        new = getattr(obj, counter) + delta
        if not 0 <= new <= MASK:
            kind = "ACCT-UNDERFLOW" if new < 0 else "ACCT-OVERFLOW"
            owner = type(obj).__name__
            self.findings.append(
                Finding(
                    kind,
                    self.event_index,
                    f"{owner}.{counter} {'-' if delta < 0 else '+'}= {abs(delta)} wraps (was {new - delta}) on {obj}",
                    (owner, counter),
                    {"object": str(obj), "counter": counter, "old": new - delta, "delta": delta},
                )
            )
            new &= MASK
        setattr(obj, counter, new)
        return new
