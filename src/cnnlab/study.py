"""Run a study: every arm trained and scored on the same k folds, as nested MLflow runs, resumable.

MLflow: the stage's run (`crossval@C3`) is the parent, each arm a child (`C3/dropout`), each fold a
grandchild (`C3/dropout/fold2`) with its own params and per-epoch metrics.

Trainings at once (`parallel`): the folds of an arm can train side by side in worker processes (spawned, so
each has its own backend state), which keeps a GPU busy with models too small to fill it. Every training is
seeded alone, so a fold's score is the same whichever way it ran.

Resuming: every finished training is recorded at once in `folds/<study>/<arm>/fold<i>.json` (written
atomically), with a fingerprint of everything its score depends on: the arms' recipes, folds, seed,
sample count, data and code. An interrupted study run again with the same fingerprint skips the finished
trainings, reopens its parent and arm runs instead of starting new ones, and deletes the run of the
training that was cut off, so MLflow ends with exactly one finished run per arm and fold. A changed
study starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import multiprocessing.pool
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras  # noqa: F401  (a worker process imports this module first: TensorFlow loads before MLflow)
import mlflow
import numpy as np
from mlflow.entities import RunInfo

from cnnlab import backend, stage
from cnnlab.code_digest import code_digest
from cnnlab.config import Experiment, Params, ParamsError
from cnnlab.files import combined_hash, write_json
from cnnlab.prepare import load_prepared
from cnnlab.splits import Fold, kfold_splits, subsample
from cnnlab.tracking import child_runs, flatten
from cnnlab.training import Arrays, EpochsToMlflow, fit, seeded_model

log = logging.getLogger("cnnlab.study")
RUNS_FILE = "runs.json"
# The code that trains and scores a fold (this module, with all it imports): editing a plot, the study's tables
# or the command line keeps the finished trainings.
FOLD_CODE = __name__


@dataclass(frozen=True)
class FoldScore:
    """One arm trained on one fold's training part and scored on its held-out part."""

    arm: str
    fold: int  # 1-based
    val_accuracy: float
    val_loss: float
    train_accuracy: float
    train_samples: int
    val_samples: int
    epochs: int
    seconds: float
    run_id: str
    fingerprint: str


@dataclass
class StudyRun:
    """What a study run produced: its scores in arm and fold order, and how long the new trainings took."""

    scores: list[FoldScore]
    trained: int  # trainings run now (the rest were finished by an earlier, interrupted run)
    train_seconds: float
    wall_seconds: float

    @property
    def trainings_per_minute(self) -> float:
        return 60 * self.trained / self.wall_seconds if self.trained else 0.0


