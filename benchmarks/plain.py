"""The plain arm: seed experiments written as their seeds write them, in plain Keras 3.

Images divided by 255 outside the model, a `Sequential` of the seed's layers, `compile` and `fit` with the
recipe's optimizer, batch size and epochs. The seeds set no random seed, so their `fit(shuffle=True)` trains
every epoch on a new order; here the initial weights and each epoch's order are seeded, for runs that repeat
(Keras' own shuffle under TensorFlow repeats one order in every epoch once a seed is set: `plain_fit`).
Augmented recipes put Keras 3's preprocessing layers at the front of the model, as Keras 3 (which has no
ImageDataGenerator) teaches, one layer per ImageDataGenerator option:

| ImageDataGenerator        | Keras 3 layer                                        |
|---------------------------|------------------------------------------------------|
| rotation_range (degrees)  | RandomRotation(degrees / 360)                        |
| width/height_shift_range  | RandomTranslation(height, width)                     |
| shear_range (degrees)     | RandomShear(tan(angle)) (a fraction of the image)    |
| zoom_range z              | RandomZoom((-z, z), (-z, z)): scale in [1-z, 1+z]    |
| horizontal/vertical_flip  | RandomFlip                                           |
| brightness_range (lo, hi) | RandomBrightness((lo-1, hi-1)) (additive)            |
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
from keras import layers

from cnnlab.params import Augmentation, Experiment


def augmentation_layers(options: Augmentation, seed: int) -> list[layers.Layer]:
    """One preprocessing layer per option that is switched on, in ImageDataGenerator's order."""
    fill = options.fill_mode
    out: list[layers.Layer] = []
    if options.rotation_range:
        out.append(layers.RandomRotation(options.rotation_range / 360, fill_mode=fill, seed=seed))
    if options.width_shift_range or options.height_shift_range:
        out.append(
            layers.RandomTranslation(
                options.height_shift_range, options.width_shift_range, fill_mode=fill, seed=seed + 1
            )
        )
    if options.shear_range:
        factor = math.tan(math.radians(options.shear_range))
        out.append(layers.RandomShear(x_factor=factor, y_factor=factor, fill_mode=fill, seed=seed + 2))
    if options.zoom_range:
        z = options.zoom_range
        out.append(layers.RandomZoom((-z, z), (-z, z), fill_mode=fill, seed=seed + 3))
    flips = "horizontal_and_vertical" if options.horizontal_flip and options.vertical_flip else None
    flips = flips or ("horizontal" if options.horizontal_flip else "vertical" if options.vertical_flip else None)
    if flips:
        out.append(layers.RandomFlip(flips, seed=seed + 4))
    if options.brightness_range:
        lo, hi = options.brightness_range
        out.append(layers.RandomBrightness((lo - 1, hi - 1), value_range=(0, 1), seed=seed + 5))
    return out


def fashion_cnn() -> list[layers.Layer]:  # seed 000
    return [
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2, 2, padding="same"),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2, 2, padding="same"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2, 2, padding="same"),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ]


def mnist_cnn() -> list[layers.Layer]:  # seed 004 prog. 6-2
    return [
        layers.Conv2D(32, 3, activation="relu"),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ]


def lenet5_book() -> list[layers.Layer]:  # seed 004 prog. 6-1
    return [
        layers.Conv2D(6, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(120, 5, padding="same", activation="relu"),
        layers.Flatten(),
        layers.Dense(84, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ]


def cifar_cnn(dropout: tuple[float, float, float] = (0.25, 0.25, 0.5)) -> list[layers.Layer]:  # 004 prog. 6-4a
    # Prog. 6-9 (C3) varies the three rates; a rate of 0 keeps its Dropout layer, as the seed's loop does.
    return [
        layers.Conv2D(32, 3, activation="relu"),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(dropout[0]),
        layers.Conv2D(64, 3, activation="relu"),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(dropout[1]),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.Dropout(dropout[2]),
        layers.Dense(10, activation="softmax"),
    ]


# The zoo model each experiment's recipe names -> the seed's layers.
SEED_LAYERS: dict[str, Callable[..., list[layers.Layer]]] = {
    "F1": fashion_cnn,
    "M2": mnist_cnn,
    "M3": lenet5_book,
    "C1": cifar_cnn,
}


def seed_layers(recipe: Experiment) -> list[layers.Layer]:
    """The seed's layers for `recipe`'s model, with the recipe's model options where the seed's network takes them;
    a clear exit (before any training) for a model or option the plain scripts do not have."""
    if recipe.model not in SEED_LAYERS:
        raise SystemExit(f"no plain seed script for model {recipe.model}; the harness knows {', '.join(SEED_LAYERS)}")
    try:
        return SEED_LAYERS[recipe.model](**recipe.model_options)
    except TypeError:
        raise SystemExit(f"the plain seed script of {recipe.model} takes no model options {recipe.model_options}: "
                         "run this recipe with --arms pipeline") from None  # fmt: skip


def plain_model(recipe: Experiment, input_shape: tuple[int, ...], seed: int) -> keras.Model:
    """The seed's network for `recipe` (augmentation layers first, if it augments), compiled as the seed does."""
    keras.utils.set_random_seed(seed)
    augment = augmentation_layers(recipe.augmentation, seed)
    model = keras.Sequential([keras.Input(input_shape), *augment, *seed_layers(recipe)])
    optimizer = keras.optimizers.get(
        {"class_name": recipe.optimizer.name, "config": {"learning_rate": recipe.optimizer.learning_rate}}
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def plain_fit(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    recipe: Experiment,
    seed: int,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 2,
) -> dict[str, list[float]]:
    """`model.fit` one epoch at a time, each on the rows in a new order drawn from `seed`: what the seeds'
    unseeded `fit(shuffle=True)` does, made repeatable. Returns the history of all epochs."""
    order = np.random.default_rng(seed)
    history: dict[str, list[float]] = {}
    for epoch in range(recipe.epochs):
        rows = order.permutation(len(train[1]))
        done = model.fit(train[0][rows], train[1][rows], batch_size=recipe.batch_size, epochs=epoch + 1,
                         initial_epoch=epoch, shuffle=False, validation_data=validation, callbacks=callbacks,
                         verbose=verbose)  # fmt: skip
        for name, values in done.history.items():
            history.setdefault(name, []).extend(values)
    return history
