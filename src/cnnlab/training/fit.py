"""Compile and fit a model on prepared arrays with the recipe of an experiment."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cnnlab.catalog.networks import adapt_normalization, build_model
from cnnlab.data.splits import Arrays
from cnnlab.params import Experiment
from cnnlab.training import backend, distribution, precision
from cnnlab.training.augment import AugmentedTraining, build_augmenter
from cnnlab.training.labels import encode_labels
from cnnlab.util.signals import raise_if_stop_requested, stops_at_safe_points

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]]
    seconds: float
    train_samples: int
    kept_epoch: int  # 0-based epoch whose weights the model holds (the best one when a callback restored it)
    distribution: dict[str, str | int] = field(default_factory=distribution.ONE_DEVICE.logged)  # Plan.logged

    @property
    def epochs_run(self) -> int:
        return len(next(iter(self.history.values()), []))

    def at_kept_epoch(self) -> dict[str, float]:
        """The history's metrics at the epoch whose weights were kept."""
        return {name: values[self.kept_epoch] for name, values in self.history.items()}


def progress_verbosity() -> int:
    """Keras' `verbose` for this process's standard output: 1 (a progress bar redrawn in place) on a terminal, 2
    (one line per epoch) in a log file or pipe, where a redrawn bar would leave thousands of lines. Keras' own
    "auto" means 1 everywhere."""
    stream = sys.stdout
    return 1 if stream is not None and stream.isatty() else 2


def best_epoch(values: list[float], monitor: str) -> int:
    """Index of the best value, with Keras' 'auto' mode: accuracies are maximised, everything else minimised."""
    scores = np.asarray(values)
    return int(scores.argmax() if "acc" in monitor else scores.argmin())


def kept_epoch(history: dict[str, list[float]], recipe: Experiment) -> int:
    """Which epoch's weights the trained model holds after the recipe's callbacks have run."""
    last = len(next(iter(history.values()))) - 1
    if recipe.callbacks.checkpoint_best and recipe.callbacks.checkpoint_monitor in history:
        return best_epoch(history[recipe.callbacks.checkpoint_monitor], recipe.callbacks.checkpoint_monitor)
    stop = recipe.callbacks.early_stopping
    if stop is not None and stop.restore_best_weights and stop.monitor in history:
        return best_epoch(history[stop.monitor], stop.monitor)
    return last


def seeded_model(recipe: Experiment, input_shape: tuple[int, ...], num_classes: int, seed: int) -> keras.Model:
    """Build the recipe's model, in its precision's dtype policy and within its distribution (distribution.py),
    after seeding, so equal seeds give equal initial weights."""
    backend.seed_everything(seed)

    def make() -> keras.Model:
        with precision.dtype_policy(precision.policy_name(recipe.precision)):
            return build_model(recipe.model, input_shape, num_classes, **recipe.model_options)

    return distribution.build(recipe.distribution, recipe.batch_size, make)


def learning_rate(
    recipe: Experiment, steps_per_epoch: int | None, replicas: int = 1
) -> float | keras.optimizers.schedules.CosineDecay:
    """The recipe's learning rate, or its schedule over the recipe's epochs (which needs the steps per epoch);
    times `replicas` with `distribution_scale_lr`."""
    settings = recipe.optimizer
    rate = settings.learning_rate * (replicas if recipe.distribution_scale_lr else 1)
    if settings.schedule == "constant":
        return rate
    if steps_per_epoch is None:
        raise ValueError(f"a {settings.schedule} learning-rate schedule needs the number of steps per epoch")
    warmup = round(settings.warmup_epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else rate,
        decay_steps=max(1, recipe.epochs * steps_per_epoch - warmup),
        warmup_target=rate if warmup else None,
        warmup_steps=warmup,
    )


def compile_model(
    model: keras.Model,
    recipe: Experiment,
    num_classes: int,
    steps_per_epoch: int | None = None,
    optimizer: keras.optimizers.Optimizer | None = None,
) -> keras.Model:
    """Compile with the recipe's optimizer (or `optimizer`), loss and steps per execution, within the
    distribution `model` was built under; a learning-rate schedule needs `steps_per_epoch`."""
    plan = distribution.of(model)
    with plan.scope():
        if optimizer is None:
            optimizer_class = type(keras.optimizers.get(recipe.optimizer.name))
            optimizer = optimizer_class(learning_rate=learning_rate(recipe, steps_per_epoch, plan.replicas))
        steps = distribution.steps_per_execution(plan, backend.steps_per_execution(recipe.steps_per_execution))
        model.compile(
            optimizer=optimizer, loss=recipe.loss_for(num_classes), metrics=["accuracy"], steps_per_execution=steps
        )
        backend.compile_steps(model, steps)  # under a JAX distribution, Keras' own loop (scan_steps.py)
    return model


