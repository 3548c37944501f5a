"""What applying one event did: return code, block transitions and zone decisions."""

from __future__ import annotations

import errno
from typing import NamedTuple

from replay.model.findings import Finding
from traces.events import BlockState, OnlineType, ZoneType


class AutoMovableStats(NamedTuple):
    """The numbers of one auto_movable_can_online_movable evaluation, for reports."""

    nid: int  # -1: the system-wide check
    movable: int
    kernel_early: int
    req: int
    gmov: int
    group_kernel: int
    nr_pages: int
    limit: int
    result: bool

    def to_json(self) -> dict[str, int | bool]:
        return self._asdict()


class BlockChange(NamedTuple):
    """A block appeared, changed state or disappeared; ``zone`` is the zone it entered or left."""

    block: int
    nid: int
    mgid: int  # -1: no group
    state: BlockState
    zone: ZoneType
    pages: int  # present pages moved by the change (0 for add/remove)


class Decision(NamedTuple):
    """One zone decision made while onlining a block (zone_for_pfn_range)."""

    block: int
    online_type: OnlineType
    policy_decided: bool  # MMOP_ONLINE under auto-movable: the policy chose, not the user
    zone: ZoneType
    stats: tuple[AutoMovableStats, ...]


class Unknowable(NamedTuple):
    """A block operation whose outcome depends on what no model can know (which pages the kernel
    allocated where): computed for ``answer`` (the kernel's -errno, given as an input fact) or, with
    no answer (0), for success."""

    block: int
    op: str  # "offline"
    reason: str
    answer: int  # the injected -errno, 0: none given (success assumed)

    def to_json(self) -> dict[str, object]:
        name = errno.errorcode.get(-self.answer, str(self.answer)) if self.answer else None
        return {"block": self.block, "op": self.op, "reason": self.reason, "answer": name, "assumed": None if self.answer else "success"}

    def describe(self) -> str:
        then = f"the kernel's answer {errno.errorcode.get(-self.answer, self.answer)}" if self.answer else "success assumed"
        return f"{self.op} memory{self.block}: outcome the model cannot predict ({self.reason}); {then}"


class Outcome:
    """Result of one event: rc is 0/-errno (or a group id for GroupRegister)."""

    __slots__ = ("changes", "decisions", "findings", "rc", "unknowable")

    def __init__(self) -> None:
        self.rc = 0
        self.changes: list[BlockChange] = []
        self.decisions: list[Decision] = []
        self.findings: list[Finding] = []
        self.unknowable: tuple[Unknowable, ...] = ()  # rare: a tuple, replaced when one is added
