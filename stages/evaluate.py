# ruff: noqa: I001  (cnnlab is imported first: it quiets TensorFlow before TensorFlow loads)
"""evaluate stage: test-set metrics, per-class report, confusion matrix and misclassified images."""

from __future__ import annotations

import cnnlab  # noqa: F401

import json
import logging

import keras
import mlflow
import numpy as np

from cnnlab import stage
from cnnlab.config import Params
from cnnlab.evaluation import evaluate
from cnnlab.files import write_json, write_text
from cnnlab.plots import confusion_matrix_png, image_grid
from cnnlab.prepare import load_split

log = logging.getLogger("cnnlab.evaluate")
MISCLASSIFIED_SHOWN = 24


def confusion_csv(actual: np.ndarray, predicted: np.ndarray, classes: list[str]) -> str:
    """One row per test image, for `dvc plots show` (confusion template)."""
    rows = ["actual,predicted"] + [f"{classes[a]},{classes[p]}" for a, p in zip(actual, predicted, strict=True)]
    return "\n".join(rows) + "\n"


def main(params: Params, paths: stage.Paths) -> None:
    exp_id, recipe = params.experiment, params.current
    model_path = paths.model(exp_id)
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path} not found: run the train stage first (`dvc repro train`)")
    prepared = paths.prepared(recipe.dataset)
    classes = json.loads((prepared / "meta.json").read_text())["classes"]
    x_test, y_test = load_split(prepared / "test.npz")
    with stage.mlflow_run(
        "evaluate",
        params,
        paths,
        paths.data_hash(recipe.dataset),
        {
            "experiment": exp_id,
            "model_file": str(model_path.relative_to(paths.root)),
            "test_samples": len(y_test),
        },
    ):
        model = keras.models.load_model(model_path)
        result = evaluate(model, x_test, y_test, classes, recipe.loss)
        metrics = result.metrics()
        mlflow.log_metrics(metrics)
        mlflow.log_metrics(
            {
                f"{name}_{k.replace('-score', '')}".replace(" ", "_").replace("/", "_"): v
                for name in classes
                for k, v in result.per_class[name].items()
                if k != "support"
            }
        )
        wrong = np.flatnonzero(result.predicted != y_test)[:MISCLASSIFIED_SHOWN]
        outputs = [
            write_json(paths.metrics / "evaluate.json", {"experiment": exp_id, **metrics}),
            write_json(paths.metrics / "classification_report.json", result.per_class),
            write_text(paths.plots / "confusion.csv", confusion_csv(y_test, result.predicted, classes)),
            confusion_matrix_png(
                result.confusion, classes, f"{exp_id}: test confusion matrix", paths.plots / "confusion_matrix.png"
            ),
            image_grid(
                x_test[wrong],
                [f"{classes[y_test[i]]} → {classes[result.predicted[i]]}" for i in wrong],
                f"{exp_id}: misclassified test images (true → predicted)",
                paths.plots / "misclassified.png",
            ),
        ]
        for path in outputs:
            mlflow.log_artifact(str(path))
    log.info("%s: test accuracy %.4f, loss %.4f", exp_id, metrics["test_accuracy"], metrics["test_loss"])


if __name__ == "__main__":
    stage.run(main)
