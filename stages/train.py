# ruff: noqa: I001  (cnnlab is imported first: it quiets TensorFlow before TensorFlow loads)
"""train stage: fit one experiment of the registry and save the model, its history and curves."""

from __future__ import annotations

import cnnlab  # noqa: F401

import io
import logging
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.models import infer_signature

from cnnlab import backend, stage
from cnnlab.config import Params
from cnnlab.files import staged_outputs, write_json, write_text, write_with
from cnnlab.plots import training_curves
from cnnlab.predict import model_card_path
from cnnlab.prepare import read_meta, training_splits
from cnnlab.splits import stratified_subsample
from cnnlab.training import TrainResult, fit, seeded_model

log = logging.getLogger("cnnlab.train")


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
        "val_accuracy": kept["val_accuracy"],
        "val_loss": kept["val_loss"],
        "best_val_accuracy": max(result.history["val_accuracy"]),
        "kept_epoch": result.kept_epoch + 1,
        "epochs_run": result.epochs_run,
        "train_samples": result.train_samples,
        "train_seconds": round(result.seconds, 2),
        "params": result.model.count_params(),
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


def main(params: Params, paths: stage.Paths, exp_id: str) -> None:
    recipe, budget = params.recipe(exp_id), params.budget_of(exp_id)
    prepared = paths.prepared(recipe.dataset)
    meta = read_meta(prepared)
    classes = meta["classes"]
    (x_train, y_train), validation = training_splits(prepared, recipe.validation, params.seed, recipe.stratify)
    limit = params.train_samples(exp_id)
    if limit:
        keep = stratified_subsample(y_train, limit, params.seed)
        x_train, y_train = x_train[keep], y_train[keep]
    model = seeded_model(recipe, x_train.shape[1:], len(classes), params.seed)
    log.info(
        "%s: %s on %s, %d train / %d validation images, %d epochs, budget %s",
        *(exp_id, recipe.model, recipe.dataset, len(x_train), len(validation[1]), recipe.epochs, budget),
    )
    logged = {"experiment": exp_id, "budget": budget, "seed": params.seed, **recipe.model_dump(mode="json")}
    with (
        stage.mlflow_run("train", exp_id, params, paths, paths.data_hash(recipe.dataset), logged),
        staged_outputs(paths.root) as out,
    ):
        callbacks = [mlflow.keras.MlflowCallback()]
        result = fit(model, recipe, (x_train, y_train), validation, len(classes), params.seed, callbacks)
        metrics = summary_metrics(result)
        mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items()})
        model_path = paths.model(exp_id)
        write_with(out.path(model_path), model.save)
        title = f"{exp_id} ({recipe.model} on {recipe.dataset})"
        card = {
            "experiment": exp_id,
            "dataset": recipe.dataset,
            "classes": classes,
            "input_shape": list(x_train.shape[1:]),
        }
        artifacts = [
            write_json(out.path(model_card_path(model_path)), card),
            write_text(out.path(model_path.with_suffix(".summary.txt")), summary_text(model)),
            training_curves(result.history, title, out.path(paths.plots(exp_id) / "training_curves.png")),
            write_text(out.path(paths.plots(exp_id) / "history.csv"), history_csv(result.history)),
            write_json(
                out.path(paths.metrics(exp_id) / "train.json"), {**describe_run(exp_id, meta, budget), **metrics}
            ),
        ]
        diagram = architecture_diagram(model, out.folder / "model.png")
        for artifact in [*artifacts, *diagram]:
            mlflow.log_artifact(str(artifact))
        if params.mlflow.log_model:
            sample = x_train[:4].astype(np.float32)
            signature = infer_signature(sample, model.predict(sample, verbose=0))
            mlflow.keras.log_model(model, name="model", signature=signature)
    log.info(
        "%s: val accuracy %.4f (epoch %d of %d, %.1f s)",
        *(exp_id, metrics["val_accuracy"], metrics["kept_epoch"], result.epochs_run, result.seconds),
    )


if __name__ == "__main__":
    stage.run(main)
