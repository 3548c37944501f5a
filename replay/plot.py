"""``mhp plot``: memory blocks over events coloured by zone, and MOVABLE:KERNEL against the ratio.

matplotlib is an optional extra (``pip install mhp-replay[plot]``).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from typing import Any

from replay.model.kernel import Kernel
from replay.model.machine import MEM_ONLINE, ZONE_MOVABLE
from replay.replayer import walk
from traces.atomic import atomic_path
from traces.errors import TraceFormatError
from traces.events import Mark
from traces.reader import TraceReader

# Colour code per block and sample: what the block was at that moment.
ABSENT, OFFLINE, MULTI = 6, 5, 4  # zones 0-3 are their own codes
COLOURS = ["#7b3294", "#3a7dc9", "#e08214", "#1a9641", "#4d4d4d", "#d9d9d9", "#ffffff"]
LABELS = ["DMA", "DMA32", "Normal", "Movable", "several zones", "offline", "absent"]


CELL_BUDGET = 1 << 22  # block states visited while sampling (bounds time and memory on the largest machines)
MAX_COLUMNS = 1200  # picture columns: wider block ranges are binned (the figure is about 1300 pixels wide)
Run = tuple[int, int, int]  # first block, last block, colour code


@dataclass(slots=True)
class Samples:
    """The block layout and ratios at sample points of a trace."""

    first_block: int = 0
    last_block: int = 0
    events: list[int] = field(default_factory=list)  # event index of each sample
    rows: list[list[Run]] = field(default_factory=list)  # runs of blocks alike, in block order
    ratio: list[float] = field(default_factory=list)  # MOVABLE:KERNEL in %, system-wide
    node_ratio: dict[int, list[float]] = field(default_factory=dict)
    configured: list[int] = field(default_factory=list)
    marks: list[tuple[int, str]] = field(default_factory=list)


def code_at(row: list[Run], block: int) -> int:
    """The colour code of ``block`` in a sampled row (ABSENT if it had no memory block)."""
    i = bisect.bisect_right(row, (block, 1 << 62, 0)) - 1
    return row[i][2] if i >= 0 and row[i][0] <= block <= row[i][1] else ABSENT


def _runs(k: Kernel) -> list[Run]:
    runs: list[list[int]] = []
    blocks = k.m.blocks
    for b in sorted(blocks):
        mem = blocks[b]
        code = (int(mem.zone.idx) if mem.zone is not None else MULTI) if mem.state is MEM_ONLINE else OFFLINE
        if runs and runs[-1][1] == b - 1 and runs[-1][2] == code:
            runs[-1][1] = b
        else:
            runs.append([b, b, code])
    return [(a, b, c) for a, b, c in runs]


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


def sample(path: str, profile: str | None = None, max_samples: int = 400, budget: int = CELL_BUDGET) -> Samples:
    """Replay the trace and sample the layout at up to ``max_samples`` evenly spread events (and the
    last); samples thin out so that about ``budget`` block states are visited in all."""
    with TraceReader(path) as r:
        total = sum(len(c.cols.events) for c in r.chunks())
    if not total:
        raise TraceFormatError("the trace has no events: nothing to plot", path=path, record=0)
    every = max(1, total // max_samples)
    s = Samples()
    low, high = 1 << 62, -1
    next_at = 0
    for index, rec, k in walk(path, profile):
        if type(rec.event) is Mark:
            s.marks.append((index, rec.event.text))
        if index < next_at and index != total - 1:
            continue
        blocks = len(k.m.blocks)
        next_at = index + max(every, -(-blocks * total // budget))
        row = _runs(k)
        if row:
            low, high = min(low, row[0][0]), max(high, row[-1][1])
        s.events.append(index)
        s.rows.append(row)
        s.ratio.append(ratio_of(k, None))
        for nid, node in k.m.nodes.items():
            if node.online:
                s.node_ratio.setdefault(nid, [0.0] * (len(s.events) - 1)).append(ratio_of(k, nid))
        s.configured.append(k.m.params.auto_movable_ratio)
    if high >= 0:
        s.first_block, s.last_block = low, high
    return s


def grid(s: Samples, columns: int = MAX_COLUMNS) -> tuple[list[list[int]], int]:
    """The picture's cells (one row per sample) and the blocks per column (1, or more when the block
    range is wider than ``columns``: a column then shows its blocks' last run)."""
    width = s.last_block - s.first_block + 1
    per = -(-width // columns)
    cells = []
    for row in s.rows:
        line = [ABSENT] * -(-width // per)
        for a, b, code in row:
            for c in range((a - s.first_block) // per, (b - s.first_block) // per + 1):
                line[c] = code
        cells.append(line)
    return cells, per


def plot(path: str, out: str, profile: str | None = None, title: str | None = None) -> None:
    """Write the picture (PNG, or anything matplotlib writes) atomically."""
    plt = _pyplot()
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    s = sample(path, profile)
    cells, per = grid(s)
    width = len(cells[0]) * per
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(12, 9), gridspec_kw={"height_ratios": [3, 1]}, sharex=False)
    cmap = ListedColormap(COLOURS)
    ax.imshow(
        cells,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        norm=BoundaryNorm(range(len(COLOURS) + 1), cmap.N),
        extent=(s.first_block - 0.5, s.first_block + width - 0.5, len(s.rows) - 0.5, -0.5),
    )
    ticks = list(range(0, len(s.events), max(1, len(s.events) // 10)))
    ax.set_yticks(ticks, [str(s.events[i]) for i in ticks])
    ax.set_ylabel("event (time runs down)")
    ax.set_xlabel("memory block" if per == 1 else f"memory block ({per} per column)")
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
    _save(plt, fig, out)


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; RuntimeError naming the extra if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("mhp plot needs matplotlib: pip install 'mhp-replay[plot]'") from None
    return plt


def _save(plt: Any, fig: Any, out: str) -> None:
    """Lay out and write the figure atomically (the format from the file name, else PNG), then free it."""
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110, format=os.path.splitext(out)[1][1:] or "png")
    finally:
        plt.close(fig)


def fleet_grid(report: dict[str, object]) -> tuple[list[str], list[str], list[list[int]]]:
    """(signatures, kernel releases, findings[signature][release]) of a fleet report's JSON;
    divergence kinds come as ``divergence:KIND`` rows."""
    by_release = report.get("by_release")
    if not isinstance(by_release, dict):
        raise ValueError("not a fleet report (the JSON of mhp replay --cluster ... --json): no by_release")
    releases = sorted(by_release)
    rows: dict[str, dict[str, int]] = {}
    for rel, g in by_release.items():
        for sig, n in g.get("finding_signatures", {}).items():
            rows.setdefault(sig, {})[rel] = n
        for kind, n in g.get("divergences_by_kind", {}).items():
            rows.setdefault(f"divergence:{kind}", {})[rel] = n
    names = sorted(rows)
    return names, releases, [[rows[n].get(r, 0) for r in releases] for n in names]


def plot_fleet(report_path: str, out: str) -> None:
    """Findings per signature (and divergences per kind) by kernel release, from a fleet report, written atomically."""
    import json

    plt = _pyplot()
    with open(report_path, "rb") as f:
        data = f.read()
    try:
        report = json.loads(data)
    except json.JSONDecodeError as e:
        raise ValueError(f"{report_path}:{e.lineno}:{e.colno}: not JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{report_path}: byte {e.start}: not JSON (not UTF-8 text)") from None
    try:
        names, releases, grid = fleet_grid(report if isinstance(report, dict) else {})
    except ValueError as e:
        raise ValueError(f"{report_path}: {e}") from None
    traces = {r: report["by_release"][r].get("traces", 0) for r in releases}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(releases) + 4), max(2.5, 0.42 * len(names) + 1.8)))
    if names:
        ax.imshow([[n or float("nan") for n in row] for row in grid], aspect="auto", cmap="YlOrRd", interpolation="nearest")
        top = max(max(row) for row in grid)
        for y, row in enumerate(grid):
            for x, n in enumerate(row):
                ax.text(x, y, f"{n:,}" if n else "", ha="center", va="center", fontsize=8, color="white" if n > top / 2 else "black")
        ax.set_yticks(range(len(names)), names, fontsize=8)
    else:
        ax.text(0.5, 0.5, "no findings and no divergences", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_xticks(range(len(releases)), [f"{r}\n({traces[r]:,} traces)" for r in releases], fontsize=8)
    ax.set_title(f"{os.path.basename(report_path)}: findings per signature by kernel release")
    _save(plt, fig, out)
