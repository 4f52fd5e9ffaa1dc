"""Test-set metrics, per-class report, confusion matrix and misclassified images."""

from __future__ import annotations

import logging

import mlflow
import numpy as np

from cnnlab.data.prepare import load_split, read_meta
from cnnlab.nets.predict import ModelFileError, load_model
from cnnlab.params import Params
from cnnlab.pipeline import stage
from cnnlab.plots.base import image_grid
from cnnlab.plots.confusion import confusion_matrix_png
from cnnlab.tracking.cards import ModelCard
from cnnlab.tracking.inputs import TEST, log_prepared_inputs
from cnnlab.tracking.registry import model_name, register_evaluated
from cnnlab.tracking.runs import safe_metric_name
from cnnlab.training.evaluation import evaluate
from cnnlab.util.files import staged_outputs, write_json, write_text

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


def run(params: Params, paths: stage.Paths, exp_id: str) -> None:
    target = params.target(exp_id)  # an experiment, a search whose best model was retrained, a transfer recipe
    dataset = target.model_dataset
    model_path = paths.model(exp_id)
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path} not found: train it first (`dvc repro {target.producer}`)")
    prepared = paths.prepared(dataset)
    meta = read_meta(prepared)
    classes = meta["classes"]
    model = load_model(model_path)  # a refused or mismatched model fails here, before a run is opened
    if max(model.output_shape[-1], 2) != len(classes):
        raise ModelFileError(
            f"{model_path} has {model.output_shape[-1]} outputs but {dataset} has {len(classes)} classes: "
            f"the file is not {exp_id}'s model; retrain it (`dvc repro {target.producer}`)"
        )
    x_test, y_test = load_split(prepared / "test.npz")
    logged = {"experiment": exp_id, "model_file": str(model_path.relative_to(paths.root)), "test_samples": len(y_test)}
    metrics_dir, plots_dir = paths.metrics(exp_id), paths.plots(exp_id)
    data_hash = paths.data_hash(dataset)
    with (
        stage.mlflow_run("evaluate", exp_id, params, paths, data_hash, logged),
        staged_outputs(paths.root) as out,
    ):
        log_prepared_inputs(meta, data_hash, prepared, [TEST])
        result = evaluate(model, x_test, y_test, classes, target.loss_for(len(classes)))
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
            card = ModelCard(classes, tuple(x_test.shape[1:]), dataset)  # travels with the registered model
            version, decision = register_evaluated(model, exp_id, x_test, y_test, meta["sha256"]["test"],
                                                   metrics["test_accuracy"], params.mlflow.promote_margin,
                                                   card)  # fmt: skip
            log.info("%s: version %s of %s: %s", exp_id, version, model_name(exp_id), decision.reason)
    log.info("%s: test accuracy %.4f, loss %.4f", exp_id, metrics["test_accuracy"], metrics["test_loss"])
