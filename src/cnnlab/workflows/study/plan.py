"""A study ready to run: its arms, the folds they share, the fingerprint of what decides a score, and the
training of every arm on every fold.

A study: every arm trained and scored on the same k folds, as nested MLflow runs, resumable.

MLflow: the stage's run (`crossval@C3`) is the parent, each arm a child (`C3/dropout`), each fold a
grandchild (`C3/dropout/fold2`) with its own params and per-epoch metrics.

Trainings at once (`parallel`): the trainings of every arm can run side by side in worker processes
(spawned, so each has its own backend state), which keeps a GPU busy with models too small to fill it; with
`executor: ray` they run as tasks on a Ray cluster (ray_executor.py). Every training is seeded alone, so a
fold's score is the same whichever way it ran.

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
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import RunInfo

from cnnlab.data.prepare import load_prepared
from cnnlab.data.splits import Fold, kfold_splits, subsample
from cnnlab.lineage.code_digest import code_digest
from cnnlab.params import Experiment, Params, ParamsError
from cnnlab.params.studies import RayTasks
from cnnlab.pipeline import stage
from cnnlab.training.fit import progress_verbosity
from cnnlab.util.files import combined_hash
from cnnlab.workflows.study.folds import FoldJob, fold_trainer
from cnnlab.workflows.study.ledger import FoldScore, Ledger, StudyRun
from cnnlab.workflows.study.runs import discard_interrupted, flat_recipe, log_fold_means, nested_run

log = logging.getLogger("cnnlab.study")


# The code that trains and scores a fold (with all it imports) and cuts its data: editing a plot, the tables,
# the MLflow logging or the command line keeps the finished trainings.
FOLD_CODE = ("cnnlab.training.fit", "cnnlab.data.splits")


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
    return combined_hash([kind, recipes, cuts, str(seed), data_hash, code_digest(*FOLD_CODE)])


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
        target, study, arms = params.target(study_id), params.study(study_id), params.study_arms(study_id)
        dataset = next(iter(arms.values())).dataset
        prepared = load_prepared(paths.prepared(dataset))
        x, y = prepared.splits["train"]  # the folds are cut from the training split; the test set is not used
        x, y = subsample(x, y, target.train_samples, params.seed)
        spec = study.folds_for(target.budget)
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

    def train_all(self, seed: int, parallel: int = 1, ray: RayTasks | None = None) -> StudyRun:
        """Train every arm on every fold, skipping what an interrupted run finished (inside `parent_run`): on Ray
        tasks that ask for `ray`'s resources, else here or with up to `parallel` trainings at once."""
        parent = mlflow.active_run()
        assert parent is not None, "train_all runs inside parent_run()"
        self.ledger.remember("parent", parent.info.run_id)
        parallel = max(1, min(parallel, len(self.folds)))
        log.info(
            "%s: %d arms x %d folds = %d trainings on %d %s images, %d epochs each, %s",
            *(self.study_id, len(self.arms), len(self.folds), self.total, len(self.y), self.dataset),
            next(iter(self.arms.values())).epochs,
            "as Ray tasks" if ray else f"{parallel} at once",
        )
        one_at_a_time = ray is None and parallel == 1
        done: dict[tuple[str, int], FoldScore] = {}
        jobs: list[FoldJob] = []
        arm_runs = {
            arm: self._open_arm(arm, recipe, seed, one_at_a_time, done, jobs) for arm, recipe in self.arms.items()
        }
        trained, train_seconds, started = 0, 0.0, time.perf_counter()
        # Every arm's trainings at once: a pool or a cluster never waits for an arm's slowest fold
        with fold_trainer(self.x, self.y, parallel, ray) as trainer:
            for score in trainer.scores(jobs):
                self.ledger.record(score)  # the fold's run has ended FINISHED: a record means a finished run
                done[(score.arm, score.fold)] = score
                trained, train_seconds = trained + 1, train_seconds + score.seconds
                self._progress(len(done), trained, time.perf_counter() - started, score)
        scores = [done[(arm, fold)] for arm in self.arms for fold in range(1, len(self.folds) + 1)]
        for arm, run_id in arm_runs.items():
            with nested_run(f"{self.study_id}/{arm}", {"arm": arm}, run_id=run_id):
                fold_runs = [s.run_id for s in scores if s.arm == arm]
                # What an interruption, or a training retried on another node, left behind
                discard_interrupted(run_id, set(fold_runs))
                log_fold_means(run_id, fold_runs)
        result = StudyRun(scores, trained, train_seconds, time.perf_counter() - started)
        mlflow.log_metrics(
            {"trainings_now": trained, "trainings_per_minute": result.trainings_per_minute,
             "wall_seconds": result.wall_seconds, "trainings_at_once": parallel}
        )  # fmt: skip
        return result

    def _open_arm(
        self,
        arm: str,
        recipe: Experiment,
        seed: int,
        one_at_a_time: bool,
        done: dict[tuple[str, int], FoldScore],
        jobs: list[FoldJob],
    ) -> str:
        """The arm's MLflow run (the interrupted one if there is one): its finished trainings go to `done`, the
        rest to `jobs`. Returns the run's id."""
        arm_id = self.ledger.run_id(arm)
        with nested_run(f"{self.study_id}/{arm}", {"arm": arm}, run_id=arm_id) as run:
            if arm_id is None:
                mlflow.log_params({"arm": arm, **flat_recipe(recipe)})
            self.ledger.remember(arm, run.info.run_id)
            for fold in range(1, len(self.folds) + 1):
                score = self.ledger.finished(arm, fold)
                if score is None:
                    jobs.append(self._job(arm, fold, recipe, run.info, seed, one_at_a_time))
                else:
                    done[(arm, fold)] = score
                    log.info("%s %s fold %d: finished earlier (%.4f), not retrained",
                             self.study_id, arm, fold, score.val_accuracy)  # fmt: skip
        return run.info.run_id

    def _job(self, arm: str, fold: int, recipe: Experiment, arm_run: RunInfo, seed: int, alone: bool) -> FoldJob:
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
            # One training's progress is readable; several interleaved are not
            verbose=progress_verbosity() if alone else 0,
        )

    def _progress(self, position: int, trained: int, elapsed: float, score: FoldScore) -> None:
        left = (self.total - position) * elapsed / trained
        log.info(
            "%s %s fold %d: val accuracy %.4f (%.1f s); %d of %d done, about %.1f min left",
            *(self.study_id, score.arm, score.fold, score.val_accuracy, score.seconds, position, self.total),
            left / 60,
        )
