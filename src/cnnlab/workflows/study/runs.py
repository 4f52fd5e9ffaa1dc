"""A study's MLflow runs: arms nested under the stage's run, folds under their arm, and each arm's mean curves."""

from __future__ import annotations

import logging
from typing import Any

import mlflow
import numpy as np

from cnnlab.params import Experiment
from cnnlab.tracking.runs import child_runs, flatten

log = logging.getLogger("cnnlab.study")


def nested_run(name: str, tags: dict[str, str], run_id: str | None = None) -> mlflow.ActiveRun:
    """A child of the active run, in the active run's MLflow experiment (not the default one)."""
    parent = mlflow.active_run()
    assert parent is not None
    return mlflow.start_run(
        run_id=run_id, experiment_id=parent.info.experiment_id, run_name=name, nested=True, tags=tags
    )


EPOCH_METRICS = ("accuracy", "loss", "val_accuracy", "val_loss")


def log_fold_means(arm_run_id: str, fold_run_ids: list[str]) -> None:
    """The arm's learning curves, each epoch's metrics averaged over its folds (step = epoch), and its mean score.

    Logged once: a resumed arm that had already logged them is left as it is.
    """
    client = mlflow.MlflowClient()
    if client.get_run(arm_run_id).data.metrics.get("folds") == len(fold_run_ids):
        return
    for name in EPOCH_METRICS:
        per_step: dict[int, list[float]] = {}
        for run_id in fold_run_ids:
            for point in client.get_metric_history(run_id, name):
                per_step.setdefault(point.step, []).append(point.value)
        for step, values in sorted(per_step.items()):
            client.log_metric(arm_run_id, f"mean_{name}", float(np.mean(values)), step=step)
    finals = [client.get_run(r).data.metrics["fold_val_accuracy"] for r in fold_run_ids]
    client.log_metric(arm_run_id, "mean_fold_val_accuracy", float(np.mean(finals)))
    client.log_metric(arm_run_id, "folds", len(fold_run_ids))


def discard_interrupted(arm_run_id: str, kept: set[str]) -> None:
    """Delete the fold runs under an arm that no finished training owns (cut off by an interruption)."""
    client = mlflow.MlflowClient()
    for child in child_runs(arm_run_id):
        if child.info.run_id not in kept:
            log.info("discarding the interrupted run %s (%s)", child.info.run_name, child.info.status)
            client.delete_run(child.info.run_id)


def flat_recipe(recipe: Experiment) -> dict[str, Any]:
    return flatten(recipe.model_dump(mode="json", exclude={"budgets", "budget", "description"}))
