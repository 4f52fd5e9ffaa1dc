"""Kernels and feature maps: the first convolution's feature map equals the hand-written sliding window on the
same image (its kernel, bias and ReLU), and the pictures are drawn."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cnnlab.catalog.networks import build_model
from cnnlab.explain.hand_filters import sliding_window_filter
from cnnlab.explain.layer_views import feature_maps, first_conv_kernels
from cnnlab.nets.cut import conv_layer_names
from cnnlab.plots.layers import feature_map_grid, kernel_grid


@pytest.fixture(scope="module")
def m1() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model("M1", (28, 28, 1), 10)  # Chollet's MNIST convnet: valid 3x3 convolutions


def test_the_first_feature_map_is_the_sliding_window_of_its_kernel(m1: keras.Model, fashion: dict) -> None:
    images = fashion["test"][0][:2]
    first, second = conv_layer_names(m1)[:2]
    maps = feature_maps(m1, [first, second], images)
    assert maps[first].shape == (2, 26, 26, 32) and maps[second].shape == (2, 11, 11, 64)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in m1.get_layer(first).weights)
    pixels = images[1, :, :, 0].astype(np.float32) / 255  # the model's Rescaling(1/255)
    for f in (0, 17):
        by_hand = np.maximum(sliding_window_filter(pixels, kernel[:, :, 0, f]) + bias[f], 0)
        np.testing.assert_allclose(maps[first][1, :, :, f], by_hand, atol=1e-5)


def test_kernels_are_scaled_to_the_unit_range_keeping_their_order(m1: keras.Model) -> None:
    kernels = first_conv_kernels(m1)
    raw = keras.ops.convert_to_numpy(m1.get_layer(conv_layer_names(m1)[0]).kernel)
    assert kernels.shape == (3, 3, 1, 32) and kernels.min() == 0.0 and kernels.max() == pytest.approx(1.0)
    assert np.array_equal(np.argsort(kernels, axis=None), np.argsort(raw, axis=None))


def test_an_unknown_layer_names_the_convolutions_there_are(m1: keras.Model) -> None:
    with pytest.raises(ValueError, match=r"no layer 'conv9'; its convolutions: conv2d"):
        feature_maps(m1, ["conv9"], np.zeros((1, 28, 28, 1), np.uint8))
    with pytest.raises(ValueError, match="no convolution"):
        first_conv_kernels(build_model("F0", (28, 28, 1), 10))


def test_kernels_and_maps_are_drawn(m1: keras.Model, tmp_path: Path) -> None:
    colour = build_model("C1", (32, 32, 3), 10)
    kernel_png = kernel_grid(first_conv_kernels(colour), "C1 conv kernels", tmp_path / "kernels.png")
    name = conv_layer_names(m1)[0]
    maps = feature_maps(m1, [name], np.zeros((1, 28, 28, 1), np.uint8))[name]
    map_png = feature_map_grid(maps[0], "M1 feature maps", tmp_path / "maps.png")
    assert kernel_png.read_bytes().startswith(b"\x89PNG") and map_png.read_bytes().startswith(b"\x89PNG")


def test_a_grid_shows_each_tile_in_its_place_with_its_overlay(tmp_path: Path) -> None:
    from PIL import Image

    from cnnlab.plots.base import image_grid

    red, blue = np.zeros((1, 16, 16, 3), np.uint8), np.zeros((1, 16, 16, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    grey = np.full((1, 16, 16, 1), 7, np.uint8)  # one band, one value: black, as imshow scales it
    path = image_grid(np.concatenate([red, blue]), ["red", "blue"], "two tiles", tmp_path / "grid.png", columns=2)
    picture = np.asarray(Image.open(path).convert("RGB")).astype(int)
    strongly = {name: (picture[..., c] > 200) & (picture.sum(-1) < 400) for name, c in (("red", 0), ("blue", 2))}
    columns = {name: np.flatnonzero(mask.any(axis=0)) for name, mask in strongly.items()}
    assert columns["red"].size > 50 and columns["blue"].size > 50
    assert columns["red"].max() < columns["blue"].min()  # red left of blue, as given
    heat = np.ones((1, 16, 16))  # jet at 1.0 is dark red, at 40% over a black tile
    path = image_grid(grey, ["hot"], "overlay", tmp_path / "cam.png", columns=1, overlays=heat)
    picture = np.asarray(Image.open(path).convert("RGB")).astype(int)
    tile = picture[(picture[..., 1] < 20) & (picture[..., 2] < 20) & (picture[..., 0] > 40)]
    assert len(tile) > 1000 and np.all(np.abs(tile[:, 0] - round(0.4 * 0.5 * 255)) <= 3)
