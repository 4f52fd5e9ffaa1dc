"""Small Keras models shaped as the project's own: a ResNet-like block, a transfer model around a backbone."""

from __future__ import annotations

import keras


def residual_model(size: int = 16) -> keras.Model:
    """conv → [conv → bn → add(skip) → relu] → pool → dense: a ResNet block as keras.applications writes them."""
    images = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(images)
    y = keras.layers.Conv2D(4, 3, padding="same", name="block_conv")(x)
    y = keras.layers.BatchNormalization(name="block_bn")(y)
    y = keras.layers.Add(name="block_add")([x, y])
    y = keras.layers.Activation("relu", name="block_out")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(images, keras.layers.Dense(3, activation="softmax")(y), name="residual")


def transfer_like(backbone: keras.Model) -> keras.Model:
    """cnnlab's transfer model: raw pixels → resize → preprocess → the backbone → a Sequential head."""
    images = keras.Input((24, 24, 3), name="images")
    x = keras.layers.Resizing(32, 32)(images)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(x)
    head = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")], name="head")
    return keras.Model(images, head(backbone(x, training=False)))
