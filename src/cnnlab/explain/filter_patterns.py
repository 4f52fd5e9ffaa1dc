"""What a filter responds to (seeds 001/002, Chollet 5.4.2): gradient ascent on the input image, from grey noise,
to maximise the filter's mean activation. Works under every backend `backend.input_gradient` knows (TF, JAX, torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from cnnlab.nets.cut import up_to
from cnnlab.training import backend


@dataclass
class Patterns:
    images: np.ndarray  # (filters, rows, cols, channels) in 0..255, as the model's input
    activations: np.ndarray  # (steps + 1, filters): each filter's mean activation before every step and after the last


def filter_patterns(
    model: keras.Model,
    layer_name: str,
    filters: Sequence[int],
    steps: int = 30,
    step_size: float = 10.0,
    seed: int = 0,
) -> Patterns:
    """One input image per filter that excites it, all filters of a layer ascending together.

    Each step moves the image by `step_size` pixel levels along its gradient normalised to unit RMS (Chollet's
    normalisation), so the pace does not depend on the layer's scale.
    """
    before = up_to(model, layer_name)
    channels = before.output_shape[-1]
    bad = [f for f in filters if not 0 <= f < channels]
    if bad:
        raise ValueError(f"layer {layer_name!r} has {channels} filters (0..{channels - 1}); no filter {bad}")
    chosen = keras.ops.one_hot(np.asarray(filters), channels)

    def mean_activation(x: Any) -> Any:  # each image's mean activation of its own filter
        return keras.ops.sum(keras.ops.mean(before(x, training=False), axis=(1, 2)) * chosen, axis=1)

    rng = np.random.default_rng(seed)
    x = (128.0 + 20.0 * rng.standard_normal((len(filters), *before.input_shape[1:]))).astype(np.float32)
    activation_and_gradient = backend.gradient_function(mean_activation)
    trace = []
    for _ in range(steps):
        activations, grad = activation_and_gradient(x)
        trace.append(activations)
        rms = np.sqrt((grad**2).mean(axis=tuple(range(1, grad.ndim)), keepdims=True)) + 1e-5
        x = np.clip(x + step_size * grad / rms, 0.0, 255.0)
    trace.append(activation_and_gradient(x)[0])
    return Patterns(images=x, activations=np.stack(trace).astype(np.float64))


def for_display(images: np.ndarray) -> np.ndarray:
    """Each pattern standardised and mapped to [0, 1] around grey (Chollet's deprocess_image): faint patterns show."""
    axes = tuple(range(1, images.ndim))
    centred = images - images.mean(axis=axes, keepdims=True)
    scaled = centred / (centred.std(axis=axes, keepdims=True) + 1e-5) * 0.15 + 0.5
    return np.clip(scaled, 0.0, 1.0)
