"""Filter patterns by gradient ascent: a Sobel filter's pattern is stripes across its direction, the activation
rises, and the JAX backend finds the same patterns and Grad-CAM heatmaps as TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from cnnlab.explain.filter_patterns import filter_patterns, for_display
from cnnlab.explain.grad_cam import grad_cam
from cnnlab.explain.hand_filters import SOBEL_HORIZONTAL, SOBEL_VERTICAL


def sobel_model() -> keras.Model:
    """Two fixed 3x3 filters (ReLU): 0 fires where brightness changes down the rows, 1 across the columns."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 1)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(2, 3, activation="relu", use_bias=False, name="edges"),
        keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax"),
    ])  # fmt: skip
    model.get_layer("edges").kernel.assign(np.stack([SOBEL_HORIZONTAL, SOBEL_VERTICAL], -1)[:, :, None, :])
    return model


def test_a_sobel_filter_s_pattern_is_stripes_across_its_direction() -> None:
    patterns = filter_patterns(sobel_model(), "edges", [0, 1], steps=30)
    rows, cols = (np.abs(np.diff(patterns.images[..., 0], axis=axis)).mean(axis=(1, 2)) for axis in (1, 2))
    assert rows[0] > 2 * cols[0] and cols[1] > 2 * rows[1]  # horizontal edges for 0, vertical for 1
    rise = patterns.activations[-1] / patterns.activations[0]
    assert patterns.activations.shape == (31, 2) and np.all(rise > 5), patterns.activations[[0, -1]]
    assert np.all(np.diff(patterns.activations, axis=0) > 0)  # every step climbs
    shown = for_display(patterns.images)
    assert shown.min() >= 0 and shown.max() <= 1 and patterns.images.min() >= 0 and patterns.images.max() <= 255


def test_a_filter_the_layer_lacks_is_named_with_the_range() -> None:
    with pytest.raises(ValueError, match=r"'edges' has 2 filters \(0..1\); no filter \[2\]"):
        filter_patterns(sobel_model(), "edges", [0, 2])


JAX_SCRIPT = """
import sys
import keras
import numpy as np
from cnnlab.explain.filter_patterns import filter_patterns
from cnnlab.explain.grad_cam import grad_cam

assert keras.backend.backend() == "jax", keras.backend.backend()
model = keras.saving.load_model(sys.argv[1])
images = np.load(sys.argv[2])["images"]
patterns = filter_patterns(model, "edges", [0, 1], steps=10)
np.savez(sys.argv[3], patterns=patterns.images, activations=patterns.activations, heat=grad_cam(model, "edges", images))
"""


def test_the_jax_backend_finds_the_same_patterns_and_heatmaps(tmp_path: Path) -> None:
    model = sobel_model()
    model.save(tmp_path / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    np.savez(tmp_path / "images.npz", images=images)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    args = [str(tmp_path / name) for name in ("model.keras", "images.npz", "jax.npz")]
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(JAX_SCRIPT), *args], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    jax = np.load(tmp_path / "jax.npz")
    patterns = filter_patterns(model, "edges", [0, 1], steps=10)
    np.testing.assert_allclose(jax["activations"], patterns.activations, rtol=1e-3)
    np.testing.assert_allclose(jax["patterns"], patterns.images, atol=0.05)
    np.testing.assert_allclose(jax["heat"], grad_cam(model, "edges", images), atol=1e-4)
