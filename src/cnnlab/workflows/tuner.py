"""Keras Tuner searches: trials as nested MLflow runs, resumable, restarted when the search changes, distributable.

- Every trial trains a `CNN` recipe (`training/search_space.py`) through the same code as the experiments, and is a
  child run of the stage's run (`tune@T1` → `T1/trial_0004`) with its hyperparameters, per-epoch metrics,
  final objective and a `status` tag (completed, invalid or failed). A trial that raises ends its run
  FAILED and the search goes on (until `max_consecutive_failed_trials` fail in a row, Keras Tuner's rule).
- Resuming: the tuner's directory `tuning/<id>` persists (a DVC output). Run again with the same search, the
  tuner reloads its finished trials, retries the one that was cut off (whose MLflow run is deleted) and
  reopens the same parent run. A changed search (space, tuner, objective, data, seed or trial code) wipes
  the directory and starts a new search with a new parent run.
- Distributed: with Keras Tuner's variables set (`KERASTUNER_TUNER_ID=chief|<worker>`,
  `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`) the chief serves the oracle and writes the outputs,
  workers run trials; each worker finds the chief's MLflow run by the search's fingerprint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import mlflow

from cnnlab.data.splits import Arrays
from cnnlab.lineage.code_digest import code_digest
from cnnlab.params import Tune
from cnnlab.tracking.epochs import EpochsToMlflow
from cnnlab.tracking.owners import owner_gone
from cnnlab.tracking.runs import child_runs
from cnnlab.tracking.uris import redact
from cnnlab.training.fit import progress_verbosity
from cnnlab.training.hypermodel import SearchHyperModel
from cnnlab.util.files import combined_hash, write_json

log = logging.getLogger("cnnlab.tune")
STATE_FILE = "search.json"
FINGERPRINT_TAG = "search_fingerprint"
# The code that builds and fits a trial (with all it imports): a change elsewhere does not restart a search.
TRIAL_CODE = ("cnnlab.training.hypermodel",)
TUNERS: dict[str, type[kt.Tuner]] = {
    "hyperband": kt.Hyperband,
    "random": kt.RandomSearch,
    "bayesian": kt.BayesianOptimization,
}


class SearchTimeUp(Exception):
    """The search's `max_minutes` are spent: no further trial is started."""


