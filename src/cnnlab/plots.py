"""Figures people would rather look at than read: curves, confusion matrices, image grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay

from cnnlab.files import write_with


def _save(fig: plt.Figure, path: Path) -> Path:
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


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
    return _save(fig, path)


def confusion_matrix_png(confusion: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    size = max(6, len(classes) * 0.8)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(confusion, display_labels=classes).plot(ax=ax, xticks_rotation=45, colorbar=False)
    ax.set_title(title)
    return _save(fig, path)


def _colour(image: np.ndarray, cmap: str = "gray", low: float | None = None, high: float | None = None) -> np.ndarray:
    """RGB in [0, 1] as `imshow` would show the image: colour as it is (0..255 or 0..1), one band through
    `cmap` between `low` and `high` (default: the image's own minimum and maximum)."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 3:
        return array / 255.0 if np.issubdtype(array.dtype, np.integer) else np.clip(array, 0.0, 1.0)
    grey = array.reshape(array.shape[:2]).astype("float64")
    low = float(grey.min()) if low is None else low
    high = float(grey.max()) if high is None else high
    scaled = np.clip((grey - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(grey)
    return matplotlib.colormaps[cmap](scaled)[..., :3]


def _tiles(tiles: list[np.ndarray], captions: list[str], columns: int, title: str, path: Path,
           tile_inches: float, fontsize: float) -> Path:  # fmt: skip
    """Tiles (RGB in [0, 1], one size) in a grid with a caption above each, drawn as one picture in one axes:
    an axes per tile made most of the explain stage's time."""
    height, width = tiles[0].shape[:2] if tiles else (1, 1)
    caption, gap = max(1, round(0.3 * height)), max(1, round(0.08 * width))
    rows = -(-max(1, len(tiles)) // columns)
    cell_h, cell_w = height + caption, width + gap
    mosaic = np.ones((rows * cell_h, columns * cell_w - gap, 3))
    for k, tile in enumerate(tiles):
        top, left = (k // columns) * cell_h + caption, (k % columns) * cell_w
        mosaic[top : top + height, left : left + width] = tile
    fig_w = columns * tile_inches
    fig_h = fig_w * mosaic.shape[0] / mosaic.shape[1]
    fig = plt.figure(figsize=(fig_w, fig_h + 0.45))
    ax = fig.add_axes((0.0, 0.0, 1.0, fig_h / (fig_h + 0.45)))
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    for k, text in enumerate(captions[: len(tiles)]):
        x, y = (k % columns) * cell_w + (width - 1) / 2, (k // columns) * cell_h + caption * 0.45
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    fig.suptitle(title)
    return _save(fig, path)


def image_grid(
    images: np.ndarray,
    captions: list[str],
    title: str,
    path: Path,
    columns: int = 6,
    overlays: np.ndarray | None = None,
) -> Path:
    """Images in a grid with a caption over each (e.g. 'true → predicted'); `overlays`: a heatmap in [0, 1] per
    image (its rows and columns), laid over it in colour (Grad-CAM)."""
    tiles = [_colour(image) for image in images]
    if overlays is not None:
        tiles = [0.6 * tile + 0.4 * _colour(heat, "jet", 0.0, 1.0) for tile, heat in zip(tiles, overlays, strict=True)]
    return _tiles(tiles, captions, columns, title, path, tile_inches=1.8, fontsize=7)


def probability_bars(probabilities: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """A bar chart of one prediction's class probabilities (seed 003's single-image prediction)."""
    fig, ax = plt.subplots(figsize=(max(5, len(classes) * 0.7), 3.5))
    best = int(np.argmax(probabilities))
    colours = ["tab:orange" if i == best else "tab:blue" for i in range(len(classes))]
    ax.bar(range(len(classes)), probabilities, color=colours)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set(ylim=(0, 1), ylabel="probability", title=title)
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


def image_panels(panels: dict[str, np.ndarray], title: str, path: Path) -> Path:
    """2-D arrays side by side in grey, each under its name, on its own colour scale (filter outputs, maps)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.8), squeeze=False)
    for ax, (name, array) in zip(axes.flat, panels.items(), strict=True):
        ax.imshow(array, cmap="gray")
        ax.set_title(f"{name} {array.shape[0]}x{array.shape[1]}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def kernel_grid(kernels: np.ndarray, title: str, path: Path, max_filters: int = 32) -> Path:
    """One column per filter, one row per input channel (seed 004, program 6-6), on one grey scale."""
    shown = kernels[..., :max_filters]
    channels, filters = shown.shape[2], shown.shape[3]
    tiles = [_colour(shown[:, :, j, i], "gray", 0.0, 1.0) for j in range(channels) for i in range(filters)]
    captions = [f"{i}_{j}" for j in range(channels) for i in range(filters)]
    return _tiles(tiles, captions, filters, title, path, tile_inches=0.6, fontsize=5)


def feature_map_grid(maps: np.ndarray, title: str, path: Path, max_maps: int = 32, columns: int = 8) -> Path:
    """One image's feature maps (height, width, channels) in a grid, each on its own scale."""
    count = min(maps.shape[-1], max_maps)
    tiles = [_colour(maps[:, :, k], "viridis") for k in range(count)]
    return _tiles(tiles, [str(k) for k in range(count)], min(columns, max(1, count)), title, path, 1.2, 6)
