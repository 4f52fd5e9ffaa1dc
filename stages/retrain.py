# ruff: noqa: I001, E402  (cnnlab first: it quiets TensorFlow; then the stage hands itself to a warm worker)
"""retrain stage: the best recipe a search found, trained on the whole training split for the epochs its best
score took, and saved as models/<search>.keras for the evaluate stage."""

from __future__ import annotations

import cnnlab  # noqa: F401
from cnnlab.pipeline.warm import run_in_warm_worker

run_in_warm_worker(__file__)  # from here on, in a worker that has imported Keras and MLflow already
import keras  # noqa: F401  (Keras, and TensorFlow under it, load before MLflow's libraries, as always)

import json

from cnnlab.pipeline import stage
from cnnlab.params import Experiment, Params
from cnnlab.data.prepare import load_split, read_meta
from cnnlab.data.splits import subsample
from cnnlab.workflows.train import train_and_save


def main(params: Params, paths: stage.Paths, search_id: str) -> None:
    params.search(search_id)  # an unknown id fails here, with the known ones
    best_file = paths.best_hparams(search_id)
    if not best_file.is_file():
        raise FileNotFoundError(f"{best_file} not found: run the search first (`dvc repro tune@{search_id}`)")
    recipe = Experiment.model_validate(json.loads(best_file.read_text())["recipe"])
    prepared = paths.prepared(recipe.dataset)
    x_train, y_train = load_split(prepared / "train.npz")  # the validation part the trials were scored on too
    budget = params.search_budget(search_id)
    train = subsample(x_train, y_train, params.train_samples(search_id), params.seed)
    train_and_save(params, paths, search_id, recipe, train, None, read_meta(prepared), budget, "retrain")


if __name__ == "__main__":
    stage.run(main)
