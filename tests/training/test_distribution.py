"""A recipe's `distribution`: one model on several devices trains as on one, and nothing changes on a plain CPU.

The two-device checks run in a subprocess each, on two virtual CPU devices: XLA's forced host device count
under JAX, two logical CPUs under TensorFlow (both must be set before the backend starts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from pydantic import ValidationError

from cnnlab.params import Experiment
from cnnlab.training import backend, distribution
from cnnlab.training.distribution import ONE_DEVICE, DistributionError
from cnnlab.training.fit import learning_rate, seeded_model
from helpers.project import ROOT
from helpers.training import f1_recipe


def test_auto_trains_on_one_device_without_several_accelerators() -> None:
    if len(backend.accelerators()) > 1:
        pytest.skip("this machine has several accelerators")
    assert distribution.choose("auto", 32) == ONE_DEVICE
    model = seeded_model(f1_recipe(budgets={}), (16, 16, 1), 4, 3)
    assert distribution.of(model) == ONE_DEVICE  # every existing CPU result trains as before


def test_auto_uses_as_many_accelerators_as_divide_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "accelerators", lambda: ["gpu:0", "gpu:1", "gpu:2"])
    assert distribution.choose("auto", 48).devices == ("gpu:0", "gpu:1", "gpu:2")
    assert distribution.choose("auto", 32).devices == ("gpu:0", "gpu:1")
    assert distribution.choose("auto", 35) == ONE_DEVICE  # neither 2 nor 3 divides it
    assert distribution.choose("none", 48) == ONE_DEVICE
    assert distribution.logged("auto", 32) == {"distribution_used": "data_parallel", "distribution_replicas": 2}


def test_data_parallel_takes_the_cpu_devices_where_there_is_no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "accelerators", lambda: [])
    monkeypatch.setattr(backend, "cpu_devices", lambda: ["cpu:0", "cpu:1"])
    assert distribution.choose("auto", 32) == ONE_DEVICE
    assert distribution.choose("data_parallel", 32).replicas == 2
    with pytest.raises(DistributionError, match=r"batch_size 33 does not divide by 2.*multiple of 2"):
        distribution.choose("data_parallel", 33)


def test_data_parallel_is_refused_under_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "name", lambda: "torch")
    monkeypatch.setattr(backend, "accelerators", lambda: ["gpu:0", "gpu:1"])
    assert distribution.choose("auto", 32) == ONE_DEVICE
    with pytest.raises(DistributionError, match="KERAS_BACKEND=jax or tensorflow"):
        distribution.choose("data_parallel", 32)


def test_jax_leaves_out_the_rows_that_would_split_unevenly(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = np.arange(10) * 10, np.arange(10)
    monkeypatch.setattr(backend, "name", lambda: "jax")
    kept_x, kept_y = distribution.divisible(x, y, 4, seed=1)
    assert len(kept_x) == 8 and set(kept_y) < set(y)
    np.testing.assert_array_equal(kept_x, kept_y * 10)  # images and labels stay paired, in their order
    np.testing.assert_array_equal(distribution.divisible(x, y, 4, seed=1)[1], kept_y)  # seeded
    assert len(distribution.divisible(x, y, 5, seed=1)[0]) == 10
    monkeypatch.setattr(backend, "name", lambda: "tensorflow")  # splits an uneven batch itself
    assert len(distribution.divisible(x, y, 4, seed=1)[0]) == 10


def test_recipe_and_budget_set_the_distribution() -> None:
    base = Experiment(dataset="fashion_mnist", model="F1")
    assert (base.distribution, base.distribution_scale_lr) == ("auto", False)
    changed = {"full": {"distribution": "data_parallel", "distribution_scale_lr": True}}
    full = Experiment(dataset="fashion_mnist", model="F1", budgets=changed).recipe("full")
    assert (full.distribution, full.distribution_scale_lr) == ("data_parallel", True)
    with pytest.raises(ValidationError, match="distribution"):
        Experiment(dataset="fashion_mnist", model="F1", distribution="mirrored")


def test_learning_rate_scales_with_the_replicas_only_when_asked() -> None:
    assert learning_rate(f1_recipe(budgets={}), None, replicas=4) == pytest.approx(1e-3)
    assert learning_rate(f1_recipe(budgets={}, distribution_scale_lr=True), None, replicas=4) == pytest.approx(4e-3)
    cosine = {"name": "adam", "learning_rate": 1e-3, "schedule": "cosine", "warmup_epochs": 1}
    schedule = learning_rate(f1_recipe(budgets={}, optimizer=cosine, distribution_scale_lr=True), 10, replicas=2)
    assert schedule.warmup_target == pytest.approx(2e-3)


# One training on one device, then the same on two: same seed, data and global batch. Prints one JSON line.
TWO_DEVICES = """
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
if os.environ["KERAS_BACKEND"] == "tensorflow":  # two logical CPUs, before TensorFlow starts
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
import keras
import numpy as np
from helpers.training import f1_recipe
from cnnlab.training import distribution
from cnnlab.training.fit import compile_model, fit, seeded_model

