"""How much does an experiment's test accuracy move with the random seed?

Trains one experiment of params.yaml (on its budget) once per seed, on the
split the pipeline uses (held out with params.yaml's seed, so only the
training seed changes), and prints each test accuracy and their spread. Run
after `dvc repro preprocess@<data set>`:

    python scripts/seed_spread.py 42 1 2                        # F1, the seeds to try
    python scripts/seed_spread.py --experiment M2 --budget full 42 1 2

It is the one-experiment case of `cnnlab grid` (docs/scaling.md): the grid
`seeds-<experiment>[-<budget>]`, whose trainings are MLflow runs and whose
table is in reports/grid/<that name>/; run again, it trains only new seeds.
`cnnlab grid` runs several experiments at once, and on a Ray cluster.
"""

from __future__ import annotations

import argparse
import sys

from cnnlab.cli.commands import main as cnnlab
from cnnlab.params import BUDGETS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seeds", nargs="+")
    parser.add_argument("--experiment", default="F1", help="an experiment id of params.yaml (default F1)")
    parser.add_argument("--budget", choices=BUDGETS, help="default: the experiment's budget in params.yaml")
    args = parser.parse_args()
    name = f"seeds-{args.experiment}" + (f"-{args.budget}" if args.budget else "")
    budget = ["--budget", args.budget] if args.budget else []
    return cnnlab(["grid", name, "--experiments", args.experiment, "--seeds", *args.seeds, *budget])


if __name__ == "__main__":
    sys.exit(main())
