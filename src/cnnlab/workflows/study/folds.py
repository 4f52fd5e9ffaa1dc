"""One training of a study (a fold job) and where it runs: in this process, on spawned workers that share
the study's images through one memory-mapped file, or as Ray tasks (ray_executor.py, `executor: ray`)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import mlflow
import numpy as np

from cnnlab.params import Experiment
from cnnlab.params.studies import RayTasks
from cnnlab.pipeline import stage
from cnnlab.tracking.epochs import EpochsToMlflow
from cnnlab.training import backend
from cnnlab.training.fit import train_fold
from cnnlab.workflows.study.ledger import FoldScore
from cnnlab.workflows.study.runs import flat_recipe


@dataclass(frozen=True)
class FoldJob:
    """One training of a study, complete enough to run in another process: the arm's recipe, the fold's rows
    of the study's images, and the arm run its MLflow run goes under."""

    study_id: str
    arm: str
    fold: int
    recipe: Experiment
    train_index: np.ndarray
    val_index: np.ndarray
    classes: int
    seed: int
    experiment_id: str
    arm_run_id: str
    fingerprint: str
    verbose: int


def train_job(job: FoldJob, x: np.ndarray, y: np.ndarray, tags: dict[str, str] | None = None) -> FoldScore:
    """Train one fold as its own MLflow run under its arm's run (`tags` added to the run's), and score it."""
    train = (np.asarray(x[job.train_index]), y[job.train_index])
    val = (np.asarray(x[job.val_index]), y[job.val_index])
    sizes = {"train_samples": len(train[1]), "val_samples": len(val[1])}
    with mlflow.start_run(
        experiment_id=job.experiment_id,
        run_name=f"{job.study_id}/{job.arm}/fold{job.fold}",
        nested=True,
        parent_run_id=job.arm_run_id,
        tags={"arm": job.arm, "fold": str(job.fold), **(tags or {})},
    ) as run:
        mlflow.log_params({"arm": job.arm, "fold": job.fold, **sizes, **flat_recipe(job.recipe)})
        logged = [EpochsToMlflow()]
        final, epochs, seconds = train_fold(job.recipe, train, val, job.classes, job.seed, logged, job.verbose)
        mlflow.log_metrics({"fold_val_accuracy": final["val_accuracy"], "train_seconds": seconds})
    return FoldScore(
        arm=job.arm,
        fold=job.fold,
        val_accuracy=final["val_accuracy"],
        val_loss=final["val_loss"],
        train_accuracy=final["accuracy"],
        epochs=epochs,
        seconds=round(seconds, 2),
        run_id=run.info.run_id,
        fingerprint=job.fingerprint,
        **sizes,
    )


# A worker's view of the study's images (memory-mapped, shared with its siblings through the page cache).
_worker_arrays: dict[str, np.ndarray] = {}


def _open_arrays(folder: str, tracking_uri: str) -> None:
    stage.setup_logging()
    mlflow.set_tracking_uri(tracking_uri)
    for name in ("x", "y"):
        _worker_arrays[name] = np.load(Path(folder) / f"{name}.npy", mmap_mode="r")


def _train_in_worker(job: FoldJob) -> FoldScore:
    return train_job(job, _worker_arrays["x"], _worker_arrays["y"])


class Trainer(Protocol):
    """Where a study's fold jobs train: `scores` yields each job's score as its training finishes."""

    def __enter__(self) -> Trainer: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def scores(self, jobs: list[FoldJob]) -> Iterator[FoldScore]: ...


def fold_trainer(
    x: np.ndarray, y: np.ndarray, parallel: int, tasks: RayTasks | None
) -> AbstractContextManager[Trainer]:
    """Ray tasks when `tasks` says what each asks for (`executor: ray`), else this process or a local pool."""
    if tasks is None:
        return FoldTrainer(x, y, parallel)
    from cnnlab.workflows.study.ray_executor import RayTrainer  # Ray is an optional extra: imported only here

    return RayTrainer(x, y, tasks)


class FoldTrainer:
    """Trains fold jobs in this process one after another, or `parallel` at once on worker processes started
    at the first job (a resumed study with nothing left to train starts none)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, parallel: int):
        self.x, self.y, self.parallel = x, y, parallel
        self._pool: multiprocessing.pool.Pool | None = None
        self._stack = ExitStack()

    def __enter__(self) -> FoldTrainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()  # stops the workers, a training cut off included

    def _train_here(self, job: FoldJob) -> FoldScore:
        # In this process the fold run nests under the active run, so its arm's run is that while it trains
        with mlflow.start_run(run_id=job.arm_run_id, nested=True):
            return train_job(job, self.x, self.y)

    def scores(self, jobs: list[FoldJob]) -> Iterator[FoldScore]:
        """The jobs' scores in the order they finish."""
        if self.parallel == 1 or not jobs:
            return (self._train_here(job) for job in jobs)
        if self._pool is None:
            self._pool = self._stack.enter_context(training_pool(self.x, self.y, self.parallel))
        return self._pool.imap_unordered(_train_in_worker, jobs)


@contextmanager
def training_pool(x: np.ndarray, y: np.ndarray, workers: int) -> Iterator[multiprocessing.pool.Pool]:
    """`workers` spawned processes that train study folds; they read the images from one file, not a copy each.

    Spawned, not forked: a forked child would inherit the backend's threads and device state half-initialised.
    """
    with tempfile.TemporaryDirectory(prefix="cnnlab-study-") as folder:
        np.save(Path(folder) / "x.npy", x)
        np.save(Path(folder) / "y.npy", y)
        backend.share_the_device()
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_open_arrays, initargs=(folder, mlflow.get_tracking_uri())) as pool:
            yield pool
