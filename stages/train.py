# ruff: noqa: E402  (cnnlab first: it quiets TensorFlow; then the stage hands itself to a warm worker)
"""train stage: fit one experiment of the registry and save the model, its history and curves."""

from __future__ import annotations

import cnnlab  # noqa: F401
from cnnlab.pipeline.warm import run_in_warm_worker

run_in_warm_worker(__file__)  # from here on, in a worker that has imported Keras and MLflow already
import keras  # noqa: F401  (Keras, and TensorFlow under it, load before MLflow's libraries, as always)

from cnnlab.params import Params
from cnnlab.pipeline import stage
from cnnlab.workflows.train import experiment_data, train_and_save


def main(params: Params, paths: stage.Paths, exp_id: str) -> None:
    train, validation, meta = experiment_data(params, paths, exp_id)
    recipe, budget = params.recipe(exp_id), params.budget_of(exp_id)
    train_and_save(params, paths, exp_id, recipe, train, validation, meta, budget)


if __name__ == "__main__":
    stage.run(main)