class Ledger:
    """The finished trainings of one study and the MLflow runs they belong to."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = folder, fingerprint
        self.runs: dict[str, Any] = {}
        runs_file = folder / RUNS_FILE
        if runs_file.is_file():
            recorded = json.loads(runs_file.read_text())
            if recorded.get("fingerprint") == fingerprint:
                self.runs = recorded
            else:
                log.info("%s: the study changed since its trainings were recorded; starting afresh", folder.name)
                self._clear()

    def _clear(self) -> None:
        for path in self.folder.rglob("*.json"):
            path.unlink()

    def _fold_path(self, arm: str, fold: int) -> Path:
        return self.folder / arm / f"fold{fold}.json"

    def finished(self, arm: str, fold: int) -> FoldScore | None:
        path = self._fold_path(arm, fold)
        if not path.is_file():
            return None
        score = FoldScore(**json.loads(path.read_text()))
        return score if score.fingerprint == self.fingerprint else None

    def record(self, score: FoldScore) -> None:
        write_json(self._fold_path(score.arm, score.fold), asdict(score))

    def run_id(self, key: str) -> str | None:
        """The MLflow run recorded for `key` ('parent' or an arm), if it still exists and is not deleted."""
        run_id = self.runs.get("parent") if key == "parent" else self.runs.get("arms", {}).get(key)
        if not run_id:
            return None
        try:
            found = mlflow.MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException:
            return None
        return run_id if found.info.lifecycle_stage == "active" else None

    def remember(self, key: str, run_id: str) -> None:
        runs = {"fingerprint": self.fingerprint, "parent": self.runs.get("parent"), "arms": self.runs.get("arms", {})}
        if key == "parent":
            runs["parent"] = run_id
        else:
            runs["arms"] = {**runs["arms"], key: run_id}
        self.runs = runs
        write_json(self.folder / RUNS_FILE, runs)


def check_every_fold_sees_every_class(folds: list[Fold], y: np.ndarray, classes: list[str], where: str) -> None:
    """Refuse folds whose training part lacks a class: unshuffled folds of class-sorted data (image folders are
    read class by class) would score a model on classes it never saw."""
    for number, (train_index, _) in enumerate(folds, start=1):
        missing = sorted(set(range(len(classes))) - set(np.unique(y[train_index]).tolist()))
        if missing:
            names = ", ".join(str(classes[i]) for i in missing)
            raise ParamsError(
                f"{where}: fold {number} would train on no image of class {names}: the training split is ordered "
                f"by class, so unshuffled folds cut whole classes out; set `folds: {{shuffle: true, stratify: true}}`"
            )


def study_fingerprint(kind: str, arms: dict[str, Experiment], folds: list[Fold], seed: int, data_hash: str) -> str:
    recipes = json.dumps({a: r.model_dump(mode="json") for a, r in arms.items()}, sort_keys=True)
    cuts = hashlib.sha256(b"".join(val.astype(np.int64).tobytes() + b"|" for _, val in folds)).hexdigest()
    return combined_hash([kind, recipes, cuts, str(seed), data_hash, code_digest(FOLD_CODE)])


@dataclass
class StudyPlan:
    """A study ready to run: its arms, the data and folds they share, and the ledger of finished trainings."""

    kind: str  # the stage: crossval or ablation
    study_id: str
    arms: dict[str, Experiment]
    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    dataset: str
    folds: list[Fold]
    data_hash: str
    ledger: Ledger

    @classmethod
    def make(cls, kind: str, study_id: str, params: Params, paths: stage.Paths) -> StudyPlan:
        study, budget, arms = params.study(study_id), params.study_budget(study_id), params.study_arms(study_id)
        dataset = next(iter(arms.values())).dataset
        prepared = load_prepared(paths.prepared(dataset))
        x, y = prepared.splits["train"]  # the folds are cut from the training split; the test set is not used
        x, y = subsample(x, y, params.train_samples(study_id), params.seed)
        spec = study.folds_for(budget)
        folds = kfold_splits(y, spec.k, spec.shuffle, spec.stratify, params.seed)
        check_every_fold_sees_every_class(folds, y, prepared.classes, f"{kind}.{study_id}")
        data_hash = paths.data_hash(dataset)
        ledger = Ledger(paths.folds(study_id), study_fingerprint(kind, arms, folds, params.seed, data_hash))
        return cls(kind, study_id, arms, x, y, prepared.classes, dataset, folds, data_hash, ledger)

    @property
    def total(self) -> int:
        return len(self.arms) * len(self.folds)

    def parent_run(
        self, params: Params, paths: stage.Paths, logged: dict[str, Any]
    ) -> AbstractContextManager[mlflow.ActiveRun]:
        """The stage's MLflow run: the interrupted one reopened if there is one, else a new one."""
        return stage.mlflow_run(
            self.kind, self.study_id, params, paths, self.data_hash, logged, run_id=self.ledger.run_id("parent")
        )

    def train_all(self, seed: int, parallel: int = 1) -> StudyRun:
        """Train every arm on every fold, skipping what an interrupted run finished (inside `parent_run`), with up
        to `parallel` folds of an arm training at once."""
        parent = mlflow.active_run()
        assert parent is not None, "train_all runs inside parent_run()"
        self.ledger.remember("parent", parent.info.run_id)
        parallel = max(1, min(parallel, len(self.folds)))
        log.info(
            "%s: %d arms x %d folds = %d trainings on %d %s images, %d epochs each, %d at once",
            *(self.study_id, len(self.arms), len(self.folds), self.total, len(self.y), self.dataset),
            next(iter(self.arms.values())).epochs,
            parallel,
        )
        scores: list[FoldScore] = []
        trained, train_seconds, started = 0, 0.0, time.perf_counter()
        with FoldTrainer(self.x, self.y, parallel) as trainer:
            for arm, recipe in self.arms.items():
                arm_id = self.ledger.run_id(arm)
                with nested_run(f"{self.study_id}/{arm}", {"arm": arm}, run_id=arm_id) as run:
                    if arm_id is None:
                        mlflow.log_params({"arm": arm, **flat_recipe(recipe)})
                    self.ledger.remember(arm, run.info.run_id)
                    done = {fold: self.ledger.finished(arm, fold) for fold in range(1, len(self.folds) + 1)}
                    _discard_interrupted(run.info.run_id, {s.run_id for s in done.values() if s})
                    for fold, score in done.items():
                        if score is not None:
                            log.info("%s %s fold %d: finished earlier (%.4f), not retrained",
                                     self.study_id, arm, fold, score.val_accuracy)  # fmt: skip
                    jobs = [self._job(arm, fold, recipe, run.info, seed, parallel) for fold, s in done.items() if not s]
                    for score in trainer.scores(jobs):
                        self.ledger.record(score)  # the fold's run has ended FINISHED: a record means a finished run
                        done[score.fold] = score
                        trained, train_seconds = trained + 1, train_seconds + score.seconds
                        finished_now = len(scores) + sum(1 for s in done.values() if s)
                        self._progress(finished_now, trained, time.perf_counter() - started, score)
                    arm_scores = [s for s in done.values() if s]
                    scores.extend(arm_scores)
                    log_fold_means(run.info.run_id, [s.run_id for s in arm_scores])
        result = StudyRun(scores, trained, train_seconds, time.perf_counter() - started)
        mlflow.log_metrics(
            {"trainings_now": trained, "trainings_per_minute": result.trainings_per_minute,
             "wall_seconds": result.wall_seconds, "trainings_at_once": parallel}
        )  # fmt: skip
        return result

    def _job(self, arm: str, fold: int, recipe: Experiment, arm_run: RunInfo, seed: int, parallel: int) -> FoldJob:
        train_index, val_index = self.folds[fold - 1]
        return FoldJob(
            study_id=self.study_id,
            arm=arm,
            fold=fold,
            recipe=recipe,
            train_index=train_index,
            val_index=val_index,
            classes=len(self.classes),
            seed=seed + fold,
            experiment_id=arm_run.experiment_id,
            arm_run_id=arm_run.run_id,
            fingerprint=self.ledger.fingerprint,
            verbose=2 if parallel == 1 else 0,  # one training's epochs are readable; several interleaved are not
        )

    def _progress(self, position: int, trained: int, elapsed: float, score: FoldScore) -> None:
        left = (self.total - position) * elapsed / trained
        log.info(
            "%s %s fold %d: val accuracy %.4f (%.1f s); %d of %d done, about %.1f min left",
            *(self.study_id, score.arm, score.fold, score.val_accuracy, score.seconds, position, self.total),
            left / 60,
        )


