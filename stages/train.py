# ruff: noqa: I001  (cnnlab is imported first: it quiets TensorFlow before TensorFlow loads)
"""train stage: fit one experiment of the registry and save the model, its history and curves."""

from __future__ import annotations

import cnnlab  # noqa: F401

from cnnlab import stage
from cnnlab.config import Params
from cnnlab.prepare import read_meta, training_splits
from cnnlab.splits import stratified_subsample
from cnnlab.train_run import train_and_save


def main(params: Params, paths: stage.Paths, exp_id: str) -> None:
    recipe, budget = params.recipe(exp_id), params.budget_of(exp_id)
    prepared = paths.prepared(recipe.dataset)
    meta = read_meta(prepared)
    (x_train, y_train), validation = training_splits(prepared, recipe.validation, params.seed, recipe.stratify)
    limit = params.train_samples(exp_id)
    if limit:
        keep = stratified_subsample(y_train, limit, params.seed)
        x_train, y_train = x_train[keep], y_train[keep]
    train_and_save(params, paths, exp_id, recipe, (x_train, y_train), validation, meta, budget)


if __name__ == "__main__":
    stage.run(main)
