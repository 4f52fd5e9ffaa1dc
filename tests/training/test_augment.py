"""Augmentation: ImageDataGenerator's geometry drawn per image in the training step, on training batches only."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy import ndimage

from cnnlab.params import Augmentation
from cnnlab.training.augment import AugmentedTraining, RandomTransform, build_augmenter
from cnnlab.training.fit import compile_model, fit, seeded_model, trainer
from helpers.project import subset
from helpers.training import f1_recipe

EVERYTHING = Augmentation(
    rotation_range=30, width_shift_range=0.1, height_shift_range=0.2, shear_range=20, zoom_range=0.2,
    horizontal_flip=True, vertical_flip=True,
)  # fmt: skip


def generator_transform(image: np.ndarray, o: Augmentation, draws: np.ndarray) -> np.ndarray:
    """ImageDataGenerator's `random_transform` of one (rows, cols) image for given uniform [0, 1) draws,
    written as keras_preprocessing writes it: (row, col) matrices, scipy's affine_transform with order 1,
    then flips (its one difference: the true centre (n-1)/2 where it uses n/2 + 0.5)."""
    rows, cols = image.shape

    def spread(column: int, limit: float) -> float:
        return (2 * draws[column] - 1) * limit

    theta, shear = spread(0, math.radians(o.rotation_range)), spread(3, math.radians(o.shear_range))
    tx, ty = spread(2, o.height_shift_range * rows), spread(1, o.width_shift_range * cols)
    zx, zy = 1 + spread(5, o.zoom_range), 1 + spread(4, o.zoom_range)
    rotation = np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -math.sin(shear), 0], [0, math.cos(shear), 0], [0, 0, 1]])
    zoom = np.diag([zx, zy, 1])
    centre = np.array([[1, 0, (rows - 1) / 2], [0, 1, (cols - 1) / 2], [0, 0, 1]])
    matrix = centre @ rotation @ shift @ shearing @ zoom @ np.linalg.inv(centre)
    # scipy's "constant" drops any point outside the image, Keras' blends the edge with 0 as "grid-constant" does
    mode = "grid-constant" if o.fill_mode == "constant" else o.fill_mode
    out = ndimage.affine_transform(image, matrix[:2, :2], matrix[:2, 2], order=1, mode=mode, cval=0.0)
    if o.horizontal_flip and draws[6] < 0.5:
        out = out[:, ::-1]
    if o.vertical_flip and draws[7] < 0.5:
        out = out[::-1, :]
    return out


@pytest.mark.parametrize("fill_mode", ["nearest", "constant", "reflect"])
def test_each_image_gets_image_data_generator_s_transform(fill_mode: str) -> None:
    options = EVERYTHING.model_copy(update={"fill_mode": fill_mode})
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (16, 20, 24, 1)).astype("float32")
    draws = rng.uniform(0, 1, (16, 9)).astype("float32")
    draws[:8, 6], draws[8:, 6] = 0.2, 0.7  # both sides of each flip's coin
    draws[::2, 7], draws[1::2, 7] = 0.2, 0.7
    transforms = RandomTransform(options, seed=0).transforms(ops.convert_to_tensor(draws), 20, 24)
    moved = ops.image.affine_transform(images, transforms, fill_mode=fill_mode)
    for image, draw, out in zip(images, draws, np.asarray(moved), strict=True):
        expected = generator_transform(image[..., 0].astype("float64"), options, draw)
        np.testing.assert_allclose(out[..., 0], expected, atol=0.01)  # of 0..255


def test_flips_alone_mirror_exactly_and_brightness_scales() -> None:
    images = np.random.default_rng(1).uniform(0, 255, (64, 8, 8, 3)).astype("float32")
    flipped = np.asarray(RandomTransform(Augmentation(horizontal_flip=True), seed=3)(images))
    mirrored = [np.array_equal(out, image[:, ::-1]) for out, image in zip(flipped, images, strict=True)]
    unchanged = [np.array_equal(out, image) for out, image in zip(flipped, images, strict=True)]
    assert all(m != u for m, u in zip(mirrored, unchanged, strict=True)) and 16 < sum(mirrored) < 48
    brighter = np.asarray(RandomTransform(Augmentation(brightness_range=(0.5, 1.5)), seed=3)(images))
    factors = (brighter / images).reshape(64, -1)
    unclipped = brighter.reshape(64, -1) < 255
    per_image = [f[u].min() for f, u in zip(factors, unclipped, strict=True)]
    np.testing.assert_allclose(per_image, [f[u].max() for f, u in zip(factors, unclipped, strict=True)], rtol=1e-5)
    assert min(per_image) >= 0.5 and max(per_image) <= 1.5 and np.ptp(per_image) > 0.5
    assert brighter.max() <= 255


def test_draws_are_seeded_and_fresh_every_batch() -> None:
    images = np.random.default_rng(2).uniform(0, 255, (32, 28, 28, 1)).astype("float32")

    def two_batches(seed: int) -> list[np.ndarray]:
        layer = RandomTransform(EVERYTHING, seed)
        return [np.asarray(layer(images)), np.asarray(layer(images))]

    first, again, other = two_batches(5), two_batches(5), two_batches(6)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[0], first[1]) and not np.allclose(first[0], other[0])
    assert not np.allclose(first[0][0], first[0][1])  # one transform per image, not per batch


def test_no_options_no_augmenter() -> None:
    assert build_augmenter(Augmentation(), seed=1) is None
    assert build_augmenter(Augmentation(fill_mode="reflect"), seed=1) is None
    assert isinstance(build_augmenter(Augmentation(horizontal_flip=True), seed=1), RandomTransform)


def test_only_training_batches_are_augmented_and_the_network_is_what_trains(fashion: dict) -> None:
    plain = f1_recipe(epochs=1, budgets={})
    augmented = f1_recipe(epochs=1, budgets={}, augmentation={"width_shift_range": 0.2, "horizontal_flip": True})
    model = compile_model(seeded_model(augmented, (28, 28, 1), 10, 0), augmented, 10)
    assert trainer(model, plain, 10, seed=0) is model
    wrapped = trainer(model, augmented, 10, seed=0)
    assert isinstance(wrapped, AugmentedTraining) and wrapped.optimizer is model.optimizer
    x = subset(fashion["test"], 64)[0].astype("float32")
    np.testing.assert_array_equal(wrapped(x, training=False), model(x, training=False))
    moved = wrapped.augmenter(x, training=True)
    assert not np.allclose(moved, x) and np.allclose(wrapped.augmenter(x, training=False), x)
    state = np.array(wrapped.augmenter.seed_generator.state.value)
    wrapped.fit(x, subset(fashion["test"], 64)[1], batch_size=32, epochs=1, verbose=0)
    assert not np.array_equal(wrapped.augmenter.seed_generator.state.value, state)  # the compiled steps drew afresh

    train, val = subset(fashion["train"], 3000), subset(fashion["test"], 1000)
    best = {"checkpoint_best": True, "checkpoint_monitor": "val_accuracy"}  # the wrapper's checkpoint, reloaded
    augmented = augmented.model_copy(update={"epochs": 2, "callbacks": augmented.callbacks.model_copy(update=best)})
    result = fit(seeded_model(augmented, (28, 28, 1), 10, 0), augmented, train, val, 10, seed=0, verbose=0)
    assert result.model.name != "augmentation" and not any(
        isinstance(layer, RandomTransform) for layer in result.model._flatten_layers()
    )
    assert result.model.optimizer.iterations.numpy() == 2 * math.ceil(3000 / augmented.batch_size)
    scores = result.model.evaluate(val[0].astype("float32"), val[1], verbose=0, return_dict=True)
    assert scores["accuracy"] == pytest.approx(max(result.history["val_accuracy"]), abs=1e-6)  # unaugmented
    assert scores["accuracy"] > 0.5  # chance is 0.10
    assert isinstance(keras.models.clone_model(result.model), keras.Model)
