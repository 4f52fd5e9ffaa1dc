"""The search space of params.yaml declared as Keras Tuner hyperparameters, and a trial's values as a recipe.

A trial's recipe is an ordinary `Experiment` (model `CNN`), so trials, the retrained best model and any
experiment train through the same code.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras_tuner as kt

from cnnlab.params import DIMENSIONS, Augmentation, Dimension, Experiment, Optimizer, Range, Tune


def value_type(name: str) -> type:
    """The type of a hyperparameter's values, by its dimension (filters_2 is a `filters` dimension)."""
    return DIMENSIONS["filters" if name.startswith("filters_") else name][0]


def declare(hp: kt.HyperParameters, name: str, dimension: Dimension) -> Any:
    """Register `name` as a Choice (a list), an Int or Float (a range) or a Fixed value; return its value
    (None inside a conditional scope whose condition the trial does not meet)."""
    kind = value_type(name)
    if isinstance(dimension, Range) and kind is int:
        step = int(dimension.step) if dimension.step else 1
        value = hp.Int(name, int(dimension.min), int(dimension.max), step=step, sampling=dimension.sampling)
    elif isinstance(dimension, Range):
        value = hp.Float(name, dimension.min, dimension.max, step=dimension.step, sampling=dimension.sampling)
    elif isinstance(dimension, list) and len(dimension) > 1:
        value = hp.Choice(name, [kind(v) for v in dimension])
    else:
        value = hp.Fixed(name, kind(dimension[0] if isinstance(dimension, list) else dimension))
    return None if value is None else kind(value)  # Keras Tuner hands booleans back as 0 / 1


def block_counts(dimension: Dimension) -> list[int]:
    """Every number of conv blocks the space allows."""
    if isinstance(dimension, Range):
        return list(range(int(dimension.min), int(dimension.max) + 1, int(dimension.step or 1)))
    return sorted(int(v) for v in (dimension if isinstance(dimension, list) else [dimension]))


def trial_recipe(hp: kt.HyperParameters, search: Tune) -> Experiment:
    """Declare the space in `hp` and return the recipe of the values it holds (a trial's, or the defaults)."""
    space = search.space
    blocks = declare(hp, "conv_blocks", space.conv_blocks)
    counts = block_counts(space.conv_blocks)
    filters = []
    for block in range(1, max(counts) + 1):
        # filters_3 only exists in trials with 3 blocks or more
        scope = hp.conditional_scope("conv_blocks", [n for n in counts if n >= block]) if block > min(counts) else None
        with scope if scope is not None else contextlib.nullcontext():
            width = declare(hp, f"filters_{block}", space.filters)
        if block <= blocks:
            filters.append(width)
    options = {
        "filters": filters,
        **{name: declare(hp, name, getattr(space, name))
           for name in ("kernel_size", "convs_per_block", "dense_units", "dropout", "l2", "batchnorm")},
    }  # fmt: skip
    strength = declare(hp, "augmentation", space.augmentation)
    optimizer = Optimizer(
        name=declare(hp, "optimizer", space.optimizer), learning_rate=declare(hp, "learning_rate", space.learning_rate)
    )
    return Experiment(
        description=f"the best CNN of a {search.tuner} search",
        dataset=search.dataset,
        model="CNN",
        model_options=options,
        validation=search.validation,
        optimizer=optimizer,
        batch_size=search.batch_size,
        epochs=search.max_epochs,
        augmentation=augmentation(strength, search.horizontal_flip),
    )


def augmentation(strength: float, horizontal_flip: bool) -> Augmentation:
    """Shifts and zoom of up to `strength`, rotation of up to 100 * `strength` degrees; none at 0."""
    if not strength:
        return Augmentation()
    return Augmentation(
        rotation_range=round(100 * strength, 6),
        width_shift_range=strength,
        height_shift_range=strength,
        zoom_range=strength,
        horizontal_flip=horizontal_flip,
    )
