"""Under JAX, `steps_per_execution` steps as one compiled program (`jax.lax.scan`), for Keras' own `fit`.

Keras' JAX trainer runs `steps_per_execution` steps as a Python loop of single compiled steps: every step
pays a dispatch and its state round trip, which dominates small networks on a GPU (the seed models spend
far less time computing a batch than launching it). Here the group of batches is stacked and all its steps
run inside one XLA program; Keras' loop, callbacks, validation and history are untouched, and each step is
Keras' own `train_step`, so the arithmetic is the same as `fit`'s.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import keras

State = tuple[Any, ...]


def scanned_train_function(model: keras.Model, steps: int) -> Callable[[State, Iterator[Any]], tuple[dict, State]]:
    """A `train_function` for `model` (compiled with `steps_per_execution=steps`) that scans each group."""

    def run_steps(state: State, batches: Any) -> tuple[dict, State]:
        def one_step(carried: State, batch: Any) -> tuple[State, dict]:
            logs, carried = model.train_step(carried, batch)
            return carried, logs

        # Unrolled: a rolled scan (an XLA while loop) ran the seed models 6x slower on a CPU than single steps.
        state, logs = jax.lax.scan(one_step, state, batches, unroll=True)
        return jax.tree.map(lambda values: values[-1], logs), state  # metrics accumulate: the last are the group's

    compiled = jax.jit(run_steps, donate_argnums=0)

    def train_function(state: State, iterator: Iterator[Any]) -> tuple[dict, State]:
        batches = list(itertools.islice(iterator, steps))
        logs: dict = {}
        # A group holds equal batches except an epoch's last, smaller one: each shape is one scan (and one compile).
        for _, same in itertools.groupby(batches, key=lambda batch: jax.tree.map(jnp.shape, batch)):
            stacked = jax.tree.map(lambda *arrays: jnp.stack(arrays), *same)
            logs, state = compiled(state, stacked)
        return logs, state

    return train_function


def use_scanned_steps(model: keras.Model, steps: int) -> None:
    """Make the compiled `model`'s next `fit` scan its steps (JAX backend; a no-op for one step at a time)."""
    # Keras' own loop stays where data and state are sharded over several devices (a keras.distribution).
    if (
        steps > 1
        and keras.backend.backend() == "jax"
        and not model.run_eagerly
        and not keras.distribution.distribution()
    ):
        model.train_function = scanned_train_function(model, steps)
