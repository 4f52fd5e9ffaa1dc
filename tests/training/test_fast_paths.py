"""The fast paths train exactly as the plain ones: grouped steps (scanned under JAX) and Keras' own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import pytest

from cnnlab.params import SearchSpace, Tune
from cnnlab.training import backend
from cnnlab.training.fit import fit, seeded_model
from cnnlab.training.hypermodel import SearchHyperModel
from helpers.project import ROOT, subset
from helpers.training import SHIFT_AND_FLIP, recipe, train_both


def test_grouped_steps_train_as_single_steps(fashion: dict) -> None:
    # Under the tests' backend (TensorFlow): Keras' own steps_per_execution loop. F2 has dropout and here
    # augmentation: their random draws must follow the same sequence too.
    # 700 images / 64: groups of 5, 5 and 1 steps, the last batch smaller
    one, grouped = train_both("F2", fashion, 5, augmentation=SHIFT_AND_FLIP)
    assert grouped.history == one.history
    for a, b in zip(one.model.get_weights(), grouped.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert one.history["val_accuracy"][-1] > 0.5  # chance is 0.1


def count_train_step_traces(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list whose length is how often the TensorFlow train step has been traced (its Python body runs only then)."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    traced: list[int] = []
    step = TensorFlowTrainer.train_step

    def counting(self: keras.Model, data: object) -> object:
        traced.append(1)
        return step(self, data)

    monkeypatch.setattr(TensorFlowTrainer, "train_step", counting)
    return traced


def test_a_training_traces_its_step_once_and_trains_to_the_same_weights(
    fashion: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keras creates the optimizer's and metrics' variables in the step's first trace when no one built them
    # before, and TensorFlow traces a step that creates variables twice: about 1 s more for every training.
    traced = count_train_step_traces(monkeypatch)
    plan = recipe("F2", epochs=1, budgets={}, batch_size=64, augmentation=SHIFT_AND_FLIP)  # behind its augmenter
    train, val = subset(fashion["train"], 640), subset(fashion["test"], 100)
    built = fit(seeded_model(plan, (28, 28, 1), 10, 3), plan, train, val, 10, seed=3, verbose=0)
    assert len(traced) == 1
    monkeypatch.setattr(backend, "build_training_state", lambda *args: None)  # Keras' own deferred building
    traced.clear()
    deferred = fit(seeded_model(plan, (28, 28, 1), 10, 3), plan, train, val, 10, seed=3, verbose=0)
    assert len(traced) == 2
    assert built.history == deferred.history
    for a, b in zip(built.model.get_weights(), deferred.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_search_trial_traces_its_step_once(fashion: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    traced = count_train_step_traces(monkeypatch)
    search = Tune(dataset="fashion_mnist", space=SearchSpace(conv_blocks=1, filters=8, dense_units=16))
    hypermodel = SearchHyperModel(search, (28, 28, 1), 10, seed=3)
    hp = kt.HyperParameters()
    x, y = subset(fashion["train"], 256)
    history = hypermodel.fit(hp, hypermodel.build(hp), x, y, epochs=1, verbose=0)
    assert len(traced) == 1 and len(history.history["loss"]) == 1


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
