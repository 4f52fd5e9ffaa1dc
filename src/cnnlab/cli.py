"""The `cnnlab` command: check params, list what is built in, open the MLflow UI on the project's store."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from cnnlab.config import ParamsError, load_params
from cnnlab.datasets import DATASETS
from cnnlab.models import MODELS
from cnnlab.tracking import ARTIFACTS_DIR, tracking_uri, use_experiment


def check(args: argparse.Namespace) -> int:
    """Validate params.yaml and say what `dvc repro` would run."""
    params = load_params(args.params)
    recipe = params.current
    print(
        f"params OK: experiment {params.experiment} ({recipe.model} on {recipe.dataset}), budget {params.budget}, "
        f"{recipe.epochs} epochs, batch {recipe.batch_size}, optimizer {recipe.optimizer.name}"
    )
    return 0


def show(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    print("experiments:")
    for name, exp in params.experiments.items():
        print(f"  {name:4} {exp.model:4} on {exp.dataset:14} {exp.description}")
    print("models:   ", ", ".join(MODELS))
    print("data sets:", ", ".join([*DATASETS, *params.data.custom]))
    return 0


def ui(args: argparse.Namespace) -> int:
    """`mlflow ui` on this project's tracking store and artifact folder."""
    root = Path.cwd()
    experiment = use_experiment(load_params(args.params).mlflow.experiment_name, root)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        tracking_uri(root),
        "--default-artifact-root",
        (root / ARTIFACTS_DIR).resolve().as_uri(),
        "--port",
        str(args.port),
    ]
    print("starting:", " ".join(command))
    # MLflow 3 opens on its GenAI view; this address goes straight to the training runs.
    print(f"open http://127.0.0.1:{args.port}/#/experiments/{experiment}/runs?workflowType=machine_learning")
    return subprocess.call(command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnnlab", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="path to params.yaml")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate params.yaml").set_defaults(run=check)
    commands.add_parser("list", help="experiments, models and data sets").set_defaults(run=show)
    ui_parser = commands.add_parser("ui", help="open the MLflow UI on this project's runs")
    ui_parser.add_argument("--port", type=int, default=5000)
    ui_parser.set_defaults(run=ui)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
