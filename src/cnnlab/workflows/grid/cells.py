"""One cell of an experiment grid: an experiment trained with one seed as its train stage would, scored on the
test set as its evaluate stage would, and logged as one MLflow run under the grid's run."""

from __future__ import annotations

import json
from dataclasses import dataclass

import mlflow

from cnnlab.data.splits import Arrays
from cnnlab.lineage.code_digest import code_digest
from cnnlab.params import Experiment
from cnnlab.tracking.epochs import EpochsToMlflow
from cnnlab.training.evaluation import evaluate
from cnnlab.training.fit import fit, seeded_model
from cnnlab.training.precision import float32_copy
from cnnlab.util.files import combined_hash
from cnnlab.workflows.study.runs import flat_recipe

GRID_TAG = "grid"  # on the grid's run and on each cell's run: the grid's name
# The code that cuts a cell's data, trains it and scores it (with all it imports): editing a plot, the tables,
# the MLflow logging or the command line keeps the finished cells.
CELL_CODE = ("cnnlab.data.prepare", "cnnlab.data.splits", "cnnlab.training.fit", "cnnlab.training.evaluation",
             "cnnlab.training.precision")  # fmt: skip


@dataclass(frozen=True)
class CellJob:
    """One training of a grid, complete enough to run in another process (its arrays travel beside it)."""

    grid: str
    experiment: str
    seed: int
    budget: str
    recipe: Experiment
    classes: list[str]
    mlflow_experiment: str  # the MLflow experiment's id (the grid run's)
    grid_run_id: str  # given explicitly: a Ray worker has no active run to nest under
    fingerprint: str
    verbose: int


@dataclass(frozen=True)
class CellScore:
    """A finished cell: its scores, sizes and run (what the ledger records and the summary shows)."""

    experiment: str
    seed: int
    budget: str
    test_accuracy: float
    test_loss: float
    val_accuracy: float
    train_accuracy: float
    epochs: int
    seconds: float
    train_samples: int
    val_samples: int
    test_samples: int
    run_id: str
    fingerprint: str


def cell_fingerprint(recipe: Experiment, budget: str, seed: int, split_seed: int, samples: int | None,
                     data_hash: str) -> str:  # fmt: skip
    """What a cell's scores depend on: the recipe on its budget, both seeds, the subsample, the data, the code."""
    parts = {"recipe": json.dumps(recipe.model_dump(mode="json"), sort_keys=True), "budget": budget,
             "seed": seed, "split_seed": split_seed, "train_samples": samples, "data": data_hash,
             "code": code_digest(*CELL_CODE)}  # fmt: skip
    return combined_hash(f"{key}={value}" for key, value in parts.items())


def train_cell(job: CellJob, train: Arrays, validation: Arrays, test: Arrays, tags: dict[str, str] | None = None
               ) -> CellScore:  # fmt: skip
    """Train the cell's model (seeded with the cell's seed) and score its kept epoch on `validation` and the saved
    model's float32 copy on `test`, in a run of its own under the grid's run (`tags` added to the run's)."""
    sizes = {"train_samples": len(train[1]), "val_samples": len(validation[1]), "test_samples": len(test[1])}
    loss = job.recipe.loss_for(len(job.classes))
    with mlflow.start_run(
        experiment_id=job.mlflow_experiment,
        run_name=f"{job.grid}/{job.experiment}/seed{job.seed}",
        nested=True,
        parent_run_id=job.grid_run_id,
        tags={GRID_TAG: job.grid, "experiment_id": job.experiment, "seed": str(job.seed), "budget": job.budget,
              **(tags or {})},
    ) as run:  # fmt: skip
        mlflow.log_params({"experiment": job.experiment, "seed": job.seed, "budget": job.budget, **sizes,
                           **flat_recipe(job.recipe)})  # fmt: skip
        model = seeded_model(job.recipe, train[0].shape[1:], len(job.classes), job.seed)
        result = fit(model, job.recipe, train, validation, len(job.classes), job.seed, [EpochsToMlflow()],
                     verbose=job.verbose)  # fmt: skip
        kept = result.at_kept_epoch()
        scored = evaluate(float32_copy(result.model), *test, job.classes, loss)  # as the evaluate stage scores it
        mlflow.log_metrics({"test_accuracy": scored.accuracy, "test_loss": scored.loss,
                            "val_accuracy": kept["val_accuracy"], "train_accuracy": kept["accuracy"],
                            "train_seconds": result.seconds, "epochs_run": result.epochs_run})  # fmt: skip
    return CellScore(
        experiment=job.experiment,
        seed=job.seed,
        budget=job.budget,
        test_accuracy=scored.accuracy,
        test_loss=scored.loss,
        val_accuracy=kept["val_accuracy"],
        train_accuracy=kept["accuracy"],
        epochs=result.epochs_run,
        seconds=round(result.seconds, 2),
        run_id=run.info.run_id,
        fingerprint=job.fingerprint,
        **sizes,
    )
