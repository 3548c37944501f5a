"""What a real kernel would show after an event, as observation events filled in by the model.

Used to write simulated and generated traces that carry outcomes, exactly like recorded ones.
"""

from __future__ import annotations

from replay.model.machine import Machine
from replay.model.memory import valid_zones
from replay.model.outcome import Outcome
from traces.digest import state_digest
from traces.events import BlockObserved, BlockState, Event, Result, StateDigest, ZoneObserved, ZoneType, kind_of


def observe_outcome(m: Machine, ev: Event, out: Outcome) -> list[Event]:
    """Result of a request plus the state of every block it changed."""
    if kind_of(ev) != "request":
        return []
    obs: list[Event] = [Result(out.rc)]
    for b in dict.fromkeys(ch.block for ch in out.changes):
        obs.append(observe_block(m, b))
    return obs


def observe_block(m: Machine, block: int) -> BlockObserved:
    """memoryN as sysfs would show it (an absent block: state absent)."""
    mem = m.blocks.get(block)
    if mem is None:
        return BlockObserved(block, BlockState.ABSENT, -1, ())
    zones = tuple(z for z in valid_zones(m, mem) if z is not ZoneType.NONE)
    return BlockObserved(block, mem.state, mem.nid, zones)


def observe_zones(m: Machine) -> list[ZoneObserved]:
    """/proc/zoneinfo of every online node (managed: the model's, an upper bound where the snapshot did not give it)."""
    return [
        ZoneObserved(n.nid, z.idx, z.present_pages, z.spanned_pages, z.zone_start_pfn, z.managed_pages)
        for n in sorted(m.nodes.values(), key=lambda n: n.nid)
        if n.online
        for z in n.zones
    ]


def model_digest(m: Machine) -> StateDigest:
    """traces.digest.state_digest of the model's blocks and zones."""
    online = BlockState.ONLINE
    blocks = [(b.id, b.state, b.zone.idx if b.zone is not None and b.state is online else 255) for b in m.blocks.values()]
    zones = [(n.nid, z.idx, z.present_pages) for n in m.nodes.values() if n.online for z in n.zones]
    return StateDigest(state_digest(blocks, zones))
