"""``mhp plot``: memory blocks over events coloured by zone, and MOVABLE:KERNEL against the ratio.

matplotlib is an optional extra (``pip install mhp-replay[plot]``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from replay.model.kernel import Kernel
from replay.model.machine import MEM_ONLINE, ZONE_MOVABLE
from replay.replayer import walk
from traces.atomic import atomic_path
from traces.events import Mark
from traces.reader import TraceReader

# Colour code per block and sample: what the block was at that moment.
ABSENT, OFFLINE, MULTI = 6, 5, 4  # zones 0-3 are their own codes
COLOURS = ["#7b3294", "#3a7dc9", "#e08214", "#1a9641", "#4d4d4d", "#d9d9d9", "#ffffff"]
LABELS = ["DMA", "DMA32", "Normal", "Movable", "several zones", "offline", "absent"]


@dataclass(slots=True)
class Samples:
    """The block layout and ratios at sample points of a trace."""

    first_block: int = 0
    last_block: int = 0
    events: list[int] = field(default_factory=list)  # event index of each sample
    rows: list[dict[int, int]] = field(default_factory=list)  # block -> colour code
    ratio: list[float] = field(default_factory=list)  # MOVABLE:KERNEL in %, system-wide
    node_ratio: dict[int, list[float]] = field(default_factory=dict)
    configured: list[int] = field(default_factory=list)
    marks: list[tuple[int, str]] = field(default_factory=list)


def ratio_of(k: Kernel, nid: int | None) -> float:
    """MOVABLE:KERNEL in % as the policy's documentation counts it (dynamic groups' kernel memory counts)."""
    movable = kernel = 0
    for node in k.m.nodes.values():
        if node.online and (nid is None or node.nid == nid):
            for z in node.zones:
                if z.idx is ZONE_MOVABLE:
                    movable += z.present_pages
                else:
                    kernel += z.present_early_pages
    kernel += sum(g.present_kernel_pages for g in k.m.groups.values() if g.is_dynamic and (nid is None or g.nid == nid))
    return 100.0 * movable / kernel if kernel else 0.0


def sample(path: str, profile: str | None = None, max_samples: int = 400) -> Samples:
    """Replay the trace and sample the layout at marks (scenario steps) or evenly."""
    with TraceReader(path) as r:
        total = sum(len(c.cols.events) for c in r.chunks())
    every = max(1, total // max_samples)
    s = Samples()
    seen: set[int] = set()
    for index, rec, k in walk(path, profile):
        if type(rec.event) is Mark:
            s.marks.append((index, rec.event.text))
        if index % every and index != total - 1:
            continue
        row = {}
        for b, mem in k.m.blocks.items():
            row[b] = (int(mem.zone.idx) if mem.zone is not None else MULTI) if mem.state is MEM_ONLINE else OFFLINE
        seen.update(row)
        s.events.append(index)
        s.rows.append(row)
        s.ratio.append(ratio_of(k, None))
        for nid, node in k.m.nodes.items():
            if node.online:
                s.node_ratio.setdefault(nid, [0.0] * (len(s.events) - 1)).append(ratio_of(k, nid))
        s.configured.append(k.m.params.auto_movable_ratio)
    if seen:
        s.first_block, s.last_block = min(seen), max(seen)
    return s


def plot(path: str, out: str, profile: str | None = None, title: str | None = None) -> None:
    """Write the picture (PNG, or anything matplotlib writes) atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import BoundaryNorm, ListedColormap
        from matplotlib.patches import Patch
    except ImportError:
        raise RuntimeError("mhp plot needs matplotlib: pip install 'mhp-replay[plot]'") from None
    s = sample(path, profile)
    width = s.last_block - s.first_block + 1
    grid = [[row.get(b, ABSENT) for b in range(s.first_block, s.last_block + 1)] for row in s.rows]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(12, 9), gridspec_kw={"height_ratios": [3, 1]}, sharex=False)
    cmap = ListedColormap(COLOURS)
    ax.imshow(
        grid,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        norm=BoundaryNorm(range(len(COLOURS) + 1), cmap.N),
        extent=(s.first_block - 0.5, s.first_block + width - 0.5, len(s.rows) - 0.5, -0.5),
    )
    ticks = list(range(0, len(s.events), max(1, len(s.events) // 10)))
    ax.set_yticks(ticks, [str(s.events[i]) for i in ticks])
    ax.set_ylabel("event (time runs down)")
    ax.set_xlabel("memory block")
    ax.set_title(title or f"{os.path.basename(path)}: memory blocks by zone")
    ax.legend(
        handles=[Patch(facecolor=c, edgecolor="#999999", label=lab) for c, lab in zip(COLOURS, LABELS, strict=True)],
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=9,
    )
    xs = s.events
    ax2.plot(xs, s.ratio, color="#1a9641", lw=2, label="MOVABLE:KERNEL, system")
    if len(s.node_ratio) > 1:
        for nid, values in sorted(s.node_ratio.items()):
            ax2.plot(xs, values, lw=1, ls=":", label=f"node {nid}")
    ax2.step(xs, s.configured, where="post", color="#d7191c", ls="--", lw=1.5, label="auto_movable_ratio")
    ax2.set_ylabel("%")
    ax2.set_xlabel("event")
    ax2.set_xlim(xs[0], xs[-1] if len(xs) > 1 else xs[0] + 1)
    ax2.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110, format=os.path.splitext(out)[1][1:] or "png")
    finally:
        plt.close(fig)
