"""A trained model cut at a named layer, also one inside a nested backbone (transfer models).

`before` maps the model's input (raw pixels) to the layer's output (feature maps, filter patterns: any layer);
`after` maps that output on to the model's class probabilities (Grad-CAM: a layer no skip connection passes).
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np

CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
# Layers that keep a convolution's maps as maps: Grad-CAM's default layer is the last convolution's output after them.
_MAP_KEEPING = (keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU, keras.layers.Add)


def walk(model: keras.Model) -> Iterator[tuple[keras.Model, keras.layers.Layer]]:
    """(enclosing model, layer) for every layer, depth first, nested models' layers in place of the model."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from walk(layer)
        else:
            yield model, layer


def conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's convolutions, first to last, including those of a nested backbone."""
    return [layer for _, layer in walk(model) if isinstance(layer, CONVOLUTIONS)]


def conv_layer_names(model: keras.Model) -> list[str]:
    return [layer.name for layer in conv_layers(model)]


def last_map_layer(model: keras.Model) -> str:
    """Grad-CAM's usual layer: the last convolution's output after its batch norm, activation and residual add
    (VGG16's block5_conv3, MobileNet's conv_pw_13_relu, ResNet50's conv5_block3_out), or else the first layer
    after it that cuts the model in two (DenseNet's last concatenation)."""
    layers = [layer for _, layer in walk(model)]
    found, extending = None, False
    for at, layer in enumerate(layers):
        if isinstance(layer, CONVOLUTIONS):
            found, extending = at, True
        elif extending and isinstance(layer, _MAP_KEEPING):
            found = at
        else:
            extending = False
    if found is None:
        raise ValueError(f"model {model.name!r} has no convolution layer")
    for layer in layers[found:]:
        if len(layer.output.shape) == 4 and cuts(model, layer.name):
            return layer.name
    raise ValueError(f"no layer from {layers[found].name} on cuts model {model.name!r} in two; name one")


def cuts(model: keras.Model, layer_name: str) -> bool:
    """Whether `split` can cut the model at `layer_name` (no skip connection passes it)."""
    try:
        split(model, layer_name)
    except ValueError:
        return False
    return True


def split(model: keras.Model, layer_name: str) -> tuple[keras.Model, keras.Model]:
    """(before, after): input -> `layer_name`'s output, and that output -> the model's output (Grad-CAM)."""
    before, after = _cut_nested(model, layer_name, with_after=True)
    assert after is not None
    return before, after


def up_to(model: keras.Model, layer_name: str) -> keras.Model:
    """Input -> `layer_name`'s output (feature maps, filter patterns): any layer, inside a residual block too."""
    return _cut_nested(model, layer_name, with_after=False)[0]


Cut = tuple[keras.Model, keras.Model | None]


def _cut_nested(model: keras.Model, layer_name: str, with_after: bool) -> Cut:
    try:
        chain, layer = _owner(model, layer_name)
    except KeyError:
        convs = ", ".join(conv_layer_names(model)) or "none"
        raise ValueError(f"model {model.name!r} has no layer {layer_name!r}; its convolutions: {convs}") from None
    before, after = _cut(chain[-1], layer, with_after)
    for outer, inner in zip(reversed(chain[:-1]), reversed(chain[1:]), strict=True):
        before, after = _wrap(outer, inner, before, after)
    return before, after


def _owner(model: keras.Model, layer_name: str) -> tuple[list[keras.Model], keras.layers.Layer]:
    """The chain of models from `model` down to the one holding `layer_name`, and that layer."""
    for layer in model.layers:
        if layer.name == layer_name:
            return [model], layer
        if isinstance(layer, keras.Model):
            try:
                chain, found = _owner(layer, layer_name)
            except KeyError:
                continue
            return [model, *chain], found
    raise KeyError(layer_name)


def _cut(model: keras.Model, layer: keras.layers.Layer, with_after: bool) -> Cut:
    """The cut of a model that holds `layer` itself; `after` only when asked for."""
    if isinstance(model, keras.Sequential):  # a chain: its layers' graph nodes are not reliably the model's
        at = model.layers.index(layer)
        before = _replay(model.inputs[0].shape[1:], model.layers[: at + 1], "images")
        return before, _replay(before.outputs[0].shape[1:], model.layers[at + 1 :], "maps") if with_after else None
    before = keras.Model(model.inputs, layer.output)
    if not with_after:
        return before, None
    if layer.output is model.outputs[0]:  # a backbone cut at its own output: nothing of it comes after
        return before, _replay(layer.output.shape[1:], [], "maps")
    try:
        return before, keras.Model(layer.output, model.outputs[0])
    except ValueError as error:
        raise ValueError(
            f"{layer.name!r} does not cut {model.name!r} in two (a skip connection passes it: {error});"
            " choose the output of a block, e.g. the add or activation that ends it"
        ) from error


def _wrap(outer: keras.Model, inner: keras.Model, before: keras.Model, after: keras.Model | None) -> Cut:
    """Extend a cut of `inner` to one of `outer` by replaying the outer layers around it (a chain)."""
    _single_input_chain(outer, inner)
    layers = [layer for layer in outer.layers if not isinstance(layer, keras.layers.InputLayer)]
    at = layers.index(inner)
    images = _replay(outer.inputs[0].shape[1:], [*layers[:at], before], "images")
    if after is None:
        return images, None
    return images, _replay(before.outputs[0].shape[1:], [after, *layers[at + 1 :]], "maps")


def _single_input_chain(model: keras.Model, nested: keras.Model) -> None:
    """The layers around a nested model are replayed one after another: refuse a graph that branches."""
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            if len(node.input_tensors) > 1:
                raise ValueError(
                    f"cannot cut {model.name!r} inside {nested.name!r}: {layer.name} joins several tensors;"
                    " choose a layer of the outer model"
                )


def _replay(shape: tuple[int, ...], layers: list[keras.layers.Layer], name: str) -> keras.Model:
    """A model that applies `layers` one after another (inference mode) to an input of `shape`."""
    start = keras.Input(shape, name=name)
    x = start
    for layer in layers:
        x = layer(x, training=False)
    return keras.Model(start, x)


def infer(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """One direct inference call: a cut is a new model each time, and `predict` would trace a new function for it."""
    return np.asarray(keras.ops.convert_to_numpy(model(np.asarray(images, dtype=np.float32), training=False)))


def final_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer that makes the class probabilities (the last one, inside a nested head too)."""
    last = model.layers[-1]
    return final_layer(last) if isinstance(last, keras.Model) else last
