"""A study's fold scores per arm and a factorial design's effects."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.plots.base import plt, save


def fold_boxplot(scores: dict[str, list[float]], title: str, path: Path) -> Path:
    """One box per arm over its fold scores (the triangle is the mean), every fold as a dot."""
    names = list(scores)
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names) + 2), 4.5))
    ax.boxplot(
        [scores[n] for n in names], tick_labels=names, showmeans=True, showfliers=False, meanprops={"marker": "^"}
    )
    rng = np.random.default_rng(0)  # jitter only, so the dots of equal scores do not hide each other
    for i, name in enumerate(names, start=1):
        ax.scatter(i + rng.uniform(-0.08, 0.08, len(scores[name])), scores[name], s=14, color="tab:blue", zorder=3)
    ax.set(title=title, ylabel="accuracy on the held-out fold")
    ax.tick_params(axis="x", rotation=30 if max(len(n) for n in names) > 6 else 0)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def effects_plot(
    terms: list[str], effects: np.ndarray, low: np.ndarray, high: np.ndarray, title: str, path: Path
) -> Path:
    """Estimated effects with their confidence intervals, zero marked: what helps is right of the line."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(terms) + 1.5))
    positions = np.arange(len(terms))[::-1]
    ax.errorbar(effects, positions, xerr=[effects - low, high - effects], fmt="o", capsize=4)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(positions, terms)
    ax.set(title=title, xlabel="effect on held-out accuracy (percentage points)")
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)
