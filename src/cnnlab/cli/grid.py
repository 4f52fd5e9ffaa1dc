"""`cnnlab grid NAME --experiments ID... [--seeds SEED...]`: experiments x seeds, each trained as its train stage
would and scored on the test set, as MLflow runs under one grid run, on Ray when RAY_ADDRESS is set; the summary
in reports/grid/<name>/, where no DVC output is (docs/scaling.md)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from cnnlab.params import BUDGETS, load_params
from cnnlab.params.studies import RayTasks


def _number(minimum: float, above: bool, auto: bool = False) -> Any:
    """An argparse type: a number of at least `minimum` (above it if `above`), or 'auto' where `auto`."""

    def parse(text: str) -> float | str:
        if auto and text == "auto":
            return text
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (value > minimum if above else value >= minimum):
            raise argparse.ArgumentTypeError(
                f"{text!r}: give a number {'above' if above else 'of at least'} {minimum:g}{' or auto' if auto else ''}"
            )
        return value

    return parse


def _retries(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of 0 or more")
    return int(text)


def ray_tasks(args: argparse.Namespace) -> RayTasks | None:
    """What each training asks a Ray cluster for; None for the local executor (the default without RAY_ADDRESS)."""
    executor = args.executor or ("ray" if os.environ.get("RAY_ADDRESS") else "local")
    if executor == "local":
        return None
    return RayTasks(num_cpus=args.cpus_per_training, num_gpus=args.gpus_per_training, max_retries=args.max_retries)


def grid(args: argparse.Namespace) -> int:
    """Run the grid, print each experiment's spread over its seeds and where the summary is."""
    from cnnlab.pipeline import stage
    from cnnlab.workflows.grid import plan as grids
    from cnnlab.workflows.grid.summary import spread_lines

    stage.setup_logging()
    try:
        params = load_params(args.params)
        paths = stage.Paths(Path.cwd().resolve())
        tasks = ray_tasks(args)
        seeds = args.seeds or [params.seed]
        plan = grids.GridPlan.make(args.name, args.experiments, seeds, args.budget, params, paths)
        done = grids.run(plan, params, paths, tasks)
    except stage.USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(spread_lines(done.scores)))
    folder = plan.folder.relative_to(paths.root)
    print(f"{done.trained} trained now, {len(done.scores) - done.trained} finished earlier; wrote {folder}/: "
          + ", ".join(p.name for p in done.outputs))  # fmt: skip
    return 0


def register(commands: Any) -> None:
    """Add `grid` to `cnnlab`'s subcommands."""
    parser = commands.add_parser(
        "grid", help="train experiments x seeds (on Ray with RAY_ADDRESS), one MLflow run each; reports/grid/<name>/"
    )
    parser.add_argument("name", help="the grid's name: its folder reports/grid/<name>/ (the same name resumes)")
    parser.add_argument("--experiments", nargs="+", required=True, metavar="ID", help="experiment ids of params.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="training seeds (default: params' seed)")
    parser.add_argument("--budget", choices=BUDGETS, help="for every experiment (default: each one's own budget)")
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        help="ray: each training a Ray task on the cluster at $RAY_ADDRESS, or on a Ray started here when it is "
        "unset; local: one training at a time in this process (default: ray when RAY_ADDRESS is set, else local)",
    )
    parser.add_argument(
        "--cpus-per-training",
        type=_number(0, above=True),
        default=1.0,
        metavar="N",
        help="Ray: CPUs each task asks for (1)",
    )
    parser.add_argument(
        "--gpus-per-training",
        type=_number(0, above=False, auto=True),
        default="auto",
        metavar="N",
        help="Ray: GPUs each task asks for (auto: 1 on a cluster with GPUs)",
    )
    parser.add_argument(
        "--max-retries", type=_retries, default=3, metavar="N", help="Ray: reruns of a task cut off by a lost node (3)"
    )
    parser.set_defaults(run=grid)
