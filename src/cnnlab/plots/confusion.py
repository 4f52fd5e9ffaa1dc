"""The evaluate stage's confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay

from cnnlab.plots.base import plt, save


def confusion_matrix_png(confusion: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    size = max(6, len(classes) * 0.8)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(confusion, display_labels=classes).plot(ax=ax, xticks_rotation=45, colorbar=False)
    ax.set_title(title)
    return save(fig, path)
