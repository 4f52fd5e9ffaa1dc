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

import numpy as np

from helpers.project import ROOT
from helpers.training import EPOCHS, ROWS, epoch_orders


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
from helpers.training import epoch_orders
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
