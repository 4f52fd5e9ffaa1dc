"""Validation splits are stratified, seeded and disjoint."""

from __future__ import annotations

import numpy as np

from cnnlab.data.splits import stratified_split, stratified_subsample, subsample


def labels() -> np.ndarray:
    return np.repeat(np.arange(5), [100, 200, 300, 50, 350])


def test_same_seed_same_split_other_seed_other_split() -> None:
    a = stratified_split(labels(), 0.3, seed=42)
    b = stratified_split(labels(), 0.3, seed=42)
    c = stratified_split(labels(), 0.3, seed=7)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_split_is_disjoint_complete_and_stratified() -> None:
    y = labels()
    kept, held = stratified_split(y, 0.3, seed=1)
    assert len(np.intersect1d(kept, held)) == 0
    assert len(kept) + len(held) == len(y)
    np.testing.assert_array_equal(np.bincount(y[held]), [30, 60, 90, 15, 105])


def test_subsample_keeps_class_shares() -> None:
    y = labels()
    picked = stratified_subsample(y, 200, seed=3)
    assert len(picked) == 200
    np.testing.assert_array_equal(np.bincount(y[picked]), [20, 40, 60, 10, 70])
    assert len(stratified_subsample(y, 10_000, seed=3)) == len(y)
    assert len(stratified_subsample(y, 333, seed=3)) == 333  # exactly as asked, even where shares do not divide


def test_subsample_cuts_images_and_labels_alike_and_none_keeps_all() -> None:
    y = labels()
    x = np.arange(len(y)) * 10  # an image per label, its index times ten
    cut_x, cut_y = subsample(x, y, 200, seed=3)
    picked = stratified_subsample(y, 200, seed=3)
    np.testing.assert_array_equal(cut_x, picked * 10)
    np.testing.assert_array_equal(cut_y, y[picked])
    assert subsample(x, y, None, seed=3)[0] is x
