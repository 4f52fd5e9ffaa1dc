"""Seeded, stratified index splits (every class keeps its share in every part)."""

from __future__ import annotations

import numpy as np

# scikit-learn is imported where it splits: the data stages and the CLI import this module, and its import
# (0.6 s, scipy with it) would hold up a stage that starts in a fresh process.

Arrays = tuple[np.ndarray, np.ndarray]  # images and their labels

Fold = tuple[np.ndarray, np.ndarray]  # (training rows, held-out rows)


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out) with `fraction` of every class held out; same seed, same split.

    With `stratify=False` the split is exactly `train_test_split(x, test_size=fraction,
    random_state=seed)`, as seed 003 (F2) makes it.
    """
    index = np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    kept, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=labels if stratify else None)
    return np.sort(kept), np.sort(held)


def stratified_subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` samples drawn with the class proportions of `labels`."""
    if size >= len(labels):
        return np.arange(len(labels))
    index = np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(index, train_size=size, random_state=seed, stratify=labels)  # exactly `size`
    return np.sort(kept)


def subsample(x: np.ndarray, y: np.ndarray, size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images `x` and labels `y` cut to `size` samples with the class proportions of `y` (a budget's
    `train_samples`); all of them when `size` is None."""
    if not size:
        return x, y
    keep = stratified_subsample(y, size, seed)
    return x[keep], y[keep]


def kfold_splits(
    labels: np.ndarray, k: int, shuffle: bool = False, stratify: bool = False, seed: int = 42
) -> list[Fold]:
    """The k (train, validation) index pairs of k-fold cross-validation: every index is validated exactly once.

    Without shuffling the folds are contiguous blocks in file order (the seeds' `KFold(5)`); with `stratify`
    every fold keeps the class proportions.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (StratifiedKFold if stratify else KFold)(k, shuffle=shuffle, random_state=seed if shuffle else None)
    return [(train, val) for train, val in splitter.split(np.zeros(len(labels)), labels)]
