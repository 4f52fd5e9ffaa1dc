# ruff: noqa: I001, E402  (cnnlab first: it quiets TensorFlow; then the stage hands itself to a warm worker)
"""evaluate stage: test-set metrics, per-class report, confusion matrix and misclassified images."""

from __future__ import annotations

import cnnlab  # noqa: F401
from cnnlab.warm import run_in_warm_worker

run_in_warm_worker(__file__)  # from here on, in a worker that has imported Keras and MLflow already

import logging

import keras
import mlflow
import numpy as np

from cnnlab import stage
from cnnlab.config import Params
from cnnlab.evaluation import evaluate, predict_classes
from cnnlab.registry import champion_score, champion_version, decide, model_name, record
from cnnlab.files import staged_outputs, write_json, write_text
from cnnlab.plots import confusion_matrix_png, image_grid
from cnnlab.tracking import log_keras_model, safe_metric_name
from cnnlab.predict import load_model
from cnnlab.prepare import load_split, read_meta

log = logging.getLogger("cnnlab.evaluate")
MISCLASSIFIED_SHOWN = 24


def confusion_csv(actual: np.ndarray, predicted: np.ndarray, classes: list[str]) -> str:
    """One row per test image, for `dvc plots show` (confusion template)."""
    rows = ["actual,predicted"] + [f"{classes[a]},{classes[p]}" for a, p in zip(actual, predicted, strict=True)]
    return "\n".join(rows) + "\n"


def per_class_metrics(per_class: dict[str, dict[str, float]], classes: list[str]) -> dict[str, float]:
    """Per-class precision / recall / F1 under metric names MLflow accepts (class names may hold any character)."""
    return {
        f"{safe_metric_name(name)}_{score.replace('-score', '')}": value
        for name in classes
        for score, value in per_class[name].items()
        if score != "support"
    }


def register(model: keras.Model, exp_id: str, x_test: np.ndarray, y_test: np.ndarray, test_hash: str,
             accuracy: float, margin: float) -> None:  # fmt: skip
    """Log the evaluated model as a new version of cnnlab-<id>; it becomes champion only if it beats the current
    champion, scored on the same test set (the images with sha256 `test_hash`), by `margin`."""
    client, name = mlflow.MlflowClient(), model_name(exp_id)
    current = champion_version(client, name)
    champion = None
    if current is not None:
        uri = f"models:/{name}/{current.version}"

        def rescore() -> float:  # only when the champion has no score on this test set yet
            return float((predict_classes(mlflow.keras.load_model(uri), x_test) == y_test).mean())

        champion = champion_score(client, name, current, test_hash, rescore)
    info = log_keras_model(model, x_test[:4], registered_model_name=name)
    decision = decide(accuracy, champion, margin)
    record(client, name, str(info.registered_model_version), decision, test_hash)
    mlflow.log_metrics(
        {"promoted": float(decision.promoted), **({"champion_test_accuracy": champion} if champion is not None else {})}
    )
    mlflow.set_tags({"promotion": decision.reason, "registered_model": name,
                     "registered_version": str(info.registered_model_version)})  # fmt: skip
    log.info("%s: version %s of %s: %s", exp_id, info.registered_model_version, name, decision.reason)


def main(params: Params, paths: stage.Paths, exp_id: str) -> None:
    dataset = params.dataset_of(exp_id)  # an experiment's, or a search's whose best model was retrained
    model_path = paths.model(exp_id)
    if not model_path.is_file():
        raise FileNotFoundError(
            f"{model_path} not found: train it first (`dvc repro {stage.producer(params, exp_id)}`)"
        )
    prepared = paths.prepared(dataset)
    meta = read_meta(prepared)
    classes = meta["classes"]
    x_test, y_test = load_split(prepared / "test.npz")
    logged = {"experiment": exp_id, "model_file": str(model_path.relative_to(paths.root)), "test_samples": len(y_test)}
    metrics_dir, plots_dir = paths.metrics(exp_id), paths.plots(exp_id)
    with (
        stage.mlflow_run("evaluate", exp_id, params, paths, paths.data_hash(dataset), logged),
        staged_outputs(paths.root) as out,
    ):
        model = load_model(model_path)
        result = evaluate(model, x_test, y_test, classes, params.loss_of(exp_id, len(classes)))
        metrics = result.metrics()
        mlflow.log_metrics({**metrics, **per_class_metrics(result.per_class, classes)})
        wrong = np.flatnonzero(result.predicted != y_test)[:MISCLASSIFIED_SHOWN]
        outputs = [
            write_json(out.path(metrics_dir / "evaluate.json"), {"experiment": exp_id, **metrics}),
            write_json(out.path(metrics_dir / "classification_report.json"), result.per_class),
            write_text(out.path(plots_dir / "confusion.csv"), confusion_csv(y_test, result.predicted, classes)),
            confusion_matrix_png(
                result.confusion,
                classes,
                f"{exp_id}: test confusion matrix",
                out.path(plots_dir / "confusion_matrix.png"),
            ),
            image_grid(
                x_test[wrong],
                [f"{classes[y_test[i]]} → {classes[result.predicted[i]]}" for i in wrong],
                f"{exp_id}: misclassified test images (true → predicted)",
                out.path(plots_dir / "misclassified.png"),
            ),
        ]
        for path in outputs:
            mlflow.log_artifact(str(path))
        if params.mlflow.log_model and params.mlflow.register_model:
            test_hash = meta["sha256"]["test"]
            register(model, exp_id, x_test, y_test, test_hash, metrics["test_accuracy"], params.mlflow.promote_margin)
    log.info("%s: test accuracy %.4f, loss %.4f", exp_id, metrics["test_accuracy"], metrics["test_loss"])


if __name__ == "__main__":
    stage.run(main)