def nested_run(name: str, tags: dict[str, str], run_id: str | None = None) -> mlflow.ActiveRun:
    """A child of the active run, in the active run's MLflow experiment (not the default one)."""
    parent = mlflow.active_run()
    assert parent is not None
    return mlflow.start_run(
        run_id=run_id, experiment_id=parent.info.experiment_id, run_name=name, nested=True, tags=tags
    )


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


def train_job(job: FoldJob, x: np.ndarray, y: np.ndarray) -> FoldScore:
    """Train one fold as its own MLflow run under its arm's run, and score it."""
    train = (np.asarray(x[job.train_index]), y[job.train_index])
    val = (np.asarray(x[job.val_index]), y[job.val_index])
    sizes = {"train_samples": len(train[1]), "val_samples": len(val[1])}
    with mlflow.start_run(
        experiment_id=job.experiment_id,
        run_name=f"{job.study_id}/{job.arm}/fold{job.fold}",
        nested=True,
        parent_run_id=job.arm_run_id,
        tags={"arm": job.arm, "fold": str(job.fold)},
    ) as run:
        mlflow.log_params({"arm": job.arm, "fold": job.fold, **sizes, **flat_recipe(job.recipe)})
        final, epochs, seconds = train_fold(job.recipe, train, val, job.classes, job.seed, job.verbose)
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

    def scores(self, jobs: list[FoldJob]) -> Iterator[FoldScore]:
        """The jobs' scores in the order they finish."""
        if self.parallel == 1 or not jobs:
            return (train_job(job, self.x, self.y) for job in jobs)
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


def _discard_interrupted(arm_run_id: str, kept: set[str]) -> None:
    """Delete the fold runs under an arm that no finished training owns (cut off by an interruption)."""
    client = mlflow.MlflowClient()
    for child in child_runs(arm_run_id):
        if child.info.run_id not in kept:
            log.info("discarding the interrupted run %s (%s)", child.info.run_name, child.info.status)
            client.delete_run(child.info.run_id)


def train_fold(
    recipe: Experiment, train: Arrays, val: Arrays, classes: int, seed: int, verbose: int = 2
) -> tuple[dict[str, float], int, float]:
    """Fit a fresh model on the fold's training part only; its last epoch is scored on the held-out part."""
    model = seeded_model(recipe, train[0].shape[1:], classes, seed)
    result = fit(model, recipe, train, val, classes, seed, [EpochsToMlflow()], verbose=verbose)
    return result.at_kept_epoch(), result.epochs_run, result.seconds


def flat_recipe(recipe: Experiment) -> dict[str, Any]:
    return flatten(recipe.model_dump(mode="json", exclude={"budgets", "budget", "description"}))
