"""The model zoo: the seed documents' networks, built from a name and options in params.

Every model takes raw pixel values (0..255) and scales them itself, so a saved
model classifies images as they come; the scaling layer has no weights and the
parameter counts stay those of the seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cnnlab.util.lazy import lazy_module

if TYPE_CHECKING:
    import keras
    import numpy as np
else:
    # The builders need Keras only when they are called. Importing this module must stay cheap: params validation
    # reads the builders' names and options, and the data stages (no Keras) should not pay seconds of Keras import.
    keras = lazy_module("keras")

Builder = Callable[..., "keras.Model"]
MODELS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        MODELS[name] = builder
        return builder

    return add


def output_layer(num_classes: int, regularizer: keras.regularizers.Regularizer | None = None) -> keras.layers.Layer:
    # Binary problems use one sigmoid unit, multi-class a softmax (as the seeds teach). In float32 under a mixed
    # precision policy too, so the loss sees probabilities at full precision.
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=regularizer, dtype="float32")
    return keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer, dtype="float32")


def conv_relu(filters: int, size: int, batchnorm: bool = False, **options: object) -> list[keras.layers.Layer]:
    """Conv2D with ReLU, or Conv2D → BatchNormalization → ReLU (the convolution keeps its bias, as the seeds')."""
    if batchnorm:
        conv = keras.layers.Conv2D(filters, size, **options)
        return [conv, keras.layers.BatchNormalization(), keras.layers.Activation("relu")]
    return [keras.layers.Conv2D(filters, size, activation="relu", **options)]


def _sequential(name: str, input_shape: Sequence[int], body: list[keras.layers.Layer]) -> keras.Model:
    return keras.Sequential([keras.Input(shape=tuple(input_shape)), keras.layers.Rescaling(1 / 255), *body], name=name)


@register("F0")
def dense_baseline(input_shape: Sequence[int], num_classes: int, units: Sequence[int] = (128,)) -> keras.Model:
    """Flatten → Dense stack → softmax (the seeds' fully connected baseline)."""
    body = [
        keras.layers.Flatten(),
        *(keras.layers.Dense(u, activation="relu") for u in units),
        output_layer(num_classes),
    ]
    return _sequential("F0", input_shape, body)


MODELS["M0"] = dense_baseline


@register("F1")
def fashion_cnn(input_shape: Sequence[int], num_classes: int, batchnorm: bool = False) -> keras.Model:
    """Seed 000's fashion_mnist_cnn: three same-padded conv/pool blocks (16, 32, 64) and Dense(64);
    `batchnorm` (not the seed's) normalizes each convolution, for the `speed` budget's large batches."""
    body: list[keras.layers.Layer] = []
    for filters in (16, 32, 64):
        body += [*conv_relu(filters, 3, batchnorm, padding="same"), keras.layers.MaxPooling2D(2, 2, padding="same")]
    body += [keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"), output_layer(num_classes)]
    return _sequential("F1", input_shape, body)


@register("F2")
def hongong_cnn(input_shape: Sequence[int], num_classes: int, dropout: float = 0.4) -> keras.Model:
    """Seed 003: conv 32/64 (same) with pooling, Dense(100), Dropout(0.4)."""
    body = [
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(100, activation="relu"),
        keras.layers.Dropout(dropout),
        output_layer(num_classes),
    ]
    return _sequential("F2", input_shape, body)


@register("M1")
def chollet_mnist(input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """Chollet ch. 5.1: conv 32/64/64 (valid) with two poolings, Dense(64)."""
    body = [
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        output_layer(num_classes),
    ]
    return _sequential("M1", input_shape, body)


@register("M2")
def keras_mnist_cnn(input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """The keras.io mnist_cnn (seed 004 prog. 6-2); F3 runs it on Fashion-MNIST."""
    body = [
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Dropout(0.25),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.5),
        output_layer(num_classes),
    ]
    return _sequential("M2", input_shape, body)


@register("M3")
def lenet5_book(input_shape: Sequence[int], num_classes: int, batchnorm: bool = False) -> keras.Model:
    """'LeNet-5' as seed 004 codes it: same padding, ReLU, max pooling; `batchnorm` (not the seed's)
    normalizes each convolution, for the `speed` budget's large batches."""
    body = [
        *conv_relu(6, 5, batchnorm, padding="same"),
        keras.layers.MaxPooling2D(2),
        *conv_relu(16, 5, batchnorm, padding="same"),
        keras.layers.MaxPooling2D(2),
        *conv_relu(120, 5, batchnorm, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(84, activation="relu"),
        output_layer(num_classes),
    ]
    return _sequential("M3", input_shape, body)


@register("M4")
def lenet5_classic(input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """Classic LeNet-5 on 32x32 input with valid padding (28x28 images are zero-padded to 32x32)."""
    pad = [keras.layers.ZeroPadding2D((32 - input_shape[0]) // 2)] if input_shape[0] < 32 else []
    body = [
        *pad,
        keras.layers.Conv2D(6, 5, activation="tanh"),
        keras.layers.AveragePooling2D(2),
        keras.layers.Conv2D(16, 5, activation="tanh"),
        keras.layers.AveragePooling2D(2),
        keras.layers.Conv2D(120, 5, activation="tanh"),
        keras.layers.Flatten(),
        keras.layers.Dense(84, activation="tanh"),
        output_layer(num_classes),
    ]
    return _sequential("M4", input_shape, body)


@register("C1")
def cifar_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    dropout: Sequence[float] = (0.25, 0.25, 0.5),
    output_l2: float = 0.0,
    batchnorm: bool = False,
) -> keras.Model:
    """Seed 004 prog. 6-4a: two conv pairs (32, 64), Dense(512); dropout rates, output L2 and batch
    normalization (Conv → BatchNormalization → ReLU, C4's optional fourth factor) as options."""
    body: list[keras.layers.Layer] = []
    for filters, rate in zip((32, 64), dropout[:2], strict=True):
        for _ in range(2):
            body += conv_relu(filters, 3, batchnorm)
        body += [keras.layers.MaxPooling2D(2)] + ([keras.layers.Dropout(rate)] if rate else [])
    body += [keras.layers.Flatten(), keras.layers.Dense(512, activation="relu")]
    body += [keras.layers.Dropout(dropout[2])] if dropout[2] else []
    regularizer = keras.regularizers.L2(output_l2) if output_l2 else None
    body += [output_layer(num_classes, regularizer)]
    return _sequential("C1", input_shape, body)


@register("D1")
def cats_dogs_cnn(
    input_shape: Sequence[int], num_classes: int, dropout: float = 0.0, input_size: int | None = None
) -> keras.Model:
    """Chollet's small convnet for 150x150 cats vs dogs (D2 adds dropout before the dense layers).

    `input_size` downscales the images to input_size x input_size inside the model: the quick budget's
    smoke run, a quarter of the arithmetic at 75 pixels. The saved model still takes the prepared images.
    """
    body: list[keras.layers.Layer] = [keras.layers.Resizing(input_size, input_size)] if input_size else []
    for filters in (32, 64, 128, 128):
        body += [keras.layers.Conv2D(filters, 3, activation="relu"), keras.layers.MaxPooling2D(2)]
    body += [keras.layers.Flatten()] + ([keras.layers.Dropout(dropout)] if dropout else [])
    body += [keras.layers.Dense(512, activation="relu"), output_layer(num_classes)]
    return _sequential("D1", input_shape, body)


@register("D2")
def cats_dogs_dropout(
    input_shape: Sequence[int], num_classes: int, dropout: float = 0.5, input_size: int | None = None
) -> keras.Model:
    """D1 with Dropout(0.5) before the dense layers (Chollet; trained with augmentation)."""
    model = cats_dogs_cnn(input_shape, num_classes, dropout=dropout, input_size=input_size)
    model.name = "D2"
    return model


C5_VARIANTS = ("plain", "l2", "dropout", "batchnorm")


@register("C5")
def cifar_blocks(
    input_shape: Sequence[int],
    num_classes: int,
    variant: str = "plain",
    filters: Sequence[int] = (32, 64, 128),
    l2: float = 0.001,
    dropout: float = 0.2,
) -> keras.Model:
    """Seed 000's CIFAR-10 network: same-padded Conv2D pairs + MaxPool2D per block, Dense(256).

    Inputs are standardized per channel by a Normalization layer that the
    training code adapts on the training split only (the seed's
    `(x - mean) / std` with train statistics). The variants are the seed's
    remedies for overfitting: `l2` (kernel_regularizer=l2(0.001) on every conv),
    `dropout` (Dropout(0.2) after every block) and `batchnorm` (Conv ->
    BatchNormalization -> Activation('relu')).
    """
    if variant not in C5_VARIANTS:
        raise ValueError(f"C5 variant {variant!r} unknown; allowed: {', '.join(C5_VARIANTS)}")
    regularizer = keras.regularizers.L2(l2) if variant == "l2" else None
    body: list[keras.layers.Layer] = [keras.layers.Normalization(axis=-1, name="standardize")]
    for width in filters:
        for _ in range(2):
            body += conv_relu(width, 3, variant == "batchnorm", padding="same", kernel_regularizer=regularizer)
        body += [keras.layers.MaxPooling2D(2, 2, padding="same")]
        body += [keras.layers.Dropout(dropout)] if variant == "dropout" else []
    body += [keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"), output_layer(num_classes)]
    return keras.Sequential([keras.Input(shape=tuple(input_shape)), *body], name=f"C5_{variant}")


@register("CNN")
def searched_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    filters: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    convs_per_block: int = 1,
    dense_units: int = 128,
    dropout: float = 0.0,
    l2: float = 0.0,
    batchnorm: bool = False,
) -> keras.Model:
    """The network Keras Tuner searches (tune stage): one block per entry of `filters`, each
    `convs_per_block` same-padded convolutions (Conv → BatchNormalization → ReLU with `batchnorm`),
    2x2 max pooling and dropout; then Dense(dense_units) with dropout. L2 on every kernel."""
    regularizer = keras.regularizers.L2(l2) if l2 else None
    drop = [keras.layers.Dropout(dropout)] if dropout else []
    body: list[keras.layers.Layer] = []
    for width in filters:
        for _ in range(convs_per_block):
            body += [keras.layers.Conv2D(width, kernel_size, padding="same", use_bias=not batchnorm,
                                   kernel_regularizer=regularizer)]  # fmt: skip
            body += [keras.layers.BatchNormalization()] if batchnorm else []
            body += [keras.layers.Activation("relu")]
        body += [keras.layers.MaxPooling2D(2, padding="same"), *drop]
    body += [
        keras.layers.Flatten(),
        keras.layers.Dense(dense_units, activation="relu", kernel_regularizer=regularizer),
        *drop,
    ]
    body += [output_layer(num_classes, regularizer)]
    return _sequential("CNN", input_shape, body)


def adapt_normalization(model: keras.Model, images: np.ndarray) -> None:
    """Fit every Normalization layer's mean and variance on `images` (the training split only)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            layer.adapt(images.astype("float32"))


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **options: object) -> keras.Model:
    """Build a zoo model by name; unknown names or options fail with the allowed values."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](input_shape, num_classes, **options)
    except TypeError as exc:
        raise ValueError(f"model {name!r} does not take these options {sorted(options)}: {exc}") from None