rng = np.random.default_rng(0)

def images(n):  # noise with one bright quarter, the class's: learnt in a few steps, so scores are not near ties
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 40, (n, 16, 16, 1))
    for c in range(4):
        x[y == c, 8 * (c // 2):8 * (c // 2) + 8, 8 * (c % 2):8 * (c % 2) + 8] += 150
    return x.astype("uint8"), y

def placed_on(model):  # how many devices hold the first weight
    if keras.backend.backend() == "jax":
        return len(model.trainable_variables[0].value.sharding.device_set)
    return model.distribute_strategy.num_replicas_in_sync

def leaked():
    if keras.backend.backend() == "jax":
        return keras.distribution.distribution() is not None
    return tf.distribute.has_strategy()

images_count, batch, epochs = (int(arg) for arg in sys.argv[2:5])
train, val = images(images_count), images(64)
out = {}
# SGD: Adam's first steps move each weight by about its learning rate whatever its gradient's size, so the
# rounding of near-zero gradients (summed in another order on two devices) would decide their direction.
sgd = {"name": "sgd", "learning_rate": 0.05}
for setting in ("none", "data_parallel"):
    recipe = f1_recipe(epochs=epochs, budgets={}, batch_size=batch, steps_per_execution=2, distribution=setting,
                       optimizer=sgd)
    result = fit(seeded_model(recipe, (16, 16, 1), 4, 3), recipe, train, val, 4, seed=3, verbose=0)
    out[setting] = {
        "history": result.history,
        "distribution": result.distribution,
        "placed_on": placed_on(result.model),
        "train_function": getattr(result.model.train_function, "__qualname__", ""),
        "steps_per_execution": result.model.steps_per_execution,
        "predicted": result.model.predict(val[0][:16], verbose=0).tolist(),
        "leaked": leaked(),
    }
    if setting == "data_parallel":
        path = os.path.join(tempfile.mkdtemp(), "model.keras")
        result.model.save(path)
        out["loaded"] = keras.models.load_model(path).predict(val[0][:16], verbose=0).tolist()
uneven = f1_recipe(epochs=1, budgets={}, batch_size=32, distribution="data_parallel")
out["uneven_train_samples"] = fit(seeded_model(uneven, (16, 16, 1), 4, 3), uneven, images(255), images(63), 4,
                                  seed=3, verbose=0).train_samples
scaled = f1_recipe(budgets={}, distribution="data_parallel", distribution_scale_lr=True)
compiled = compile_model(seeded_model(scaled, (16, 16, 1), 4, 3), scaled, 4)
out["scaled_lr"] = float(compiled.optimizer.learning_rate.numpy())
print(json.dumps(out))
"""


def two_device_run(keras_backend: str, images: int, batch: int, epochs: int) -> dict:
    env = {**os.environ, "KERAS_BACKEND": keras_backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if keras_backend == "jax":
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TWO_DEVICES), str(ROOT / "tests"), str(images), str(batch), str(epochs)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def check_two_devices(out: dict, uneven_train_samples: int) -> None:
    one, two = out["none"], out["data_parallel"]
    assert one["distribution"] == {"distribution_used": "none", "distribution_replicas": 1}
    assert two["distribution"] == {"distribution_used": "data_parallel", "distribution_replicas": 2}
    assert (one["placed_on"], two["placed_on"]) == (1, 2)  # the weights really live on both devices
    assert not one["leaked"] and not two["leaked"]  # the distribution ends with its training
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(two["history"][name], one["history"][name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert one["history"]["loss"][-1] < one["history"]["loss"][0]  # it did learn: the match is not trivial
    np.testing.assert_allclose(two["predicted"], one["predicted"], atol=1e-4)
    np.testing.assert_allclose(out["loaded"], two["predicted"], atol=1e-6)  # saved, loaded: predicts the same
    assert out["uneven_train_samples"] == uneven_train_samples
    assert out["scaled_lr"] == pytest.approx(2e-3)


@pytest.mark.slow
def test_two_jax_devices_train_as_one() -> None:
    out = two_device_run("jax", images=256, batch=32, epochs=2)
    # steps_per_execution 2: one device scans the grouped steps; two use Keras' own loop (scan_steps.py)
    assert out["none"]["train_function"].startswith("scanned_train_function")
    assert not out["data_parallel"]["train_function"].startswith("scanned_train_function")
    assert out["data_parallel"]["steps_per_execution"] == 2
    check_two_devices(out, uneven_train_samples=254)  # an odd image left out: every batch splits in two


@pytest.mark.slow
def test_two_tensorflow_devices_train_as_one() -> None:
    # One batch per epoch: under a strategy Keras' fit draws a batch from a fresh iterator before the first
    # epoch, which moves the seeded reshuffle on by one epoch (the epoch orders differ from one device's).
    out = two_device_run("tensorflow", images=64, batch=64, epochs=4)
    assert out["data_parallel"]["steps_per_execution"] == 1  # grouped steps fail in MirroredStrategy
    check_two_devices(out, uneven_train_samples=255)  # TensorFlow splits 31 as 16 + 15
