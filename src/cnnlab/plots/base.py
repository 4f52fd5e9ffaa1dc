"""What every figure shares: headless matplotlib, saving, colouring images, and grids of captioned tiles."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np

from cnnlab.util.files import write_with


def save(fig: plt.Figure, path: Path) -> Path:
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def colour(image: np.ndarray, cmap: str = "gray", low: float | None = None, high: float | None = None) -> np.ndarray:
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


def tile_grid(tiles: list[np.ndarray], captions: list[str], columns: int, title: str, path: Path,
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
    return save(fig, path)


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
    tiles = [colour(image) for image in images]
    if overlays is not None:
        tiles = [0.6 * tile + 0.4 * colour(heat, "jet", 0.0, 1.0) for tile, heat in zip(tiles, overlays, strict=True)]
    return tile_grid(tiles, captions, columns, title, path, tile_inches=1.8, fontsize=7)
