"""What a search leaves: every trial in a table, the best hyperparameters as a recipe, metrics, plots and MLflow.

Trials come from the oracle (hyperparameters, objective, status) joined with their MLflow runs (how long
each took, and its status as the trial saw it), so the same table serves a local and a distributed search.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras_tuner as kt
import mlflow
import pandas as pd

from cnnlab.params import Tune
from cnnlab.pipeline.stage import Paths
from cnnlab.plots.search import search_progress
from cnnlab.report.text import markdown_table
from cnnlab.tracking.runs import child_runs
from cnnlab.training import backend
from cnnlab.training.fit import seeded_model
from cnnlab.training.search_space import trial_recipe, value_type
from cnnlab.util.files import Staging, write_json, write_text
from cnnlab.workflows.tuner import direction

log = logging.getLogger("cnnlab.tune")
HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round", "tuner/trial_id")


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    status: str  # completed, invalid or failed
    objective: float | None
    epochs: int  # epochs this trial trained (a Hyperband trial continuing another trains only the new ones)
    seconds: float
    ended_ms: int
    values: dict[str, Any]


def trial_records(oracle: kt.Oracle, search: Tune, parent_run_id: str) -> list[TrialRecord]:
    """Every ended trial, in the order they ended."""
    runs = {run.data.tags.get("trial_id"): run for run in child_runs(parent_run_id)}
    records = []
    for trial_id in oracle.end_order:
        trial, run = oracle.trials[trial_id], runs.get(trial_id)
        values = dict(trial.hyperparameters.values)
        epochs = values.get("tuner/epochs", search.max_epochs) - values.get("tuner/initial_epoch", 0)
        seconds = (run.info.end_time - run.info.start_time) / 1000 if run and run.info.end_time else 0.0
        records.append(
            TrialRecord(
                trial_id=trial_id,
                status=run.data.tags.get("status", str(trial.status).lower()) if run else str(trial.status).lower(),
                objective=None if trial.score is None else float(trial.score),
                epochs=int(epochs) * search.executions_per_trial if trial.score is not None else 0,
                seconds=round(seconds, 2),
                ended_ms=run.info.end_time if run and run.info.end_time else 0,
                values=values,
            )
        )
    return sorted(records, key=lambda r: (r.ended_ms, r.trial_id))


def readable(values: dict[str, Any]) -> dict[str, Any]:
    """A trial's own hyperparameters (not Hyperband's bookkeeping), booleans as booleans."""
    return {k: value_type(k)(v) for k, v in values.items() if k not in HYPERBAND_KEYS}


def trials_table(records: list[TrialRecord], objective: str) -> pd.DataFrame:
    """One row per trial: status, objective, the best so far, minutes accumulated, and its hyperparameters."""
    rows = []
    best: float | None = None
    maximise, minutes = direction(objective) == "max", 0.0
    for number, record in enumerate(records, start=1):
        value = record.objective
        if value is not None and (best is None or (value > best if maximise else value < best)):
            best = value
        minutes += record.seconds / 60
        hyper = readable(record.values)
        rows.append(
            {"trial": number, "trial_id": record.trial_id, "status": record.status, objective: value,
             "best_so_far": best, "seconds": record.seconds, "minutes": round(minutes, 3), "epochs": record.epochs,
             **hyper}
        )  # fmt: skip
    return pd.DataFrame(rows).convert_dtypes()  # filters_3 of a 2-block trial is empty, not 32.0


def best_hyperparameters(tuner: kt.Tuner, search: Tune, input_shape: tuple[int, ...], classes: int, seed: int) -> dict:
    """The best trial as a recipe to retrain: its values, the epochs its best score took, and its size."""
    (best,) = tuner.oracle.get_best_trials(1)
    hp = best.hyperparameters.copy()
    epochs = int(hp.values.get("tuner/initial_epoch", 0)) + int(best.best_step or 0) + 1
    recipe = trial_recipe(hp, search).model_copy(update={"epochs": epochs})
    return {
        "objective": search.objective,
        "direction": direction(search.objective),
        "best_objective": float(best.score),
        "trial_id": best.trial_id,
        "epochs": epochs,
        "params": seeded_model(recipe, input_shape, classes, seed).count_params(),
        "hyperparameters": readable(hp.values),
        "recipe": recipe.model_dump(mode="json", exclude={"budgets", "budget", "callbacks"}),
    }


def search_metrics(records: list[TrialRecord], best: dict, search: Tune, timed_out: bool) -> dict[str, Any]:
    trial_seconds = sum(r.seconds for r in records)
    ended = [r.ended_ms for r in records if r.ended_ms]
    return {
        "tuner": search.tuner,
        "objective": search.objective,
        "best_objective": best["best_objective"],
        "best_trial": best["trial_id"],
        "best_params": best["params"],
        "best_epochs": best["epochs"],
        "trials": len(records),
        "completed": sum(r.status == "completed" for r in records),
        "failed": sum(r.status != "completed" for r in records),
        "trial_hours": round(trial_seconds / 3600, 4),  # device time spent in trials (all workers)
        "trials_per_hour": round(3600 * len(records) / trial_seconds, 2) if trial_seconds else 0.0,
        # first trial's start to last trial's end (a resumed search includes the pause)
        "wall_minutes": round((max(ended) - min(ended)) / 60000 + records[0].seconds / 60, 2) if ended else 0.0,
        "stopped_by_time_limit": timed_out,
        "device": backend.device(),
    }


def write_search_outputs(
    search_id: str, table: pd.DataFrame, best: dict, metrics: dict, search: Tune, out: Staging, paths: Paths
) -> list[Path]:
    """best_hparams.json, trials.csv, the progress plot and metrics, staged in `out`; returns the files."""
    objectives = [None if pd.isna(v) else float(v) for v in table[search.objective]]
    return [
        write_json(out.path(paths.best_hparams(search_id)), {"search": search_id, **best}),
        write_text(out.path(paths.plots(search_id) / "trials.csv"), table.to_csv(index=False)),
        search_progress(
            objectives,
            table["minutes"].tolist(),
            direction(search.objective) == "max",
            search.objective,
            f"{search_id} ({search.tuner})",
            out.path(paths.plots(search_id) / "search_progress.png"),
        ),
        write_json(out.path(paths.metrics(search_id) / "tune.json"), {"search": search_id, **metrics}),
    ]


def log_search(table: pd.DataFrame, best: dict, metrics: dict, search: Tune, files: list[Path]) -> None:
    """The parent run: the search's metrics, the best values as tags, the top trials as an MLflow table."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
    mlflow.set_tags({f"best.{k}": str(v) for k, v in best["hyperparameters"].items()})
    scored = table.dropna(subset=[search.objective])
    top = scored.sort_values(search.objective, ascending=direction(search.objective) == "min").head(search.top_n)
    mlflow.log_table(top.reset_index(drop=True), artifact_file="top_trials.json")
    shown = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in top.itertuples(index=False)]
    mlflow.log_text(markdown_table([str(c) for c in top.columns], shown), "top_trials.md")
    for path in files:
        mlflow.log_artifact(str(path))
