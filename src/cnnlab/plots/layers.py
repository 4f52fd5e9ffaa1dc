"""What a network's layers hold and see: kernels, feature maps, filtered images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.plots.base import colour, plt, save, tile_grid


def image_panels(panels: dict[str, np.ndarray], title: str, path: Path) -> Path:
    """2-D arrays side by side in grey, each under its name, on its own colour scale (filter outputs, maps)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.8), squeeze=False)
    for ax, (name, array) in zip(axes.flat, panels.items(), strict=True):
        ax.imshow(array, cmap="gray")
        ax.set_title(f"{name} {array.shape[0]}x{array.shape[1]}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title)
    return save(fig, path)


def kernel_grid(kernels: np.ndarray, title: str, path: Path, max_filters: int = 32) -> Path:
    """One column per filter, one row per input channel (seed 004, program 6-6), on one grey scale."""
    shown = kernels[..., :max_filters]
    channels, filters = shown.shape[2], shown.shape[3]
    tiles = [colour(shown[:, :, j, i], "gray", 0.0, 1.0) for j in range(channels) for i in range(filters)]
    captions = [f"{i}_{j}" for j in range(channels) for i in range(filters)]
    return tile_grid(tiles, captions, filters, title, path, tile_inches=0.6, fontsize=5)


def feature_map_grid(maps: np.ndarray, title: str, path: Path, max_maps: int = 32, columns: int = 8) -> Path:
    """One image's feature maps (height, width, channels) in a grid, each on its own scale."""
    count = min(maps.shape[-1], max_maps)
    tiles = [colour(maps[:, :, k], "viridis") for k in range(count)]
    return tile_grid(tiles, [str(k) for k in range(count)], min(columns, max(1, count)), title, path, 1.2, 6)