def role() -> str:
    """'local' (one process), 'chief' (serves the oracle, runs no trial) or 'worker' (runs trials for a chief)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def direction(objective: str) -> str:
    """Accuracies are maximised, losses minimised (Keras' 'auto' mode)."""
    return "max" if "acc" in objective else "min"


def search_fingerprint(search: Tune, seed: int, data_hash: str, train_samples: int) -> str:
    """What makes trials comparable: changing any of it starts a new search.

    Budget-only knobs (max_trials, max_minutes, top_n, retries) are left out, so raising them continues.
    """
    keys = {"max_trials", "max_minutes", "top_n", "max_retries_per_trial", "max_consecutive_failed_trials",
            "description", "budgets", "budget"}  # fmt: skip
    described = json.dumps(search.model_dump(mode="json", exclude=keys), sort_keys=True)
    return combined_hash([described, str(seed), data_hash, str(train_samples), code_digest(*TRIAL_CODE)])


class TrackedHyperModel(SearchHyperModel):
    """The trial's model and fit, with its epochs and parameter count logged to the trial's MLflow run."""

    def extra_callbacks(self) -> list[keras.callbacks.Callback]:
        return [EpochsToMlflow()]

    def fit(self, hp: kt.HyperParameters, model: keras.Model, x: Any, y: Any, **kwargs: Any) -> Any:
        if mlflow.active_run() is not None:
            mlflow.log_metric("params", model.count_params())
        return super().fit(hp, model, x, y, **kwargs)


class TrialRuns:
    """Mixed into a Keras Tuner class: each trial is an MLflow child run of the search's run."""

    parent_run_id: str
    search_id: str
    deadline: float | None = None

    def pre_create_trial(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SearchTimeUp
        super().pre_create_trial()  # type: ignore[misc]

    def _configure_tensorboard_dir(self, callbacks: list, trial: Any, execution: int = 0) -> None:
        # Keras Tuner imports TensorBoard here under TensorFlow even when no TensorBoard callback is
        # used, and TensorFlow 2.21 no longer installs it: only go there for a TensorBoard callback.
        if any(type(c).__name__ == "TensorBoard" for c in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)  # type: ignore[misc]

    def on_trial_begin(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_begin(trial)  # type: ignore[misc]
        parent = mlflow.MlflowClient().get_run(self.parent_run_id)
        tags = {"mlflow.parentRunId": self.parent_run_id, "trial_id": trial.trial_id,
                "tuner_id": getattr(self, "tuner_id", "tuner0"), "status": "running"}  # fmt: skip
        mlflow.start_run(
            experiment_id=parent.info.experiment_id,
            run_name=f"{self.search_id}/trial_{trial.trial_id}",
            nested=mlflow.active_run() is not None,
            tags=tags,
        )
        mlflow.log_params(trial.hyperparameters.values)

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        status = str(trial.status).lower()  # before the oracle turns an INVALID trial it will not retry into FAILED
        try:
            super().on_trial_end(trial)  # type: ignore[misc]
        finally:
            ended = self.oracle.get_trial(trial.trial_id)  # type: ignore[attr-defined]
            if ended.score is not None:
                mlflow.log_metrics({"objective": float(ended.score), "best_step": int(ended.best_step or 0)})
            mlflow.set_tag("status", status)
            if trial.message:
                mlflow.set_tag("error", trial.message.strip().splitlines()[-1][:4000])
                mlflow.log_text(trial.message, "error.txt")
            mlflow.end_run("FINISHED" if status == "completed" else "FAILED")


def tracked_tuner(search: Tune, hypermodel: SearchHyperModel, folder: Path, seed: int, fresh: bool) -> kt.Tuner:
    """The search's Keras Tuner (with per-trial MLflow runs) in `folder`, reloaded unless `fresh`."""
    base = TUNERS[search.tuner]
    tuner_class = type(f"Tracked{base.__name__}", (TrialRuns, base), {})
    budget: dict[str, Any] = (
        {"max_epochs": search.max_epochs, "factor": search.factor, "hyperband_iterations": search.hyperband_iterations}
        if search.tuner == "hyperband"
        else {"max_trials": search.max_trials}
    )
    return tuner_class(
        hypermodel=hypermodel,
        objective=kt.Objective(search.objective, direction(search.objective)),
        executions_per_trial=search.executions_per_trial,
        max_model_size=search.max_params,
        max_retries_per_trial=search.max_retries_per_trial,
        max_consecutive_failed_trials=search.max_consecutive_failed_trials,
        seed=seed,
        directory=str(folder.parent),
        project_name=folder.name,
        overwrite=fresh,
        **budget,
    )


@dataclass
class SearchState:
    """`search.json` in the tuner's directory: which search it holds and its MLflow run."""

    folder: Path
    fingerprint: str | None = None
    parent_run_id: str | None = None

    @classmethod
    def load(cls, folder: Path) -> SearchState:
        path = folder / STATE_FILE
        if not path.is_file():
            return cls(folder)
        recorded = json.loads(path.read_text())
        return cls(folder, recorded.get("fingerprint"), recorded.get("parent_run_id"))

    def save(self) -> None:
        write_json(self.folder / STATE_FILE, {"fingerprint": self.fingerprint, "parent_run_id": self.parent_run_id})

    def reusable_parent(self) -> str | None:
        """The recorded parent run, if it still exists and is not deleted."""
        if not self.parent_run_id:
            return None
        try:
            run = mlflow.MlflowClient().get_run(self.parent_run_id)
        except mlflow.exceptions.MlflowException:
            return None
        return self.parent_run_id if run.info.lifecycle_stage == "active" else None


def prepare_folder(folder: Path, fingerprint: str, search_id: str) -> tuple[SearchState, bool]:
    """(state, fresh): the directory's state, wiped first when it holds another search's trials."""
    state = SearchState.load(folder)
    if state.fingerprint == fingerprint:
        return state, False
    if folder.exists():
        log.info("%s: the search changed since its trials were run; starting a new search", search_id)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return SearchState(folder, fingerprint), True


def discard_unfinished(parent_run_id: str, ended: set[str]) -> None:
    """Delete the trial runs whose trial the oracle never ended (cut off by an interruption; it is rerun)."""
    client = mlflow.MlflowClient()
    for child in child_runs(parent_run_id):
        if child.data.tags.get("trial_id") not in ended:
            log.info("discarding the interrupted trial run %s (%s)", child.info.run_name, child.info.status)
            client.delete_run(child.info.run_id)


def run_search(
    tuner: kt.Tuner, search: Tune, train: Arrays, validation: Arrays, deadline: float | None
) -> tuple[bool, float]:
    """Run (or continue) the search; returns (stopped by the time limit, seconds)."""
    tuner.deadline = deadline
    started = time.perf_counter()
    try:
        tuner.search(*train, validation_data=validation, epochs=search.max_epochs, verbose=progress_verbosity())
    except SearchTimeUp:
        log.info("the search's %s minutes are spent: no further trials started", search.max_minutes)
        return True, time.perf_counter() - started
    return False, time.perf_counter() - started


def find_chief_run(experiment_id: str, fingerprint: str, wait_seconds: float = 120) -> str:
    """A worker's parent run: the chief's running run of the same search (same fingerprint)."""
    client = mlflow.MlflowClient()
    query = f"tags.{FINGERPRINT_TAG} = '{fingerprint}' and attributes.status = 'RUNNING'"
    waited_until = time.monotonic() + wait_seconds
    while True:
        found = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time DESC"])
        alive = [run for run in found if not owner_gone(run.data.tags)]  # never a chief killed outright
        if alive:
            return alive[0].info.run_id
        if time.monotonic() > waited_until:
            uri = redact(mlflow.get_tracking_uri())
            raise RuntimeError(
                f"no running chief of this search in MLflow ({uri}) after {wait_seconds:.0f} s: "
                "start the chief first, give every worker the chief's params, data and code, and point "
                "MLFLOW_TRACKING_URI at the same tracking server"
            )
        time.sleep(2)
