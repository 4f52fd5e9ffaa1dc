"""Training recipes from the project's params, and trainings that the tests compare."""

from __future__ import annotations

import keras
import numpy as np
import yaml
from keras import ops

from cnnlab.params import parse_params
from cnnlab.training.fit import fit, seeded_model
from helpers.project import ROOT, subset


def recipe(exp_id: str, **changes):
    """The recipe of experiment `exp_id` in the project's params, with `changes` to its entry."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["experiments"][exp_id].update(changes)
    return parse_params(raw).recipe(exp_id)


def f1_recipe(**changes):
    return recipe("F1", **changes)


SHIFT_AND_FLIP = {"width_shift_range": 0.1, "height_shift_range": 0.1, "horizontal_flip": True}


def train_both(exp_id: str, fashion: dict, steps: int, **changes) -> tuple:
    """One step per call, then `steps` per call: same seed, same data, same recipe otherwise."""
    train, val = subset(fashion["train"], 1000), subset(fashion["test"], 300)
    results = []
    for grouped in (1, steps):
        plan = recipe(exp_id, epochs=2, budgets={}, batch_size=64, steps_per_execution=grouped, **changes)
        model = seeded_model(plan, (28, 28, 1), 10, 3)
        results.append(fit(model, plan, train, val, 10, seed=3, verbose=0))
    return tuple(results)


# The epoch orders: a layer records the row numbers of every training batch as `fit` feeds them.
ROWS, BATCH, EPOCHS = 24, 8, 4


class BatchRecorder(keras.layers.Layer):
    """Passes images through; in training, writes each batch's row numbers (the images' pixel value) to `log`."""

    def __init__(self, steps: int, batch: int, **kwargs: object):
        super().__init__(**kwargs)
        self.steps = steps
        self.log = self.add_weight(shape=(steps, batch), initializer="zeros", trainable=False, name="log")
        self.step = self.add_weight(shape=(), initializer="zeros", trainable=False, name="step")

    def call(self, images: object, training: bool = False) -> object:
        if training:
            rows = ops.reshape(images[:, 0, 0, 0], (1, -1))
            here = ops.reshape(ops.one_hot(ops.cast(self.step, "int32"), self.steps), (-1, 1))
            self.log.assign(self.log + here * rows)
            self.step.assign(self.step + 1)
        return images


def epoch_orders(seed: int, initial_epoch: int = 0) -> np.ndarray:
    """(epochs, rows): the row numbers in the order the pipeline's `fit` trained on them, epoch by epoch
    (`initial_epoch`: as a second phase, fine-tuning after the head, trains)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["experiments"]["F1"].update(epochs=EPOCHS, batch_size=BATCH, budgets={})
    recipe = parse_params(raw).recipe("F1")
    x = np.broadcast_to(np.arange(ROWS, dtype="float32")[:, None, None, None], (ROWS, 4, 4, 1)).copy()
    y = np.arange(ROWS) % 3
    recorder = BatchRecorder(EPOCHS * ROWS // BATCH, BATCH)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), recorder, keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]
    )
    fit(model, recipe, (x, y), None, 3, seed=seed, verbose=0, initial_epoch=initial_epoch)
    return np.asarray(recorder.log).reshape(EPOCHS, ROWS).astype(int)
