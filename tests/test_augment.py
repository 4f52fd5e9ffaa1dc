"""ImageDataGenerator options map onto the right Keras layers, and touch training batches only."""

from __future__ import annotations

import math

import numpy as np
import pytest
from keras import layers

from cnnlab.augment import augmentation_layers, build_augmenter
from cnnlab.config import Augmentation, parse_params
from cnnlab.training import training_inputs
from conftest import ROOT


def test_every_option_maps_to_its_layer() -> None:
    options = Augmentation(
        rotation_range=30,
        width_shift_range=0.1,
        height_shift_range=0.2,
        shear_range=20,
        zoom_range=0.2,
        horizontal_flip=True,
        brightness_range=(0.8, 1.2),
        fill_mode="reflect",
    )
    stack = augmentation_layers(options, seed=1)
    kinds = [type(layer) for layer in stack]
    assert kinds == [
        layers.RandomRotation,
        layers.RandomTranslation,
        layers.RandomShear,
        layers.RandomZoom,
        layers.RandomFlip,
        layers.RandomBrightness,
    ]
    rotation, translation, shear, zoom, flip, _ = stack
    assert rotation.factor == pytest.approx((-30 / 360, 30 / 360))
    assert (translation.height_lower, translation.height_upper) == pytest.approx((-0.2, 0.2))
    assert (translation.width_lower, translation.width_upper) == pytest.approx((-0.1, 0.1))
    assert shear.x_factor[1] == pytest.approx(math.tan(math.radians(20)))
    assert (zoom.height_lower, zoom.height_upper) == pytest.approx((-0.2, 0.2))
    assert flip.mode == "horizontal"
    assert {layer.fill_mode for layer in (rotation, translation, shear, zoom)} == {"reflect"}


def test_no_options_no_augmenter() -> None:
    assert build_augmenter(Augmentation(), seed=1) is None
    assert build_augmenter(Augmentation(horizontal_flip=True), seed=1) is not None


def test_augmentation_changes_training_batches_only() -> None:
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["experiments"]["F1"]["augmentation"] = {"horizontal_flip": True, "width_shift_range": 0.2}
    recipe = parse_params(raw).recipe("F1")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    y = np.arange(64) % 10
    batches = training_inputs(x, y, recipe, seed=3)["x"]
    images, labels = next(iter(batches))
    images, labels = np.asarray(images), np.asarray(labels)
    originals = x[[int(np.flatnonzero(y == label)[0]) for label in labels]]  # any same-label image
    assert images.shape == (32, 28, 28, 1)
    assert not any(np.array_equal(img, orig) for img, orig in zip(images, originals, strict=True))
    # without augmentation the arrays go to fit() unchanged
    plain = training_inputs(x, y, parse_params(yaml.safe_load((ROOT / "params.yaml").read_text())).recipe("F1"), seed=3)
    np.testing.assert_array_equal(plain["x"], x.astype("float32"))
