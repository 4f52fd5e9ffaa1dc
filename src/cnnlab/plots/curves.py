"""A training's learning curves."""

from __future__ import annotations

from pathlib import Path

from cnnlab.plots.base import plt, save


def training_curves(history: dict[str, list[float]], title: str, path: Path) -> Path:
    """Accuracy and loss per epoch, training against validation (the seeds' History plots)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for key, style in ((metric, "o-"), (f"val_{metric}", "s--")):
            if key in history:
                epochs = range(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], style, label="validation" if key.startswith("val_") else "training")
        ax.set(title=f"{title}: {metric}", xlabel="epoch", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return save(fig, path)
