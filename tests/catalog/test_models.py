"""The zoo's parameter counts match the seeds' tables, and unknown names fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.catalog.networks import C5_VARIANTS, MODELS, build_model
from cnnlab.params import Experiment
from cnnlab.training.fit import fit, seeded_model


@pytest.mark.parametrize(
    ("name", "shape", "classes", "params"),
    [
        ("F1", (28, 28, 1), 10, 89_546),  # the seed's table prints 88,546 (a typo in one row)
        ("F2", (28, 28, 1), 10, 333_526),
        ("M1", (28, 28, 1), 10, 93_322),
        ("M4", (28, 28, 1), 10, 61_706),  # the text's 14,706 ignores the input depth
        ("C1", (32, 32, 3), 10, 890_410),
        ("D1", (150, 150, 3), 2, 3_453_121),  # Chollet's small convnet, as his book prints
    ],
)
def test_parameter_counts_match_the_seeds(name: str, shape, classes: int, params: int) -> None:
    assert build_model(name, shape, classes).count_params() == params


@pytest.mark.parametrize("name", ["D1", "D2"])
def test_input_size_downscales_inside_the_model(name: str) -> None:
    """The quick budget's D1/D2 see 75x75 images; the saved model still takes the prepared 150x150 ones."""
    model = build_model(name, (150, 150, 3), 2, input_size=75)
    assert model.input_shape == (None, 150, 150, 3)
    first_conv = next(layer for layer in model.layers if layer.__class__.__name__ == "Conv2D")
    assert first_conv.output.shape[1:3] == (73, 73)
    assert model.count_params() < build_model(name, (150, 150, 3), 2).count_params()
    out = model.predict(np.zeros((2, 150, 150, 3), dtype="float32"), verbose=0)
    assert out.shape == (2, 1)


SHAPES = {"C": (32, 32, 3), "D": (150, 150, 3)}


@pytest.mark.parametrize(
    ("name", "options"),
    [(name, {}) for name in MODELS] + [("C5", {"variant": v}) for v in C5_VARIANTS[1:]],
)
def test_every_model_trains_a_few_steps(name: str, options: dict) -> None:
    shape, classes = SHAPES.get(name[0], (28, 28, 1)), 2 if name.startswith("D") else 10
    recipe = Experiment(dataset="mnist", model=name, model_options=options, epochs=1, batch_size=8)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, *shape)).astype("uint8")
    y = np.arange(16) % classes
    model = seeded_model(recipe, shape, classes, seed=1)
    before = [w.copy() for w in model.get_weights()]
    result = fit(model, recipe, (x, y), (x[:8], y[:8]), classes, seed=1, verbose=0)
    assert np.isfinite(result.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_standardization_is_fitted_on_the_training_images_only() -> None:
    recipe = Experiment(dataset="cifar10", model="C5", epochs=1, batch_size=8)
    rng = np.random.default_rng(0)
    train = rng.integers(100, 200, (16, 32, 32, 3)).astype("uint8")
    other = np.zeros((8, 32, 32, 3), dtype="uint8")
    model = seeded_model(recipe, (32, 32, 3), 10, seed=1)
    fit(model, recipe, (train, np.arange(16) % 10), (other, np.arange(8)), 10, seed=1, verbose=0)
    standardize = model.get_layer("standardize")
    np.testing.assert_allclose(np.ravel(standardize.mean), train.reshape(-1, 3).mean(axis=0), rtol=1e-4)


def test_model_takes_raw_pixels_and_outputs_probabilities() -> None:
    model = build_model("F1", (28, 28, 1), 10)
    out = model.predict(np.full((2, 28, 28, 1), 255, dtype="float32"), verbose=0)
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_model_or_option() -> None:
    with pytest.raises(ValueError, match="unknown model 'X'; allowed: C1"):
        build_model("X", (28, 28, 1), 10)
    with pytest.raises(ValueError, match="does not take these options"):
        build_model("F1", (28, 28, 1), 10, dropout=0.5)
