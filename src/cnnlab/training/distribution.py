"""One training on several devices of this machine: a recipe's `distribution`.

`data_parallel` keeps a replica of the model on every device and splits each step's batch (the recipe's
`batch_size`, the global batch) evenly among them, with Keras' own engines: `keras.distribution.DataParallel`
under JAX, `tf.distribute.MirroredStrategy` under TensorFlow (backend.data_parallel). The model is built,
compiled and fitted inside the engine's scope, and only there: `build` remembers which plan a model was built
under, and `fit` and `compile_model` re-enter that scope, so the distribution never leaks into another training
in the same process. A model built any other way (a transfer model around a pretrained backbone) trains on one
device.

Under JAX an array's sharded axis must divide among the devices, so every batch must: `divisible` leaves out
the few rows (fewer than the replicas) that would make an epoch's last batch uneven, and grouped steps run in
Keras' own loop, not scan_steps.py's scan. TensorFlow splits an uneven batch itself, but runs one step per call
(`steps_per_execution`), and its epoch orders are one reshuffle on from one device's: under a strategy Keras'
`fit` draws a batch from a fresh iterator of the training data before the first epoch.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from cnnlab.params.recipe import Distribution
from cnnlab.training import backend
from cnnlab.util.errors import UserError

log = logging.getLogger(__name__)

DISTRIBUTED_BACKENDS = ("jax", "tensorflow")


class DistributionError(UserError, ValueError):
    """A recipe's `distribution` cannot run on this machine or backend."""


@dataclass(frozen=True)
class Plan:
    """How one training uses the devices: `name` "none" (one device) or "data_parallel" over `devices`."""

    name: str = "none"
    devices: tuple[str, ...] = ()
    engine: Any = field(default=None, compare=False, repr=False)  # the backend's, made by `start`

    @property
    def replicas(self) -> int:
        return len(self.devices) if self.name == "data_parallel" else 1

    def logged(self) -> dict[str, str | int]:
        """What a run records beside the recipe's own `distribution` (which may say "auto")."""
        return {"distribution_used": self.name, "distribution_replicas": self.replicas}

    def start(self) -> Plan:
        """This plan with its backend engine, ready to `scope`."""
        if self.name == "none" or self.engine is not None:
            return self
        return Plan(self.name, self.devices, backend.data_parallel(list(self.devices)))

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Inside: variables, compiled steps and batches are laid out over the plan's devices."""
        if self.engine is None:
            yield
            return
        with self.engine.scope():
            yield


ONE_DEVICE = Plan()


def choose(setting: Distribution, batch_size: int) -> Plan:
    """The plan `setting` makes on this machine for a global batch of `batch_size` (no engine started yet).

    "auto": data-parallel over the visible GPUs or TPUs when there are two or more, as many of them as divide
    `batch_size`; one device otherwise (every CPU run). "data_parallel": over all accelerators, or over all
    CPU devices where there are none (one replica on a plain CPU).
    """
    if setting == "none":
        return ONE_DEVICE
    supported = backend.name() in DISTRIBUTED_BACKENDS
    found = backend.accelerators()
    if setting == "auto":
        if not supported or len(found) < 2:
            return ONE_DEVICE
        count = max(n for n in range(1, len(found) + 1) if batch_size % n == 0)
        if count < len(found):
            log.warning("distribution auto: %d of %d accelerators, the most that divide batch_size %d",
                        count, len(found), batch_size)  # fmt: skip
        return Plan("data_parallel", tuple(found[:count])) if count > 1 else ONE_DEVICE
    if not supported:
        raise DistributionError(
            f"distribution: data_parallel runs under the JAX and TensorFlow backends, not {backend.name()}; "
            "set KERAS_BACKEND=jax or tensorflow, or distribution: none"
        )
    devices = found or backend.cpu_devices()
    if batch_size % len(devices):
        raise DistributionError(
            f"distribution: data_parallel splits each batch among {len(devices)} devices, but batch_size "
            f"{batch_size} does not divide by {len(devices)}; make batch_size a multiple of {len(devices)}, "
            "or use distribution: auto (as many devices as divide it)"
        )
    return Plan("data_parallel", tuple(devices))


def logged(setting: Distribution, batch_size: int) -> dict[str, str | int]:
    """What a training of a recipe with this `distribution` and `batch_size` will record (`Plan.logged`), known
    before it starts."""
    return choose(setting, batch_size).logged()


# The plan each model was built under; weak keys: a plan lives exactly as long as its model.
_BUILT: weakref.WeakKeyDictionary[keras.Model, Plan] = weakref.WeakKeyDictionary()


def build(setting: Distribution, batch_size: int, make: Callable[[], keras.Model]) -> keras.Model:
    """`make()`'s model, built inside the scope of the plan `setting` makes (remembered for `of`)."""
    plan = choose(setting, batch_size).start()
    with plan.scope():
        model = make()
    if plan.replicas > 1:
        log.info("data-parallel training on %d devices: %s", plan.replicas, ", ".join(plan.devices))
    _BUILT[model] = plan
    return model


def of(model: keras.Model) -> Plan:
    """The plan `model` was built under: one device for a model `build` did not make."""
    return _BUILT.get(model, ONE_DEVICE)


def check_batch(plan: Plan, batch_size: int) -> None:
    """A later phase's recipe (fine-tuning) must still split its batch evenly among the model's replicas."""
    if batch_size % plan.replicas:
        raise DistributionError(
            f"batch_size {batch_size} does not divide among the model's {plan.replicas} replicas; "
            f"make it a multiple of {plan.replicas}"
        )


def steps_per_execution(plan: Plan, steps: int) -> int:
    """`steps` training steps per compiled call, or one under a TensorFlow strategy of several replicas: Keras'
    grouped-steps loop fails inside MirroredStrategy ("You must feed a value for placeholder tensor",
    keras-team/keras#19246)."""
    return 1 if plan.replicas > 1 and backend.name() == "tensorflow" else steps


def divisible(x: np.ndarray, y: np.ndarray, replicas: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`x`, `y` less `len(x) % replicas` rows (picked with `seed`) where the backend needs every batch to split
    evenly among the replicas (JAX); as they are elsewhere. With a `batch_size` that divides among the
    replicas, an epoch's last, smaller batch then does too."""
    extra = len(x) % replicas
    if not extra or backend.name() != "jax":
        return x, y
    keep = np.sort(np.random.default_rng(seed).permutation(len(x))[extra:])
    log.warning("data parallel under JAX: %d of %d images left out so every batch splits among %d devices",
                extra, len(x), replicas)  # fmt: skip
    return x[keep], y[keep]
