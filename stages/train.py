# ruff: noqa: I001  (cnnlab is imported first: it quiets TensorFlow before TensorFlow loads)
"""train stage: fit the experiment named in params and save the model, its history and curves."""

from __future__ import annotations

import cnnlab  # noqa: F401

import io
import json
import logging

import mlflow
import numpy as np
from mlflow.models import infer_signature

from cnnlab import stage
from cnnlab.config import Params
from cnnlab.files import write_json, write_text, write_with
from cnnlab.plots import training_curves
from cnnlab.prepare import load_split
from cnnlab.splits import stratified_subsample
from cnnlab.training import fit, seeded_model

log = logging.getLogger("cnnlab.train")


def summary_text(model) -> str:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    return buffer.getvalue()


def history_csv(history: dict[str, list[float]]) -> str:
    keys = list(history)
    rows = [",".join(["epoch", *keys])]
    rows += [",".join([str(i + 1), *(f"{history[k][i]:.6f}" for k in keys)]) for i in range(len(history[keys[0]]))]
    return "\n".join(rows) + "\n"


def main(params: Params, paths: stage.Paths) -> None:
    exp_id, recipe = params.experiment, params.current
    prepared = paths.prepared(recipe.dataset)
    meta = json.loads((prepared / "meta.json").read_text()) if (prepared / "meta.json").is_file() else None
    if meta is None:
        raise FileNotFoundError(f"{prepared / 'meta.json'} not found: run the preprocess stage first")
    x_train, y_train = load_split(prepared / "train.npz")
    validation = load_split(prepared / ("test.npz" if recipe.validation == "test" else "val.npz"))
    limit = params.experiments[exp_id].train_samples(params.budget)
    if limit:
        keep = stratified_subsample(y_train, limit, params.seed)
        x_train, y_train = x_train[keep], y_train[keep]
    classes = meta["classes"]
    model = seeded_model(recipe, x_train.shape[1:], len(classes), params.seed)
    log.info(
        "%s: %s on %s, %d train / %d validation images, %d epochs, budget %s",
        exp_id,
        recipe.model,
        recipe.dataset,
        len(x_train),
        len(validation[1]),
        recipe.epochs,
        params.budget,
    )
    with stage.mlflow_run(
        "train",
        params,
        paths,
        paths.data_hash(recipe.dataset),
        {"experiment": exp_id, "budget": params.budget, "seed": params.seed, **recipe.model_dump(mode="json")},
    ):
        result = fit(
            model,
            recipe,
            (x_train, y_train),
            validation,
            len(classes),
            params.seed,
            extra_callbacks=[mlflow.keras.MlflowCallback()],
        )
        history = result.history
        metrics = {
            "train_accuracy": history["accuracy"][-1],
            "train_loss": history["loss"][-1],
            "val_accuracy": history["val_accuracy"][-1],
            "val_loss": history["val_loss"][-1],
            "best_val_accuracy": max(history["val_accuracy"]),
            "epochs_run": result.epochs_run,
            "train_samples": result.train_samples,
            "train_seconds": round(result.seconds, 2),
            "params": model.count_params(),
        }
        mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items()})
        model_path = paths.model(exp_id)
        write_with(model_path, model.save)
        summary = write_text(model_path.with_suffix(".summary.txt"), summary_text(model))
        curves = training_curves(
            history, f"{exp_id} ({recipe.model} on {recipe.dataset})", paths.plots / "training_curves.png"
        )
        history_file = write_text(paths.plots / "history.csv", history_csv(history))
        metrics_file = write_json(paths.metrics / "train.json", {"experiment": exp_id, **metrics})
        for artifact in (summary, curves, history_file, metrics_file):
            mlflow.log_artifact(str(artifact))
        if params.mlflow.log_model:
            sample = x_train[:4].astype(np.float32)
            signature = infer_signature(sample, model.predict(sample, verbose=0))
            mlflow.keras.log_model(model, name="model", signature=signature)
    log.info(
        "%s: val accuracy %.4f after %d epochs (%.1f s)",
        exp_id,
        metrics["val_accuracy"],
        result.epochs_run,
        result.seconds,
    )


if __name__ == "__main__":
    stage.run(main)
