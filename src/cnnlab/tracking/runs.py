"""MLflow conventions: where runs go, how they are named and tagged, and that they never stay RUNNING.

- Tracking URI: `MLFLOW_TRACKING_URI` if set, else an absolute
  `sqlite:///<project root>/mlflow.db` (a relative one is lost inside `dvc exp`
  copies); artifacts in `<project root>/mlartifacts`, or where a tracking
  server (`http://...`) keeps them.
- One run per stage execution, named `<stage>@<target>` as DVC names the stage
  (`train@F1`, `preprocess@mnist`), tagged with the stage, the experiment id (or
  data set), git commit and dirty flag, data hash, backend, device and budget;
  params flattened with dotted keys.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import Model, infer_signature
from mlflow.models.model import ModelInfo

from cnnlab.tracking.owners import end_stale_runs, owner_tags
from cnnlab.util.signals import ignore_stop_signals, stop_signals_raised

ARTIFACTS_DIR = "mlartifacts"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# The packages a logged model needs besides mlflow, keras and numpy, by Keras backend
BACKEND_PACKAGES = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


# Where DVC runs an experiment outside the workspace (`dvc exp run --temp`, `--queue`): <project>/.dvc/tmp/exps/<copy>
EXPERIMENT_COPIES = (".dvc", "tmp", "exps")
# SQLite's wait for another writer's lock, in seconds: queued experiments (`dvc queue start -j N`) write at once.
SQLITE_BUSY_TIMEOUT = 60


def store_root(root: Path) -> Path:
    """The project whose store and artifacts a stage at `root` uses: `root`, or for an experiment DVC runs in a
    temporary copy, the project it copied, so that its runs are not lost with the copy."""
    parts = root.resolve().parts
    for i in range(len(parts) - len(EXPERIMENT_COPIES)):
        if parts[i : i + len(EXPERIMENT_COPIES)] == EXPERIMENT_COPIES:
            return Path(*parts[:i])
    return root


def tracking_uri(root: Path) -> str:
    database = (store_root(root) / "mlflow.db").resolve()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{database}?timeout={SQLITE_BUSY_TIMEOUT}"


def use_experiment(name: str, root: Path) -> str:
    """Point MLflow at the project's store and return the id of experiment `name` (created if new)."""
    mlflow.set_tracking_uri(tracking_uri(root))
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # A tracking server stores artifacts where it was told to (--artifacts-destination); a local store, here.
    remote = mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks"))
    location = None if remote else (store_root(root) / ARTIFACTS_DIR).resolve().as_uri()
    # Without this tag MLflow 3's UI opens the experiment on its GenAI view, not on the training runs.
    try:
        return mlflow.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: "custom_model_development"}
        )
    except mlflow.exceptions.MlflowException:
        # Tuner workers and parallel stages start together: another process may have created it since the lookup.
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def git_state(root: Path) -> tuple[str, bool]:
    """(commit, dirty) of the checkout at `root`; ("unknown", False) outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(status.strip())


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and None kept as their text."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


def safe_metric_name(name: str) -> str:
    """`name` with every character MLflow refuses in a metric key replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name).replace(" ", "_").replace("/", "_")


def child_runs(parent_run_id: str) -> list[mlflow.entities.Run]:
    """The runs nested directly under `parent_run_id` (a study's arms or folds, a search's trials)."""
    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


@contextlib.contextmanager
def stage_run(
    stage: str,
    target: str,
    *,
    target_tag: str = "experiment_id",
    root: Path,
    tracking_experiment: str,
    budget: str,
    data_hash: str | None,
    params: Mapping[str, Any],
    run_id: str | None = None,
    computes: bool = True,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one stage execution, marked FAILED if the stage raises or is stopped by a signal.

    A stage that learns its data hash only while it runs passes None and tags `data_hash` itself.
    `run_id` resumes that run (a study picking up where an interrupted execution stopped) instead of
    starting a new one. A stage that `computes` with Keras is tagged with its backend and device; the data
    stages are not, and so never import Keras (seconds of start-up).
    """
    commit, dirty = git_state(root)
    tags = {
        "stage": stage,
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "data_hash": data_hash or "pending",
        "budget": budget,
    }
    if computes:
        from cnnlab.training import backend  # imports Keras: only when a run really starts

        tags |= {"keras_backend": backend.name(), "device": backend.device()}
    if target:  # the report stage covers all experiments and has none
        tags[target_tag] = target
    tags |= owner_tags()
    exp = use_experiment(tracking_experiment, root)
    same = f"tags.stage = '{stage}'" + (f" and tags.{target_tag} = '{target}'" if target else "")
    end_stale_runs(exp, same, keep=run_id)  # an earlier run of this stage left RUNNING by a killed process
    with stop_signals_raised():
        name = f"{stage}@{target}" if target else stage
        run = mlflow.start_run(run_id=run_id, experiment_id=exp, run_name=name, tags=tags)
        try:
            mlflow.log_params(flatten(params))
            yield run
        except BaseException:
            ignore_stop_signals()  # a second stop request must not interrupt the bookkeeping
            _mark_failed(run.info.run_id)
            raise
        mlflow.end_run()


def _mark_failed(run_id: str) -> None:
    """End the run FAILED, writing the status directly if the fluent API cannot.

    A stop signal can land inside MLflow's own (asynchronous) logging, after
    which `end_run` may raise; the run must still not be left RUNNING.
    """
    with contextlib.suppress(Exception):
        # Nested runs the stage opened (a fold, a trial) fail with it, down to the stage's own run.
        while (active := mlflow.active_run()) is not None:
            mlflow.end_run(status="FAILED")
            if active.info.run_id == run_id:
                break
    client = mlflow.MlflowClient()
    if client.get_run(run_id).info.status != "FAILED":
        client.set_terminated(run_id, status="FAILED")


def model_requirements(backend: str) -> list[str]:
    """A logged model's pip requirements, pinned to what is installed. MLflow infers the same list by loading the
    model in a fresh Python process, which costs every logged model several seconds."""
    pins = []
    for package in ("mlflow", "keras", "numpy", *BACKEND_PACKAGES.get(backend, ())):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pins.append(f"{package}=={importlib.metadata.version(package)}")
    return pins


def log_keras_model(model: Any, sample: np.ndarray, **kwargs: Any) -> ModelInfo:
    """Log `model` to the active run as "model", its signature read from a prediction on `sample`: Keras' flavor,
    whose pyfunc (`mlflow models serve`) answers with the class names of `metadata` (tracking.classifier)."""
    import keras  # here, not at the top: the data stages log no model and do without Keras

    from cnnlab.tracking import classifier

    sample = sample.astype(np.float32)
    names = classifier.class_names(kwargs.get("metadata"), model.output_shape[-1])
    signature = infer_signature(sample, classifier.ranked(np.asarray(model.predict(sample, verbose=0)), names))
    requirements = model_requirements(keras.backend.backend())
    logged = {"signature": signature, "pip_requirements": requirements, **kwargs}
    return Model.log(None, name="model", flavor=classifier, model=model, **logged)
