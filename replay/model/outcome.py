"""What applying one event did: return code, block transitions and zone decisions."""

from __future__ import annotations

from dataclasses import dataclass, field

from replay.model.findings import Finding
from traces.events import BlockState, OnlineType, ZoneType


class AutoMovableStats:
    """The numbers of one auto_movable_can_online_movable evaluation, for reports."""

    __slots__ = ("gmov", "group_kernel", "kernel_early", "limit", "movable", "nid", "nr_pages", "req", "result")

    def __init__(self, nid: int, movable: int, kernel_early: int, req: int, gmov: int, group_kernel: int, nr_pages: int, limit: int, result: bool) -> None:
        self.nid = nid
        self.movable = movable
        self.kernel_early = kernel_early
        self.req = req
        self.gmov = gmov
        self.group_kernel = group_kernel
        self.nr_pages = nr_pages
        self.limit = limit
        self.result = result

    def to_json(self) -> dict[str, int | bool]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(frozen=True, slots=True)
class BlockChange:
    """A block appeared, changed state or disappeared; ``zone`` is the zone it entered or left."""

    block: int
    nid: int
    mgid: int  # -1: no group
    state: BlockState
    zone: ZoneType
    pages: int  # present pages moved by the change (0 for add/remove)


@dataclass(frozen=True, slots=True)
class Decision:
    """One zone decision made while onlining a block (zone_for_pfn_range)."""

    block: int
    online_type: OnlineType
    policy_decided: bool  # MMOP_ONLINE under auto-movable: the policy chose, not the user
    zone: ZoneType
    stats: tuple[AutoMovableStats, ...]


@dataclass(slots=True)
class Outcome:
    """Result of one event: rc is 0/-errno (or a group id for GroupRegister)."""

    rc: int = 0
    changes: list[BlockChange] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
