"""Grad-CAM (Selvaraju et al.; seeds 001/002): where in the image a convolution layer saw the evidence for a class.

The model is cut at the layer (`cnnlab.nets.cut.split`): the part after it is applied to its feature maps, the class
score's gradient with respect to those maps is averaged per channel, and the maps weighted by it (ReLU) are the
heatmap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from cnnlab.nets.cut import final_layer, infer, split
from cnnlab.training import backend
from cnnlab.training.evaluation import predict_classes


def class_scores(logits: Any, classes: np.ndarray) -> Any:
    """Each image's score (logit) for its class; one sigmoid unit scores class 1 as z and class 0 as -z."""
    if logits.shape[-1] == 1:
        z = logits[:, 0]
        return keras.ops.where(keras.ops.convert_to_tensor(classes == 1), z, -z)
    return keras.ops.take_along_axis(logits, keras.ops.convert_to_tensor(classes[:, None]), axis=1)[:, 0]


SQUASHING = (keras.activations.softmax, keras.activations.sigmoid)


def check_output(model: keras.Model) -> None:
    """Grad-CAM explains class logits: the model must end in a softmax, a sigmoid, or logits already."""
    layer = final_layer(model)
    if getattr(layer, "activation", None) not in (*SQUASHING, keras.activations.linear):
        raise ValueError(
            f"Grad-CAM needs the last layer to output class scores through a softmax, a sigmoid or nothing;"
            f" {layer.name} ({type(layer).__name__}) does not"
        )


@contextlib.contextmanager
def _logits(model: keras.Model) -> Iterator[None]:
    """The model outputs logits while inside: a confident probability's gradient vanishes, and Grad-CAM explains
    the class score, not the probability."""
    check_output(model)
    layer = final_layer(model)
    activation = layer.activation
    layer.activation = keras.activations.linear
    try:
        yield
    finally:
        layer.activation = activation


def grad_cam(model: keras.Model, layer_name: str, images: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """Heatmaps (images, rows, cols) of `layer_name`, each scaled to [0, 1], at the layer's resolution.

    `layer_name` may be inside a nested backbone. `classes`: the class to explain for each image; the model's own
    prediction when None.
    """
    before, after = split(model, layer_name)
    maps = infer(before, images)
    classes = predict_classes(model, images) if classes is None else np.asarray(classes)
    with _logits(model):
        gradients = backend.input_gradient(lambda m: class_scores(after(m, training=False), classes), maps)
    weights = gradients.mean(axis=(1, 2), keepdims=True)  # one weight per channel and image
    heat = np.maximum((weights * maps).sum(axis=-1), 0.0)
    peak = heat.max(axis=(1, 2), keepdims=True)
    return np.divide(heat, peak, out=np.zeros_like(heat), where=peak > 0)


def upsample(heatmaps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Heatmaps resized (bilinear) to the images' rows and columns, to lay over them."""
    resized = keras.ops.image.resize(heatmaps[..., None], size, interpolation="bilinear")
    return np.asarray(keras.ops.convert_to_numpy(resized))[..., 0]