def trainer(model: keras.Model, recipe: Experiment, num_classes: int, seed: int) -> keras.Model:
    """What `fit` trains: the compiled `model` itself, or, for an augmented recipe, `model` behind its random
    transform (augment.py), compiled with the model's own optimizer so the model keeps the trained state."""
    augmenter = build_augmenter(recipe.augmentation, seed)
    if augmenter is None:
        return model
    wrapped = AugmentedTraining(model, augmenter)
    return compile_model(wrapped, recipe, num_classes, optimizer=model.optimizer)


def training_inputs(x: np.ndarray, y: np.ndarray, recipe: Experiment, seed: int) -> dict[str, Any]:
    """The `fit` arguments that feed training batches: the arrays, in a new seeded order every epoch
    (augmentation happens in the compiled step, see `trainer`)."""
    return backend.epoch_shuffled(x, y, recipe.batch_size, seed)


class StopOnSignal(keras.callbacks.Callback):
    """Stops training (or its validation) at the next batch after a stop signal, even one Python swallowed
    or one `stops_at_safe_points` held back.

    Batch-begin hooks: Keras keeps dispatching batch-end logs asynchronously.
    """

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        raise_if_stop_requested()

    def on_test_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        raise_if_stop_requested()


def _callbacks(recipe: Experiment, checkpoint: Path) -> list[keras.callbacks.Callback]:
    found: list[keras.callbacks.Callback] = [StopOnSignal()]
    stop = recipe.callbacks.early_stopping
    if stop is not None:
        found.append(
            keras.callbacks.EarlyStopping(
                monitor=stop.monitor, patience=stop.patience, restore_best_weights=stop.restore_best_weights, verbose=1
            )
        )
    if recipe.callbacks.checkpoint_best:
        found.append(
            keras.callbacks.ModelCheckpoint(
                checkpoint, monitor=recipe.callbacks.checkpoint_monitor, save_best_only=True, save_weights_only=True
            )
        )
    return found


def fit(
    model: keras.Model,
    recipe: Experiment,
    train: Arrays,
    validation: Arrays | None,
    num_classes: int,
    seed: int,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int | None = None,
    initial_epoch: int = 0,
) -> TrainResult:
    """Train `model` (compiled here) and return it with its history (validation metrics only with `validation`).

    `initial_epoch` numbers the epochs on from an earlier phase (fine-tuning after the head was trained).
    `verbose`: Keras' verbosity; None picks it for where the output goes (`progress_verbosity`).

    With `checkpoint_best` the weights of the best validation epoch are restored
    at the end, as the seeds' ModelCheckpoint(save_best_only=True) reload does.
    """
    seed += initial_epoch  # a second phase draws its own epoch orders and dropout masks, not the first phase's again
    backend.seed_everything(seed)
    plan = distribution.of(model)
    distribution.check_batch(plan, recipe.batch_size)
    if recipe.distribution == "data_parallel" and plan.name == "none":
        log.warning("distribution data_parallel: this model trains on one device (only zoo models are distributed)")
    x_train, y_train = distribution.divisible(*train, plan.replicas, seed)
    with plan.scope():  # mirrored variables are updated within their strategy
        adapt_normalization(model, x_train)
    compile_model(model, recipe, num_classes, steps_per_epoch=-(-len(x_train) // recipe.batch_size))
    y_train = encode_labels(y_train, recipe.loss_for(num_classes), num_classes)
    validation_data = None  # a final model trained on all the training data has none
    if validation is not None:
        x_val, y_val = distribution.divisible(*validation, plan.replicas, seed)
        y_val = encode_labels(y_val, recipe.loss_for(num_classes), num_classes)
        validation_data = backend.held_out_batches(x_val, y_val)
    with tempfile.TemporaryDirectory(prefix="cnnlab-ckpt-") as tmp, plan.scope():
        checkpoint = Path(tmp) / "best.weights.h5"
        started = time.perf_counter()
        trained = trainer(model, recipe, num_classes, seed)
        backend.build_training_state(trained, x_train, y_train)
        with stops_at_safe_points():
            history = trained.fit(
                **training_inputs(x_train, y_train, recipe, seed),
                validation_data=validation_data,
                epochs=initial_epoch + recipe.epochs,
                initial_epoch=initial_epoch,
                callbacks=_callbacks(recipe, checkpoint) + (extra_callbacks or []),
                verbose=progress_verbosity() if verbose is None else verbose,
            )
        seconds = time.perf_counter() - started
        if checkpoint.exists():
            model.load_weights(checkpoint)
    metrics = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    return TrainResult(model, metrics, seconds, len(x_train), kept_epoch(metrics, recipe), plan.logged())


def train_fold(
    recipe: Experiment,
    train: Arrays,
    val: Arrays,
    classes: int,
    seed: int,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int | None = None,
) -> tuple[dict[str, float], int, float]:
    """Fit a fresh model on a fold's training part only; its kept epoch is scored on the held-out part."""
    model = seeded_model(recipe, train[0].shape[1:], classes, seed)
    result = fit(model, recipe, train, val, classes, seed, callbacks, verbose=verbose)
    return result.at_kept_epoch(), result.epochs_run, result.seconds
