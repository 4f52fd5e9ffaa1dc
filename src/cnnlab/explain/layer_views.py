"""What a trained network's layers hold: the first convolution's kernels and the feature maps of chosen layers
for chosen images (seeds 000, 002, 004)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from cnnlab.nets.cut import conv_layers, infer, up_to


def first_conv_kernels(model: keras.Model) -> np.ndarray:
    """The first convolution's kernels (rows, cols, input channels, filters) scaled to [0, 1] by their overall
    minimum and maximum, as seed 004 (program 6-6) draws them."""
    convs = conv_layers(model)
    if not convs:
        raise ValueError(f"model {model.name!r} has no convolution: there are no kernels to show")
    first = convs[0]  # a separable convolution's spatial kernels are its depthwise ones
    kernel = keras.ops.convert_to_numpy(first.depthwise_kernel if hasattr(first, "depthwise_kernel") else first.kernel)
    kernel = np.asarray(kernel, dtype=np.float32)
    low, high = kernel.min(), kernel.max()
    return (kernel - low) / (high - low) if high > low else np.zeros_like(kernel)


def feature_maps(model: keras.Model, layer_names: Sequence[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """Each named layer's output for `images` (raw pixels, as the model takes them); a backbone's layers too."""
    return {name: infer(up_to(model, name), images) for name in layer_names}
