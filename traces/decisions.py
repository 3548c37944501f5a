"""Zone decisions a trace reports, and how many of them it observed directly (``mhp info``).

A decision is a block going online: an ``online_block`` request, or each block of an ``add_memory`` made while
``auto_online_blocks`` was not ``offline`` (the kernel onlines it). It is observed directly when the next
``block_observed`` of that block, before any other request on it, shows it online in exactly one zone: the zone
came from the kernel's own sysfs, not from the model or the recorder's inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from traces.codec import Record
from traces.events import AddMemory, BlockObserved, BlockState, BootMachine, BootParams, OfflineBlock, OnlineBlock, OnlineType, Param, ParamWrite


@dataclass(slots=True)
class DecisionCount:
    """Feed records in order; ``total`` decisions, ``observed`` directly."""

    total: int = 0
    observed: int = 0
    block_size: int = 0
    auto_online: bool = False
    pending: set[int] = field(default_factory=set)

    def feed(self, rec: Record) -> None:
        ev = rec.event
        if isinstance(ev, BootMachine):
            self.block_size = ev.block_size
        elif isinstance(ev, BootParams):
            self.auto_online = ev.auto_online_blocks is not OnlineType.OFFLINE
        elif isinstance(ev, ParamWrite) and ev.param is Param.AUTO_ONLINE_BLOCKS:
            self.auto_online = ev.value.strip() != "offline"
        elif isinstance(ev, AddMemory) and self.auto_online and self.block_size:
            first = ev.start // self.block_size
            self.decide(range(first, first + ev.size // self.block_size))
        elif isinstance(ev, OnlineBlock):
            self.decide((ev.block,))
        elif isinstance(ev, OfflineBlock):
            self.pending.discard(ev.block)
        elif isinstance(ev, BlockObserved) and ev.block in self.pending:
            self.pending.discard(ev.block)
            self.observed += ev.state is BlockState.ONLINE and len(ev.valid_zones) == 1

    def decide(self, blocks: range | tuple[int, ...]) -> None:
        self.total += len(blocks)
        self.pending.update(blocks)

    def to_json(self) -> dict[str, object]:
        return {"total": self.total, "observed": self.observed, "share": round(self.observed / self.total, 4) if self.total else None}
