"""The report's chart: measured accuracy per experiment beside the seeds' claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.plots.base import plt, save  # the report's figure lives here so that changing it retrains nothing
from cnnlab.report.rows import Row


def claims_chart(rows: list[Row], title: str, path: Path) -> Path:
    """Measured accuracy per experiment as bars, the seed's claim as a black tick (none where it is qualitative);
    a quick-budget bar below its floor is red."""
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.6), 4))
    positions = np.arange(len(rows))
    heights = [np.nan if r.measured is None else 100 * r.measured for r in rows]
    colours = ["tab:red" if r.below_floor else "tab:blue" if r.budget == "full" else "tab:gray" for r in rows]
    ax.bar(positions, heights, color=colours, width=0.7)
    ticks = [(x, 100 * r.claimed) for x, r in zip(positions, rows, strict=True) if r.claimed is not None]
    if ticks:
        xs, ys = zip(*ticks, strict=True)
        ax.scatter(xs, ys, marker="_", s=400, color="black", label="seed's claim", zorder=3)
        ax.legend(loc="lower right")
    ax.set_xticks(positions, [r.id for r in rows], rotation=45, ha="right")
    ax.set(ylim=(0, 100), ylabel="accuracy (%)", title=f"{title} (blue: full budget, grey: quick, red: below floor)")
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)
