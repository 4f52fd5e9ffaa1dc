"""The best recipe a search found, trained on the whole training split for the epochs its best
score took, and saved as models/<search>.keras for the evaluate stage."""

from __future__ import annotations

import json

from cnnlab.data.prepare import load_split, read_meta
from cnnlab.data.splits import subsample
from cnnlab.params import Experiment, Params
from cnnlab.pipeline import stage
from cnnlab.workflows.train import train_and_save


def run(params: Params, paths: stage.Paths, search_id: str) -> None:
    params.search(search_id)  # an id that names no search fails here, with the known ones
    target = params.target(search_id)
    best_file = paths.best_hparams(search_id)
    if not best_file.is_file():
        raise FileNotFoundError(f"{best_file} not found: run the search first (`dvc repro tune@{search_id}`)")
    recipe = Experiment.model_validate(json.loads(best_file.read_text())["recipe"])
    prepared = paths.prepared(recipe.dataset)
    x_train, y_train = load_split(prepared / "train.npz")  # the validation part the trials were scored on too
    train = subsample(x_train, y_train, target.train_samples, params.seed)
    train_and_save(params, paths, search_id, recipe, train, None, read_meta(prepared), target.budget, "retrain")
