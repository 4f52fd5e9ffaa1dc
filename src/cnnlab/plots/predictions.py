"""`cnnlab predict`'s class probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.plots.base import plt, save


def probability_bars(probabilities: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """A bar chart of one prediction's class probabilities (seed 003's single-image prediction)."""
    fig, ax = plt.subplots(figsize=(max(5, len(classes) * 0.7), 3.5))
    best = int(np.argmax(probabilities))
    colours = ["tab:orange" if i == best else "tab:blue" for i in range(len(classes))]
    ax.bar(range(len(classes)), probabilities, color=colours)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set(ylim=(0, 1), ylabel="probability", title=title)
    return save(fig, path)
