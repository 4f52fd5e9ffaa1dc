"""`cnnlab grid`: several experiments, each with several seeds, trained as their train stage would train them and
scored on the test set, as one MLflow run per training under one run for the grid, with a summary table.

A grid writes under reports/grid/<name>/ only: no DVC output changes, so `dvc status` is unchanged. A cell is one
(experiment, seed): the experiment's recipe on its budget (or the grid's), on the split the pipeline uses (held
out with params' seed, so only the training seed changes), its model seeded with the cell's seed. With params'
seed and the experiment's own budget, a cell trains exactly what `train@<id>` trains.

Resuming: each finished cell is recorded at once with the fingerprint of what its scores depend on; the same
grid run again trains only the cells without a record of the same fingerprint, reopens the grid's run, and
deletes the runs under it that no record owns (a training cut off, or one retried on another node).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from cnnlab.data.prepare import load_split, read_meta, training_splits
from cnnlab.data.splits import Arrays, subsample
from cnnlab.params import Budget, Experiment, Params, ParamsError
from cnnlab.params.studies import RayTasks
from cnnlab.pipeline import stage
from cnnlab.tracking.runs import stage_run, tracking_uri
from cnnlab.training.fit import progress_verbosity
from cnnlab.util.errors import UserError
from cnnlab.util.files import combined_hash
from cnnlab.workflows.grid.cells import GRID_TAG, CellJob, CellScore, cell_fingerprint
from cnnlab.workflows.grid.ledger import GridLedger
from cnnlab.workflows.grid.summary import write_summary
from cnnlab.workflows.grid.trainers import cell_trainer
from cnnlab.workflows.study.runs import discard_interrupted

log = logging.getLogger("cnnlab.grid")

GRID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # one folder name under reports/grid/
GRIDS = ("reports", "grid")  # under the project root; no stage writes there


def grid_folder(root: Path, name: str) -> Path:
    if not GRID_NAME.match(name):
        raise UserError(
            f"grid name {name!r}: use letters, digits, '_', '.' and '-', starting with a letter or digit "
            "(it names the folder reports/grid/<name>/)"
        )
    return root.joinpath(*GRIDS, name)


@dataclass(frozen=True)
class Cell:
    experiment: str
    seed: int
    budget: str
    recipe: Experiment
    fingerprint: str


@dataclass
class GridPlan:
    """A grid ready to run: its cells, their arrays, and the ledger of finished cells."""

    name: str
    folder: Path
    cells: list[Cell]
    classes: dict[str, list[str]]  # by data set
    splits: dict[str, tuple[Arrays, Arrays]]  # by experiment: its (train, validation) arrays
    tests: dict[str, Arrays]  # by data set
    data_hashes: dict[str, str]  # by data set
    ledger: GridLedger
    done: dict[tuple[str, int], CellScore] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        name: str,
        experiments: list[str],
        seeds: list[int],
        budget: Budget | None,
        params: Params,
        paths: stage.Paths,
    ) -> GridPlan:
        """Every check before any data is loaded (names, ids, the prepared data of every experiment), then the
        arrays of every experiment."""
        folder = grid_folder(paths.root, name)
        if GRIDS[1] in {*params.crossval, *params.ablation}:
            raise ParamsError(
                f"a study named {GRIDS[1]!r} writes reports/{GRIDS[1]}/ as a DVC output, where grids write; "
                "rename the study"
            )
        experiments, seeds = list(dict.fromkeys(experiments)), list(dict.fromkeys(seeds))
        if not experiments or not seeds:
            raise UserError("a grid needs at least one experiment and one seed")
        budgets: dict[str, Budget] = {e: budget or params.budget_of(e) for e in experiments}  # an unknown id fails here
        recipes = {e: params.experiment(e).recipe(budgets[e]) for e in experiments}
        datasets = list(dict.fromkeys(r.dataset for r in recipes.values()))
        classes = {d: read_meta(paths.prepared(d))["classes"] for d in datasets}  # missing data fails here
        data_hashes = {d: paths.data_hash(d) for d in datasets}
        splits = {}
        for exp_id, recipe in recipes.items():
            train, validation = training_splits(paths.prepared(recipe.dataset), recipe.validation, params.seed,
                                                recipe.stratify)  # fmt: skip
            samples = params.experiment(exp_id).train_samples(budgets[exp_id])
            splits[exp_id] = (subsample(*train, samples, params.seed), validation)
        tests = {d: load_split(paths.prepared(d) / "test.npz") for d in datasets}
        cells = []
        for exp_id in experiments:
            recipe, samples = recipes[exp_id], params.experiment(exp_id).train_samples(budgets[exp_id])
            for seed in seeds:
                fingerprint = cell_fingerprint(recipe, budgets[exp_id], seed, params.seed, samples,
                                               data_hashes[recipe.dataset])  # fmt: skip
                cells.append(Cell(exp_id, seed, budgets[exp_id], recipe, fingerprint))
        return cls(name, folder, cells, classes, splits, tests, data_hashes, GridLedger(folder))

    @property
    def budget_tag(self) -> str:
        return ",".join(dict.fromkeys(c.budget for c in self.cells))

    def pending(self) -> list[Cell]:
        """The cells without a finished record of the same fingerprint (the others go to `done`)."""
        left = []
        for cell in self.cells:
            score = self.ledger.finished(cell.experiment, cell.seed, cell.fingerprint)
            if score is None:
                left.append(cell)
            else:
                self.done[(cell.experiment, cell.seed)] = score
                log.info("%s seed %d: finished earlier (test accuracy %.4f), not retrained",
                         cell.experiment, cell.seed, score.test_accuracy)  # fmt: skip
        return left


@dataclass
class GridRun:
    scores: list[CellScore]  # in the grid's order: experiments, then seeds
    trained: int  # trainings run now (the rest were finished by an earlier run)
    wall_seconds: float
    outputs: list[Path]


def run(plan: GridPlan, params: Params, paths: stage.Paths, ray: RayTasks | None = None) -> GridRun:
    """Train the grid's pending cells (as Ray tasks that ask for `ray`'s resources, else one after another here),
    then write its summary."""
    mlflow.set_tracking_uri(tracking_uri(paths.root))  # where the grid's earlier run is looked up
    left = plan.pending()
    started = time.perf_counter()
    with cell_trainer(plan, ray) as trainer:
        if left:
            trainer.connect()  # an unreachable cluster fails before any run is opened
        logged = {"grid": plan.name}  # params cannot change on a reopened run: what a command asks for goes in tags
        data_hash = combined_hash(plan.data_hashes.values()) if len(plan.data_hashes) > 1 else (
            next(iter(plan.data_hashes.values())))  # fmt: skip
        with stage_run("grid", plan.name, target_tag=GRID_TAG, root=paths.root,
                       tracking_experiment=params.mlflow.experiment_name, budget=plan.budget_tag, data_hash=data_hash,
                       params=logged, run_id=plan.ledger.grid_run_id()) as grid_run:  # fmt: skip
            plan.ledger.remember_grid_run(grid_run.info.run_id)
            mlflow.set_tags({"experiments": " ".join(dict.fromkeys(c.experiment for c in plan.cells)),
                             "seeds": " ".join(dict.fromkeys(str(c.seed) for c in plan.cells)),
                             "executor": "ray" if ray else "local"})  # fmt: skip
            log.info("grid %s: %d trainings, %d left to train, %s", plan.name, len(plan.cells), len(left),
                     "as Ray tasks" if ray else "one at a time in this process")  # fmt: skip
            alone = ray is None
            jobs = [_job(plan, cell, grid_run, alone) for cell in left]
            for score in trainer.scores(jobs):
                plan.ledger.record(score)  # the cell's run has ended FINISHED: a record means a finished run
                plan.done[(score.experiment, score.seed)] = score
                log.info("%s seed %d: test accuracy %.4f, val accuracy %.4f (%.1f s); %d of %d done",
                         score.experiment, score.seed, score.test_accuracy, score.val_accuracy, score.seconds,
                         len(plan.done), len(plan.cells))  # fmt: skip
            # What an interruption, a retry on another node or a changed recipe left behind
            discard_interrupted(grid_run.info.run_id, plan.ledger.run_ids())
            scores = [plan.done[(c.experiment, c.seed)] for c in plan.cells]
            outputs = write_summary(plan.name, scores, plan.folder)
            for path in outputs:
                mlflow.log_artifact(str(path))
            wall = time.perf_counter() - started
            mlflow.log_metrics({"trainings": len(scores), "trainings_now": len(jobs), "wall_seconds": wall})
    return GridRun(scores, len(jobs), wall, outputs)


def _job(plan: GridPlan, cell: Cell, grid_run: mlflow.ActiveRun, alone: bool) -> CellJob:
    return CellJob(
        grid=plan.name,
        experiment=cell.experiment,
        seed=cell.seed,
        budget=cell.budget,
        recipe=cell.recipe,
        classes=plan.classes[cell.recipe.dataset],
        mlflow_experiment=grid_run.info.experiment_id,
        grid_run_id=grid_run.info.run_id,
        fingerprint=cell.fingerprint,
        verbose=progress_verbosity() if alone else 0,  # one training's progress is readable; several interleaved not
    )
