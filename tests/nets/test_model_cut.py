"""Cutting a model in two at a layer: the two halves compose to the whole, also through a nested backbone, and
Grad-CAM's default layer is the last convolution's output."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cnnlab.catalog.networks import build_model
from cnnlab.nets.cut import conv_layer_names, final_layer, last_map_layer, split, up_to, walk
from helpers.models import residual_model, transfer_like


def _composes(model: keras.Model, layer: str, images: np.ndarray) -> None:
    """The halves compose to the model, and `before` ends at the layer's own output."""
    before, after = split(model, layer)
    own = next(found for _, found in walk(model) if found.name == layer)
    assert before.output_shape == own.output.shape
    np.testing.assert_allclose(after.predict(before.predict(images, verbose=0), verbose=0),
                               model.predict(images, verbose=0), atol=1e-5)  # fmt: skip


def dense_block_model() -> keras.Model:
    """conv → [conv] → concatenate(both) → pool → dense: DenseNet's and Inception's way of ending a block."""
    images = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(images)
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="branch")(x)
    z = keras.layers.Concatenate(name="concat")([x, y])
    z = keras.layers.GlobalAveragePooling2D()(z)
    return keras.Model(images, keras.layers.Dense(3, activation="softmax")(z), name="dense_block")


def test_both_halves_compose_to_the_model_at_every_convolution_of_a_nested_backbone() -> None:
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=None)
    model = transfer_like(backbone)
    images = np.random.default_rng(0).uniform(0, 255, (3, 24, 24, 3)).astype("float32")
    names = conv_layer_names(model)
    assert len(names) == 27 and names[0] == "conv1" and names[-1] == "conv_pw_13"
    for layer in (names[0], names[13], "conv_pw_13_relu", "preprocess"):
        _composes(model, layer, images)
    assert split(model, "conv_pw_5")[0].output_shape == (None, 4, 4, 64)
    assert last_map_layer(model) == "conv_pw_13_relu" and final_layer(model).name == model.layers[-1].layers[-1].name


@pytest.mark.parametrize("model_id", ["M3", "C1", "F1"])
def test_sequential_models_of_the_seed_table_cut_at_every_convolution(model_id: str) -> None:
    shape = (32, 32, 3) if model_id == "C1" else (28, 28, 1)
    model = build_model(model_id, shape, 10)
    images = np.random.default_rng(1).uniform(0, 255, (2, *shape)).astype("float32")
    for layer in conv_layer_names(model):
        _composes(model, layer, images)


def test_a_residual_block_is_cut_at_its_output_and_not_inside_it() -> None:
    model = residual_model()
    images = np.random.default_rng(2).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    assert last_map_layer(model) == "block_out"  # past its batch norm and the add, as ResNet50's conv5_block3_out
    _composes(model, "block_out", images)
    with pytest.raises(ValueError, match="'block_conv' does not cut 'residual' in two"):
        split(model, "block_conv")
    inside = keras.Model(model.inputs, model.get_layer("block_conv").output)  # feature maps need no `after`
    np.testing.assert_allclose(up_to(model, "block_conv").predict(images, verbose=0), inside.predict(images, verbose=0))


def test_a_residual_backbone_inside_a_transfer_model_is_cut_at_its_block_s_output() -> None:
    model = transfer_like(residual_model(32))
    images = np.random.default_rng(3).uniform(0, 255, (2, 24, 24, 3)).astype("float32")
    assert last_map_layer(model) == "block_out"
    _composes(model, "block_out", images)
    assert up_to(model, "block_conv").output_shape == (None, 32, 32, 4)


def test_a_block_ending_in_a_concatenation_is_cut_after_it() -> None:
    model = dense_block_model()
    assert last_map_layer(model) == "concat"  # "branch" is passed by the stem's maps
    _composes(model, "concat", np.random.default_rng(4).uniform(0, 255, (2, 16, 16, 3)).astype("float32"))
