"""Block layouts in the seed's style: one line per run of alike consecutive blocks, plus zone tables."""

from __future__ import annotations

from dataclasses import dataclass

from replay.model.machine import Machine
from replay.model.memory import valid_zones
from traces.events import BlockState, ZoneType

STATE_NAMES = {BlockState.ONLINE: "online", BlockState.OFFLINE: "offline", BlockState.GOING_OFFLINE: "going-offline"}


@dataclass(slots=True)
class Run:
    """A maximal run of consecutive blocks with the same node, state, zone and group."""

    first: int
    last: int
    node: int
    state: str
    zone: str | None  # online: the zone ("none" for multi-zone early blocks); offline: None
    group: str | None
    valid_zones: tuple[str, ...]

    def key(self) -> tuple[object, ...]:
        return (self.node, self.state, self.zone, self.group, self.valid_zones)

    def to_json(self) -> dict[str, object]:
        return {
            "first": self.first,
            "last": self.last,
            "node": self.node,
            "state": self.state,
            "zone": self.zone,
            "group": self.group,
            "valid_zones": list(self.valid_zones),
        }


def block_runs(m: Machine, group_names: dict[int, str] | None = None) -> list[Run]:
    """The layout of all present blocks as runs."""
    names = group_names or {}
    runs: list[Run] = []
    for bid in sorted(m.blocks):
        mem = m.blocks[bid]
        zones = tuple(z.label for z in valid_zones(m, mem))
        online = mem.state is BlockState.ONLINE
        group = None if mem.group is None else names.get(mem.group.mgid, f"group{mem.group.mgid}")
        run = Run(bid, bid, mem.nid, STATE_NAMES[mem.state], zones[0] if online else None, group, zones)
        if runs and runs[-1].last == bid - 1 and runs[-1].key() == run.key():
            runs[-1].last = bid
        else:
            runs.append(run)
    return runs


def zone_table(m: Machine) -> list[dict[str, object]]:
    """Per-zone span, present and managed pages of every online node, as /proc/zoneinfo shows them.

    ``managed`` is null where the snapshot did not give the zone's managed boot pages (presets);
    ``managed_since_boot`` is the change the model accounted since, known either way.
    """
    out = []
    for nid in sorted(m.nodes):
        node = m.nodes[nid]
        if not node.online:
            continue
        for z in node.zones:
            out.append(
                {
                    "node": nid,
                    "zone": z.idx.label,
                    "present": z.present_pages,
                    "managed": z.managed_pages if z.managed_known else None,
                    "managed_since_boot": z.managed_pages - z.boot_managed,
                    "spanned": z.spanned_pages,
                    "start_pfn": z.zone_start_pfn,
                }
            )
    return out


def format_runs(runs: list[Run], multi_node: bool) -> list[str]:
    """Seed-style lines: ``Memory block 48-79:   Movable (dimm0)``."""
    lines = []
    for r in runs:
        ids = f"{r.first}" if r.first == r.last else f"{r.first}-{r.last}"
        what = r.zone if r.state == "online" else f"{r.state} [{' '.join(r.valid_zones)}]"
        extra = [f"node {r.node}"] if multi_node else []
        if r.group:
            extra.append(r.group)
        suffix = f" ({', '.join(extra)})" if extra else ""
        lines.append(f"{'Memory block ' + ids + ':':<24}{what}{suffix}")
    return lines


def format_zones(m: Machine) -> list[str]:
    """Populated zones with present, managed and spanned pages (managed ``boot+N``: boot pages not in the snapshot)."""
    return format_zone_rows(zone_table(m))


def format_zone_rows(table: list[dict[str, object]]) -> list[str]:
    """The populated rows of a zone_table as text."""
    lines = []
    for z in table:
        if z["present"] or z["spanned"]:
            end = int(str(z["start_pfn"])) + int(str(z["spanned"]))
            since = int(str(z["managed_since_boot"]))
            managed = str(z["managed"]) if z["managed"] is not None else f"boot{since:+d}" if since else "boot"
            lines.append(f"  node {z['node']} {z['zone']:<8} present {z['present']:>9}  managed {managed:>9}  span [{z['start_pfn']}, {end})")
    return lines


ZONE_BY_LABEL = {z.label: z for z in ZoneType}
