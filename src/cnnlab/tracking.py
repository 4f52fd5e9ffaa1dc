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
import signal
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

ARTIFACTS_DIR = "mlartifacts"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# The packages a logged model needs besides mlflow, keras and numpy, by Keras backend
BACKEND_PACKAGES = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def use_experiment(name: str, root: Path) -> str:
    """Point MLflow at the project's store and return the id of experiment `name` (created if new)."""
    mlflow.set_tracking_uri(tracking_uri(root))
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # A tracking server stores artifacts where it was told to (--artifacts-destination); a local store, here.
    remote = mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks"))
    location = None if remote else (root / ARTIFACTS_DIR).resolve().as_uri()
    # Without this tag MLflow 3's UI opens the experiment on its GenAI view, not on the training runs.
    return mlflow.create_experiment(
        name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: "custom_model_development"}
    )


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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_stop_requested: list[signal.Signals] = []  # the stop signals this stage has received
_at_safe_points: list[bool] = []  # while set, a stop signal is recorded here and raised at the next safe point


def safe_metric_name(name: str) -> str:
    """`name` with every character MLflow refuses in a metric key replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name).replace(" ", "_").replace("/", "_")


def child_runs(parent_run_id: str) -> list[mlflow.entities.Run]:
    """The runs nested directly under `parent_run_id` (a study's arms or folds, a search's trials)."""
    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def _raise_on_signal(signum: int, frame: Any) -> None:
    _stop_requested.append(signal.Signals(signum))
    if not _at_safe_points:
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def stops_at_safe_points() -> Iterator[None]:
    """Inside, a stop signal is recorded rather than raised where it lands: `raise_if_stop_requested` raises
    it (training calls it before every batch), and so does leaving the block.

    Raised where it lands, the KeyboardInterrupt can cut through TensorFlow's Python code half way (a
    `__del__` freeing a native object, an iterator being built): a train stage SIGTERM'd as an epoch began
    died of heap corruption ("malloc_consolidate(): invalid chunk size") before it could mark its run FAILED.
    """
    _at_safe_points.append(True)
    try:
        yield
    finally:
        _at_safe_points.pop()
    raise_if_stop_requested()


def raise_if_stop_requested() -> None:
    """Raise again a stop signal that Python swallowed.

    A signal whose handler runs inside a weakref callback or a `__del__` (TensorFlow
    and Keras have many) only prints "Exception ignored ... KeyboardInterrupt" and
    the stage would go on; training calls this at every batch so Ctrl-C always stops it.
    """
    if _stop_requested:
        raise KeyboardInterrupt(f"stopped by signal {_stop_requested[-1].name}")


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
        from cnnlab import backend  # imports Keras: only when a run really starts

        tags |= {"keras_backend": backend.name(), "device": backend.device()}
    if target:  # the report stage covers all experiments and has none
        tags[target_tag] = target
    exp = use_experiment(tracking_experiment, root)
    _stop_requested.clear()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:  # nohup or a background job asked for it to be ignored: keep that
            signal.signal(sig, _raise_on_signal)
    try:
        name = f"{stage}@{target}" if target else stage
        run = mlflow.start_run(run_id=run_id, experiment_id=exp, run_name=name, tags=tags)
        try:
            mlflow.log_params(flatten(params))
            yield run
        except BaseException:
            for sig in STOP_SIGNALS:  # a second stop request must not interrupt the bookkeeping
                signal.signal(sig, signal.SIG_IGN)
            _mark_failed(run.info.run_id)
            raise
        mlflow.end_run()
    finally:
        _stop_requested.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    """Log `model` to the active run as "model", its signature read from a prediction on `sample`."""
    import keras  # here, not at the top: the data stages log no model and do without Keras

    sample = sample.astype(np.float32)
    signature = infer_signature(sample, model.predict(sample, verbose=0))
    requirements = model_requirements(keras.backend.backend())
    return mlflow.keras.log_model(model, name="model", signature=signature, pip_requirements=requirements, **kwargs)
