"""Seed 000's image filters by hand: the explicit sliding window and 2x2 max pooling equal Keras's layers."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cnnlab.explain.hand_filters import SOBEL_HORIZONTAL, SOBEL_VERTICAL, max_pool, sliding_window_filter, sobel_edges
from cnnlab.plots.layers import image_panels


def keras_conv(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    layer = keras.layers.Conv2D(1, kernel.shape, padding="valid", use_bias=False)
    layer.build((1, *image.shape, 1))
    layer.set_weights([kernel[:, :, None, None]])
    return keras.ops.convert_to_numpy(layer(image[None, :, :, None].astype("float32")))[0, :, :, 0]


def keras_pool(image: np.ndarray) -> np.ndarray:
    layer = keras.layers.MaxPooling2D(2, padding="same")
    return keras.ops.convert_to_numpy(layer(image[None, :, :, None].astype("float32")))[0, :, :, 0]


@pytest.fixture(scope="module")
def shoe(fashion: dict) -> np.ndarray:
    """x_train[0] of Fashion-MNIST (an ankle boot), as the seed uses it."""
    x, y = fashion["train"]
    assert y[0] == 9  # ankle boot
    return x[0, :, :, 0].astype(np.float32)


@pytest.mark.parametrize("kernel", [SOBEL_HORIZONTAL, SOBEL_VERTICAL], ids=["horizontal", "vertical"])
def test_the_hand_written_sliding_window_equals_conv2d_with_those_weights(shoe: np.ndarray, kernel: np.ndarray) -> None:
    by_hand = sliding_window_filter(shoe, kernel)
    assert by_hand.shape == (26, 26)
    np.testing.assert_allclose(by_hand, keras_conv(shoe, kernel), rtol=1e-5, atol=1e-2)
    assert np.abs(by_hand).max() > 100  # the boot's edges respond; a filter of zeros would not


@pytest.mark.parametrize("size", [26, 25])
def test_the_hand_written_max_pooling_equals_max_pooling2d(shoe: np.ndarray, size: int) -> None:
    edges = sliding_window_filter(shoe, SOBEL_HORIZONTAL)[:size, :size]
    pooled = max_pool(edges)
    assert pooled.shape == (13, 13)  # an odd edge keeps its partial window, as the seed's loop does
    np.testing.assert_array_equal(pooled, keras_pool(edges))


def test_each_sobel_filter_finds_its_own_edges_and_the_sum_finds_both() -> None:
    square = np.zeros((12, 12), np.float32)
    square[4:8, 4:8] = 255.0  # a bright square: two horizontal and two vertical edges
    panels = sobel_edges(square)
    rows = np.nonzero(np.abs(panels["horizontal"]).sum(axis=1))[0]
    columns = np.nonzero(np.abs(panels["vertical"]).sum(axis=0))[0]
    assert set(rows) == {2, 3, 6, 7} and set(columns) == {2, 3, 6, 7}  # windows across the edges only
    assert not panels["horizontal"][4:6, 4:6].any() and not panels["vertical"][4:6, 4:6].any()  # flat inside
    np.testing.assert_array_equal(panels["sum"], panels["horizontal"] + panels["vertical"])
    assert panels["pooled"].shape == (5, 5)


def test_the_panels_are_drawn(shoe: np.ndarray, tmp_path: Path) -> None:
    out = image_panels(sobel_edges(shoe), "Sobel filters on x_train[0]", tmp_path / "sobel.png")
    assert out.read_bytes().startswith(b"\x89PNG")


def test_a_kernel_larger_than_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        sliding_window_filter(np.zeros((2, 2)), SOBEL_HORIZONTAL)
