"""A hyperparameter search's progress, trial by trial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from cnnlab.plots.base import plt, save


def search_progress(
    objectives: list[float | None], minutes: list[float], maximise: bool, objective: str, title: str, path: Path
) -> Path:
    """A search's trials in the order they ended: each one's objective with the best so far, against the
    trial number and against the trials' accumulated minutes. Failed trials (None) are marked on the axis."""
    best, best_so_far = None, []
    for value in objectives:
        if value is not None and (best is None or (value > best if maximise else value < best)):
            best = value
        best_so_far.append(np.nan if best is None else best)
    numbers = np.arange(1, len(objectives) + 1)
    scored = np.array([np.nan if v is None else v for v in objectives], dtype=float)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(numbers, scored, "o", alpha=0.6, label="trial")
    left.step(numbers, best_so_far, where="post", color="C3", label="best so far")
    failed = numbers[np.isnan(scored)]
    if failed.size:  # on the x axis (y in axes units), apart from every score
        left.plot(failed, np.full(failed.size, 0.02), "x", color="k", label="failed trial (no score)",
                  transform=left.get_xaxis_transform(), clip_on=False)  # fmt: skip
    left.set(title=f"{title}: {objective} per trial", xlabel="trial (in the order they ended)", ylabel=objective)
    right.step(minutes, best_so_far, where="post", color="C3")
    right.set(title="best so far against search time", xlabel="trial minutes, accumulated", ylabel=objective)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.legend()
    return save(fig, path)
