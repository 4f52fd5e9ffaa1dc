"""An experiment grid's test accuracies: one column per experiment, one dot per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.plots.base import plt, save


def seed_dots(scores: dict[str, list[float]], title: str, path: Path) -> Path:
    """Each experiment's test accuracy per seed as dots (jittered sideways only), its mean as a bar."""
    names = list(scores)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(names) + 2), 4))
    rng = np.random.default_rng(0)  # jitter only, so the dots of equal scores do not hide each other
    for i, name in enumerate(names):
        values = scores[name]
        ax.scatter(i + rng.uniform(-0.1, 0.1, len(values)), values, s=22, color="tab:blue", zorder=3)
        ax.hlines(float(np.mean(values)), i - 0.25, i + 0.25, color="black", linewidth=1.5)
    ax.set_xticks(range(len(names)), names, rotation=30 if max(len(n) for n in names) > 6 else 0)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set(title=title, ylabel="test accuracy (one dot per seed, bar: mean)")
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)
