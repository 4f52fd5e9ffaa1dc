"""What a trained network's layers hold: the first convolution's kernels and the feature maps of chosen layers
for chosen images (seeds 000, 002, 004)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np


def conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's 2-D convolutions, first to last (the layers whose kernels and maps are worth a look)."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def first_conv_kernels(model: keras.Model) -> np.ndarray:
    """The first convolution's kernels (rows, cols, input channels, filters) scaled to [0, 1] by their overall
    minimum and maximum, as seed 004 (program 6-6) draws them."""
    convs = conv_layers(model)
    if not convs:
        raise ValueError(f"model {model.name!r} has no Conv2D layer: there are no kernels to show")
    kernel = np.asarray(keras.ops.convert_to_numpy(convs[0].kernel), dtype=np.float32)
    low, high = kernel.min(), kernel.max()
    return (kernel - low) / (high - low) if high > low else np.zeros_like(kernel)


def feature_maps(model: keras.Model, layer_names: Sequence[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """Each named layer's output for `images` (raw pixels, as the model takes them), by one partial model."""
    known = {layer.name for layer in model.layers}
    missing = [name for name in layer_names if name not in known]
    if missing:
        choices = ", ".join(layer.name for layer in conv_layers(model)) or "none"
        raise ValueError(f"model {model.name!r} has no layer {', '.join(missing)}; its convolutions: {choices}")
    partial = keras.Model(model.inputs, [model.get_layer(name).output for name in layer_names])
    outputs = partial.predict(images, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return {name: np.asarray(out) for name, out in zip(layer_names, outputs, strict=True)}
