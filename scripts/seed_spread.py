"""How much does an experiment's test accuracy move with the random seed?

Trains one experiment of params.yaml (on its budget) once per seed, on the
split the pipeline uses (held out with params.yaml's seed, so only the
training seed changes), and prints each test accuracy and their spread. Run
after `dvc repro preprocess@<data set>`:

    python scripts/seed_spread.py 42 1 2                        # F1, the seeds to try
    python scripts/seed_spread.py --experiment M2 --budget full 42 1 2
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import cnnlab  # noqa: F401  (quiets TensorFlow before it loads)
from cnnlab.data.prepare import load_split, read_meta, training_splits
from cnnlab.data.splits import subsample
from cnnlab.params import BUDGETS, load_params
from cnnlab.pipeline.stage import Paths
from cnnlab.training.evaluation import evaluate
from cnnlab.training.fit import fit, seeded_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--experiment", default="F1", help="an experiment id of params.yaml (default F1)")
    parser.add_argument("--budget", choices=BUDGETS, help="default: the experiment's budget in params.yaml")
    args = parser.parse_args()
    params = load_params()
    budget = args.budget or params.budget_of(args.experiment)
    recipe = params.experiment(args.experiment).recipe(budget)
    folder = Paths(Path.cwd()).prepared(recipe.dataset)
    classes = read_meta(folder)["classes"]
    train, validation = training_splits(folder, recipe.validation, params.seed, recipe.stratify)
    train = subsample(*train, params.experiment(args.experiment).train_samples(budget), params.seed)
    test = load_split(folder / "test.npz")
    scores = []
    for seed in args.seeds:
        model = seeded_model(recipe, train[0].shape[1:], len(classes), seed)
        result = fit(model, recipe, train, validation, len(classes), seed, verbose=0)
        accuracy = evaluate(result.model, *test, classes, recipe.loss_for(len(classes))).accuracy
        scores.append(accuracy)
        print(
            f"{args.experiment} ({budget}) seed {seed}: test accuracy {accuracy:.4f}, {result.seconds:.0f} s",
            flush=True,
        )
    if len(scores) > 1:
        print(
            f"mean {statistics.mean(scores):.4f}, sd {statistics.stdev(scores):.4f}, "
            f"range {min(scores):.4f}-{max(scores):.4f} over {len(scores)} seeds"
        )


if __name__ == "__main__":
    main()
