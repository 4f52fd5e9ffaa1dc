"""The fast paths train exactly as the plain ones: grouped steps (scanned under JAX) and Keras' own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cnnlab.training import backend
from helpers.project import ROOT
from helpers.training import SHIFT_AND_FLIP, train_both


def test_grouped_steps_train_as_single_steps(fashion: dict) -> None:
    # Under the tests' backend (TensorFlow): Keras' own steps_per_execution loop. F2 has dropout and here
    # augmentation: their random draws must follow the same sequence too.
    # 700 images / 64: groups of 5, 5 and 1 steps, the last batch smaller
    one, grouped = train_both("F2", fashion, 5, augmentation=SHIFT_AND_FLIP)
    assert grouped.history == one.history
    for a, b in zip(one.model.get_weights(), grouped.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert one.history["val_accuracy"][-1] > 0.5  # chance is 0.1


JAX_SCRIPT = """
import json, sys
import keras
import numpy as np
sys.path.insert(0, sys.argv[1])
from helpers.training import SHIFT_AND_FLIP, train_both
from cnnlab.data.loaders import load_idx_folder

assert keras.backend.backend() == "jax", keras.backend.backend()

fashion = load_idx_folder(__import__("pathlib").Path(sys.argv[2]))
for augmentation in ({}, SHIFT_AND_FLIP):  # augmented: the random transform draws afresh at every scanned step
    one, grouped = train_both("F2", fashion, 5, augmentation=augmentation)
    pairs = zip(one.model.get_weights(), grouped.model.get_weights())
    weights = max(float(np.abs(a - b).max()) for a, b in pairs)
    print(json.dumps({"histories": [one.history, grouped.history], "weights": weights}))
print(json.dumps({"scanned": grouped.model.train_function.__qualname__}))
"""


@pytest.mark.slow
def test_scanned_steps_under_jax_train_as_single_steps(fashion_dir: Path) -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    code = textwrap.dedent(JAX_SCRIPT)
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "tests"), str(fashion_dir)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # F2's recipe stops early and says so when it restores its best weights: only the JSON lines are results
    *runs, last = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert last["scanned"].startswith("scanned_train_function")  # the scan ran, not Keras' loop
    for out in runs:
        one, grouped = out["histories"]
        for name in one:
            np.testing.assert_allclose(grouped[name], one[name], rtol=1e-4, err_msg=name)
        assert out["weights"] < 1e-3  # one XLA program for 5 steps rounds a little differently from 5 programs
        assert one["val_accuracy"][-1] > 0.5
    assert runs[0]["histories"][0]["loss"] != runs[1]["histories"][0]["loss"]  # the augmentation did train


def test_auto_groups_steps_on_a_gpu_only() -> None:
    assert backend.steps_per_execution(8) == 8
    assert backend.steps_per_execution("auto") == (16 if backend.device().startswith("gpu") else 1)
