"""How much does an experiment's test accuracy move with the random seed?

Trains the configured experiment (params.yaml, its budget) once per seed on the
prepared split that `dvc repro` made, and prints each test accuracy and their
spread. Run after `dvc repro preprocess`:

    python scripts/seed_spread.py 42 1 2          # the seeds to try
    python scripts/seed_spread.py --budget full 42 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import cnnlab  # noqa: F401  (quiets TensorFlow before it loads)
from cnnlab.config import load_params
from cnnlab.evaluation import evaluate
from cnnlab.prepare import load_split
from cnnlab.stage import Paths
from cnnlab.training import fit, seeded_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--budget", choices=["quick", "full"], help="default: the budget in params.yaml")
    args = parser.parse_args()
    params = load_params()
    budget = args.budget or params.budget
    recipe = params.experiments[params.experiment].recipe(budget)
    folder = Paths(Path.cwd()).prepared(recipe.dataset)
    classes = json.loads((folder / "meta.json").read_text())["classes"]
    train, test = load_split(folder / "train.npz"), load_split(folder / "test.npz")
    validation = test if recipe.validation == "test" else load_split(folder / "val.npz")
    scores = []
    for seed in args.seeds:
        model = seeded_model(recipe, train[0].shape[1:], len(classes), seed)
        result = fit(model, recipe, train, validation, len(classes), seed, verbose=0)
        accuracy = evaluate(result.model, *test, classes, recipe.loss_for(len(classes))).accuracy
        scores.append(accuracy)
        print(
            f"{params.experiment} ({budget}) seed {seed}: test accuracy {accuracy:.4f}, {result.seconds:.0f} s",
            flush=True,
        )
    if len(scores) > 1:
        print(
            f"mean {statistics.mean(scores):.4f}, sd {statistics.stdev(scores):.4f}, "
            f"range {min(scores):.4f}-{max(scores):.4f} over {len(scores)} seeds"
        )


if __name__ == "__main__":
    main()
