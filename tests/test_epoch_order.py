"""The pipeline's `fit` visits the training rows in a new order every epoch, the same orders for the same seed.

Keras' `shuffle=True` under TensorFlow repeats one order in every epoch once a global seed is set; a network
without dropout overfits that order (C3's no-dropout arm lost 3 points of held-out accuracy to it). A layer
records the row numbers of every training batch as `fit` feeds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import yaml
from keras import ops

from cnnlab.params import parse_params
from cnnlab.training.fit import fit
from conftest import ROOT

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


def check_orders(first: np.ndarray, again: np.ndarray, other_seed: np.ndarray, second_phase: np.ndarray) -> None:
    for epoch in [*first, *second_phase]:
        assert sorted(epoch) == list(range(ROWS))  # every row once per epoch
    assert len({tuple(epoch) for epoch in first}) == EPOCHS  # a new order every epoch
    np.testing.assert_array_equal(first, again)  # the same seed gives the same orders
    assert not np.array_equal(first, other_seed)
    # A second phase from epoch 2 on (fine-tuning) does not replay the first phase's orders
    assert not {tuple(epoch) for epoch in first} & {tuple(epoch) for epoch in second_phase}


def test_every_epoch_trains_on_a_new_seeded_order() -> None:
    check_orders(epoch_orders(5), epoch_orders(5), epoch_orders(6), epoch_orders(5, initial_epoch=2))


JAX_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import keras
assert keras.backend.backend() == "jax", keras.backend.backend()
from test_epoch_order import epoch_orders
orders = [epoch_orders(5), epoch_orders(5), epoch_orders(6), epoch_orders(5, initial_epoch=2)]
print(json.dumps([o.tolist() for o in orders]))
"""


def test_every_epoch_trains_on_a_new_seeded_order_under_jax() -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(JAX_SCRIPT), str(ROOT / "tests")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    check_orders(*(np.asarray(orders) for orders in json.loads(done.stdout.strip().splitlines()[-1])))
