"""Train one model and save what the train stage promises: the model, its card and summary, metrics,
history and curves, all written atomically and logged to the stage's MLflow run (experiments and the best
model of a search alike)."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import keras
import mlflow

from cnnlab.data.prepare import read_meta, training_splits
from cnnlab.data.splits import Arrays, subsample
from cnnlab.nets.predict import model_card_path
from cnnlab.params import Experiment, Params
from cnnlab.pipeline import stage
from cnnlab.plots.curves import training_curves
from cnnlab.tracking.cards import ModelCard
from cnnlab.tracking.epochs import EpochsToMlflow
from cnnlab.tracking.inputs import TRAINING, VALIDATION, log_prepared_inputs
from cnnlab.tracking.runs import log_keras_model
from cnnlab.tracking.system import system_metrics
from cnnlab.training import backend, distribution
from cnnlab.training.fit import TrainResult, fit, seeded_model
from cnnlab.training.precision import float32_copy, policy_name
from cnnlab.util.files import staged_outputs, write_json, write_text, write_with

log = logging.getLogger("cnnlab.train")
Trainer = Callable[[list[keras.callbacks.Callback]], TrainResult]


def summary_text(model: keras.Model) -> str:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    return buffer.getvalue()


def history_csv(history: dict[str, list[float]]) -> str:
    keys = list(history)
    rows = [",".join(["epoch", *keys])]
    rows += [",".join([str(i + 1), *(f"{history[k][i]:.6f}" for k in keys)]) for i in range(len(history[keys[0]]))]
    return "\n".join(rows) + "\n"


def architecture_diagram(model: keras.Model, path: Path) -> list[Path]:
    """`plot_model(show_shapes=True)` as a PNG; none (with a warning) where Graphviz is not installed."""
    try:
        keras.utils.plot_model(model, to_file=str(path), show_shapes=True, show_layer_names=True)
    except (ImportError, OSError) as exc:
        log.warning("no model diagram: %s (install Graphviz: apt-get install graphviz)", exc)
        return []
    return [path] if path.is_file() else []


def summary_metrics(result: TrainResult) -> dict[str, float | int]:
    """The numbers of the epoch whose weights were saved (the best one when a callback restored it)."""
    kept = result.at_kept_epoch()
    return {
        "train_accuracy": kept["accuracy"],
        "train_loss": kept["loss"],
        **(validation_metrics(result) if "val_accuracy" in kept else {}),  # none for a model trained on all data
        "kept_epoch": result.kept_epoch + 1,
        "epochs_run": result.epochs_run,
        "train_samples": result.train_samples,
        "train_seconds": round(result.seconds, 2),
        "params": result.model.count_params(),
    }


def validation_metrics(result: TrainResult) -> dict[str, float]:
    kept = result.at_kept_epoch()
    return {
        "val_accuracy": kept["val_accuracy"],
        "val_loss": kept["val_loss"],
        "best_val_accuracy": max(result.history["val_accuracy"]),
    }


def describe_run(exp_id: str, meta: dict, budget: str) -> dict[str, str]:
    """What the report needs besides the scores: which data (and from which source), budget and hardware."""
    return {
        "experiment": exp_id,
        "dataset": meta["dataset"],
        "data_format": meta["source"]["format"],
        "budget": budget,
        "device": backend.device(),
    }


def experiment_data(params: Params, paths: stage.Paths, exp_id: str) -> tuple[Arrays, Arrays | None, dict]:
    """The train stage's arrays for an experiment on its budget: (train, validation, meta of the data set).

    Its own seeded validation split (or the test set, or the shipped one), then a stratified subsample of the
    training images where the budget limits them.
    """
    recipe = params.recipe(exp_id)
    prepared = paths.prepared(recipe.dataset)
    meta = read_meta(prepared)
    (x_train, y_train), validation = training_splits(prepared, recipe.validation, params.seed, recipe.stratify)
    return subsample(x_train, y_train, params.target(exp_id).train_samples, params.seed), validation, meta


def train_and_save(
    params: Params,
    paths: stage.Paths,
    target: str,
    recipe: Experiment,
    train: Arrays,
    validation: Arrays | None,
    meta: dict,
    budget: str,
    stage_name: str = "train",
    trainer: Trainer | None = None,
) -> dict[str, float | int]:
    """Fit `recipe` on `train` (scored each epoch on `validation`, if any) and save it as models/<target>.keras.

    `trainer` trains a model that is not the recipe's zoo model (a pretrained backbone with a new head); it gets
    the callbacks that log to MLflow.
    """
    classes = meta["classes"]
    x_train = train[0]
    if trainer is None:
        model = seeded_model(recipe, x_train.shape[1:], len(classes), params.seed)

        def trainer(callbacks: list[keras.callbacks.Callback]) -> TrainResult:
            return fit(model, recipe, train, validation, len(classes), params.seed, callbacks)

    log.info(
        "%s: %s on %s, %d train / %s validation images, %d epochs, budget %s",
        *(target, recipe.model_label, recipe.dataset, len(x_train), len(validation[1]) if validation else "no"),
        *(recipe.epochs, budget),
    )
    # What `precision: auto` trains in on this machine, beside the recipe's own keys
    facts = {**describe_run(target, meta, budget), "compute_dtype": policy_name(recipe.precision)}
    logged = {"experiment": target, "budget": budget, "seed": params.seed, **recipe.model_dump(mode="json"),
              "compute_dtype": facts["compute_dtype"],
              **distribution.logged(recipe.distribution, recipe.batch_size)}  # fmt: skip
    data_hash = paths.data_hash(recipe.dataset)
    with (
        stage.mlflow_run(stage_name, target, params, paths, data_hash, logged),
        staged_outputs(paths.root) as out,
    ):
        contexts = [TRAINING, VALIDATION] if validation is not None else [TRAINING]
        log_prepared_inputs(meta, data_hash, paths.prepared(recipe.dataset), contexts)
        with system_metrics():
            result = trainer([EpochsToMlflow()])
        model = float32_copy(result.model)  # what is saved, logged and evaluated never depends on the trainer's machine
        metrics = summary_metrics(result)
        mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items()})
        model_path = paths.model(target)
        write_with(out.path(model_path), model.save)
        title = f"{target} ({recipe.model_label} on {recipe.dataset})"
        card = {"experiment": target, "dataset": recipe.dataset, "classes": classes,
                "input_shape": list(x_train.shape[1:])}  # fmt: skip
        artifacts = [
            write_json(out.path(model_card_path(model_path)), card),
            write_text(out.path(model_path.with_suffix(".summary.txt")), summary_text(model)),
            training_curves(result.history, title, out.path(paths.plots(target) / "training_curves.png")),
            write_text(out.path(paths.plots(target) / "history.csv"), history_csv(result.history)),
            write_json(out.path(paths.metrics(target) / "train.json"), {**facts, **metrics}),
        ]
        diagram = architecture_diagram(model, out.folder / "model.png")
        for artifact in [*artifacts, *diagram]:
            mlflow.log_artifact(str(artifact))
        if params.mlflow.log_model:
            shown = ModelCard(classes, tuple(x_train.shape[1:]), recipe.dataset)  # what `models:/...` users get
            log_keras_model(model, x_train[:4], metadata=shown.metadata())
    score = f"val accuracy {metrics['val_accuracy']:.4f}" if "val_accuracy" in metrics else "no validation split"
    log.info("%s: %s (epoch %d of %d, %.1f s)", target, score, metrics["kept_epoch"], result.epochs_run, result.seconds)
    return metrics


def run(params: Params, paths: stage.Paths, exp_id: str) -> None:
    """The train stage: fit experiment `exp_id` and save the model, its history and curves."""
    train, validation, meta = experiment_data(params, paths, exp_id)
    train_and_save(params, paths, exp_id, params.recipe(exp_id), train, validation, meta, params.target(exp_id).budget)
