"""Image filters by hand (seed 000): Sobel edge filters applied by an explicit sliding window, and a
hand-written max pooling, written out loop by loop so a reader sees what Conv2D and MaxPooling2D compute."""

from __future__ import annotations

import math

import numpy as np

SOBEL_HORIZONTAL = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]], dtype=np.float32)
SOBEL_VERTICAL = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], dtype=np.float32)


def sliding_window_filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The kernel slid over a 2-D image with stride 1 and no padding, summing element-wise products.

    This is what Keras's Conv2D computes (a cross-correlation: the kernel is not flipped).
    """
    if image.ndim != 2 or kernel.ndim != 2:
        raise ValueError(f"expected a 2-D image and kernel, got shapes {image.shape} and {kernel.shape}")
    k_rows, k_cols = kernel.shape
    rows, cols = image.shape[0] - k_rows + 1, image.shape[1] - k_cols + 1
    if rows < 1 or cols < 1:
        raise ValueError(f"a {kernel.shape} kernel does not fit in a {image.shape} image")
    out = np.zeros((rows, cols), dtype=np.float32)
    for i in range(rows):
        for j in range(cols):
            out[i, j] = np.sum(image[i : i + k_rows, j : j + k_cols] * kernel)
    return out


def max_pool(image: np.ndarray, size: int = 2) -> np.ndarray:
    """The largest value of each size x size window, windows side by side; a partial window at an odd edge
    is kept, as the seed's loop does (Keras's MaxPooling2D with padding='same')."""
    rows, cols = math.ceil(image.shape[0] / size), math.ceil(image.shape[1] / size)
    pooled = np.zeros((rows, cols), dtype=image.dtype)
    for i in range(rows):
        for j in range(cols):
            pooled[i, j] = np.max(image[i * size : (i + 1) * size, j * size : (j + 1) * size])
    return pooled


def sobel_edges(image: np.ndarray) -> dict[str, np.ndarray]:
    """The seed's panels: the image, its horizontal and vertical edges, their sum (all edges) and that sum pooled."""
    pixels = image.astype(np.float32)
    horizontal = sliding_window_filter(pixels, SOBEL_HORIZONTAL)
    vertical = sliding_window_filter(pixels, SOBEL_VERTICAL)
    edges = horizontal + vertical
    return {"image": pixels, "horizontal": horizontal, "vertical": vertical, "sum": edges, "pooled": max_pool(edges)}
