"""Seeded, stratified index splits (every class keeps its share in every part)."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out) with `fraction` of every class held out; same seed, same split.

    With `stratify=False` the split is exactly `train_test_split(x, test_size=fraction,
    random_state=seed)`, as seed 003 (F2) makes it.
    """
    index = np.arange(len(labels))
    kept, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=labels if stratify else None)
    return np.sort(kept), np.sort(held)


def stratified_subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` samples drawn with the class proportions of `labels`."""
    if size >= len(labels):
        return np.arange(len(labels))
    index = np.arange(len(labels))
    kept, _ = train_test_split(index, train_size=size, random_state=seed, stratify=labels)  # exactly `size`
    return np.sort(kept)
