"""Grad-CAM (Selvaraju et al.; seeds 001/002): where in the image a convolution layer saw the evidence for a class.

The model is cut at the layer: the layers after it are applied to its feature maps, the class score's gradient
with respect to those maps is averaged per channel, and the maps weighted by it (ReLU) are the heatmap.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from cnnlab import backend


def _layers_after(model: keras.Model, layer_name: str) -> list[keras.layers.Layer]:
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise ValueError(f"model {model.name!r} has no layer {layer_name!r}; its layers: {', '.join(names)}")
    return model.layers[names.index(layer_name) + 1 :]


def class_scores(logits: Any, classes: np.ndarray) -> Any:
    """Each image's score (logit) for its class; one sigmoid unit scores class 1 as z and class 0 as -z."""
    if logits.shape[-1] == 1:
        z = logits[:, 0]
        return keras.ops.where(keras.ops.convert_to_tensor(classes == 1), z, -z)
    return keras.ops.take_along_axis(logits, keras.ops.convert_to_tensor(classes[:, None]), axis=1)[:, 0]


def _logits(layer: keras.layers.Layer, x: Any) -> Any:
    """The output layer before its softmax / sigmoid: a confident probability's gradient vanishes (Grad-CAM
    explains the class score, not the probability)."""
    activation = getattr(layer, "activation", None)
    if activation not in (keras.activations.softmax, keras.activations.sigmoid):
        raise ValueError(f"Grad-CAM expects the last layer to end in a softmax or sigmoid; {layer.name} does not")
    layer.activation = keras.activations.linear
    try:
        return layer(x, training=False)
    finally:
        layer.activation = activation


def grad_cam(model: keras.Model, layer_name: str, images: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """Heatmaps (images, rows, cols) of `layer_name`, each scaled to [0, 1], at the layer's resolution.

    `classes`: the class to explain for each image; the model's own prediction when None.
    """
    after = _layers_after(model, layer_name)
    maps = keras.Model(model.inputs, model.get_layer(layer_name).output).predict(images, verbose=0)
    if classes is None:
        predicted = model.predict(images, verbose=0)
        classes = (predicted[:, 0] > 0.5).astype(int) if predicted.shape[-1] == 1 else predicted.argmax(axis=1)
    classes = np.asarray(classes)

    def score(feature_maps: Any) -> Any:
        out = feature_maps
        for layer in after[:-1]:
            out = layer(out, training=False)
        return class_scores(_logits(after[-1], out), classes)

    gradients = backend.input_gradient(score, maps)
    weights = gradients.mean(axis=(1, 2), keepdims=True)  # one weight per channel and image
    heat = np.maximum((weights * maps).sum(axis=-1), 0.0)
    peak = heat.max(axis=(1, 2), keepdims=True)
    return np.divide(heat, peak, out=np.zeros_like(heat), where=peak > 0)


def upsample(heatmaps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Heatmaps resized (bilinear) to the images' rows and columns, to lay over them."""
    resized = keras.ops.image.resize(heatmaps[..., None], size, interpolation="bilinear")
    return np.asarray(keras.ops.convert_to_numpy(resized))[..., 0]
