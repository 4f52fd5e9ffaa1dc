"""`cnnlab grid`: experiments x seeds trained as their train stage would, one finished MLflow run per cell under
the grid's run, a summary in reports/grid/<name>/ and nothing else written, resuming, errors before any training,
and the same scores as Ray tasks."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from cnnlab.cli.commands import main as cnnlab
from cnnlab.data.prepare import load_split
from helpers.project import free_port, prepared_project

EXPERIMENT = "grid-test"  # the MLflow experiment of the tests' projects
CELL_METRICS = ["test_accuracy", "val_accuracy"]


def two_fashion_experiments(raw: dict) -> None:
    """F0 (a dense network) and F1 (a CNN) on Fashion-MNIST, two epochs each; nothing else to validate."""
    raw["datasets"] = ["fashion_mnist"]
    raw["mlflow"]["experiment_name"] = EXPERIMENT
    raw["experiments"] = {e: raw["experiments"][e] for e in ("F0", "F1")}
    for recipe in raw["experiments"].values():
        recipe["budgets"]["quick"]["epochs"] = 2
    raw["crossval"], raw["ablation"], raw["tune"] = {}, {}, {}
    raw["finetune"]["run"] = []


def project(root: Path, fashion: dict, edit: Callable[[dict], None] = two_fashion_experiments) -> Path:
    """A prepared project of 500 Fashion-MNIST training and 200 test images; its MLflow artifacts kept outside it,
    so that every file a grid writes in the project is its own."""
    root.mkdir()
    prepared_project(root, fashion, edit, 500, 200)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=(root.parent / "artifacts").as_uri())
    return root


def grid(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.chdir(root)
    return cnnlab(["grid", *args])


def files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def summary(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / "reports" / "grid" / name / "summary.csv")


def runs_of(name: str) -> tuple[pd.Series, pd.DataFrame]:
    """The grid's own run, and the cell runs under it (deleted runs are not listed)."""
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string=f"tags.grid = '{name}'")
    (parent,) = [row for _, row in runs.iterrows() if row["tags.stage"] == "grid"]
    return parent, runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]


def scores(table: pd.DataFrame) -> dict[tuple[str, int], tuple[float, ...]]:
    return {(r.experiment, int(r.seed)): tuple(getattr(r, m) for m in CELL_METRICS) for r in table.itertuples()}


def test_a_grid_logs_one_run_per_cell_writes_only_its_folder_and_resumes(
    tmp_path: Path, fashion: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = project(tmp_path / "project", fashion)
    before = files(root)
    caplog.set_level(logging.INFO, logger="cnnlab.grid")
    assert grid(root, monkeypatch, "first", "--experiments", "F0", "F1", "--seeds", "1", "2") == 0

    # Only reports/grid/first/ was written: no DVC output (models/, metrics/, plots/) changed
    written = {path for path, mtime in files(root).items() if before.get(path) != mtime}
    assert written and all(path.startswith("reports/grid/first/") for path in written), written
    folder = root / "reports" / "grid" / "first"
    assert {"summary.csv", "experiments.csv", "summary.md", "summary.png"} <= {p.name for p in folder.iterdir()}
    cells = summary(root, "first")
    assert [(r.experiment, r.seed, r.budget) for r in cells.itertuples()] == [
        ("F0", 1, "quick"), ("F0", 2, "quick"), ("F1", 1, "quick"), ("F1", 2, "quick")
    ]  # fmt: skip
    assert (cells["test_accuracy"] > 0.3).all() and (cells["seconds"] > 0).all()
    spread = pd.read_csv(folder / "experiments.csv")
    assert list(spread["experiment"]) == ["F0", "F1"] and list(spread["seeds"]) == [2, 2]
    f0 = cells[cells["experiment"] == "F0"]["test_accuracy"]
    assert spread.iloc[0]["test_mean"] == pytest.approx(f0.mean()) and spread.iloc[0]["test_max"] == f0.max()
    markdown = (folder / "summary.md").read_text()
    assert "## Per experiment" in markdown and f"{100 * f0.max():.2f}" in markdown
    progress = [r.getMessage() for r in caplog.records if "done" in r.getMessage()]
    assert len(progress) == 4 and progress[-1].endswith("4 of 4 done") and progress[0].startswith("F0 seed 1: test")

    # One finished run per cell under the grid's run, with its tags and the summary's scores
    parent, children = runs_of("first")
    assert parent["status"] == "FINISHED" and len(children) == 4 and set(children["status"]) == {"FINISHED"}
    logged = {(r["tags.experiment_id"], int(r["tags.seed"])): tuple(r[f"metrics.{m}"] for m in CELL_METRICS)
              for _, r in children.iterrows()}  # fmt: skip
    assert logged == scores(cells) and set(children["tags.budget"]) == {"quick"}
    assert set(children["run_id"]) == set(cells["run_id"]) and (children["metrics.train_seconds"] > 0).all()

    # A run cut off earlier (left RUNNING under the grid's run) is deleted; a third seed trains only the new cells
    client = mlflow.MlflowClient()
    client.create_run(parent["experiment_id"], tags={"mlflow.parentRunId": parent["run_id"], "grid": "first"})
    caplog.clear()
    assert grid(root, monkeypatch, "first", "--experiments", "F0", "F1", "--seeds", "1", "2", "3") == 0
    grown = summary(root, "first")
    assert len(grown) == 6 and scores(grown.iloc[[0, 1, 3, 4]]) == scores(cells)
    assert sum("finished earlier" in r.getMessage() for r in caplog.records) == 4
    again, children = runs_of("first")
    assert again["run_id"] == parent["run_id"] and len(children) == 6 and set(children["status"]) == {"FINISHED"}

    # The same seed on a fresh grid: the same scores
    assert grid(root, monkeypatch, "second", "--experiments", "F1", "F0", "--seeds", "2") == 0
    fresh = scores(summary(root, "second"))
    assert list(fresh) == [("F1", 2), ("F0", 2)] and fresh == {key: scores(cells)[key] for key in fresh}


def test_a_cell_with_params_seed_trains_and_scores_as_the_train_and_evaluate_stages(
    tmp_path: Path, fashion: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnlab.nets.predict import load_model
    from cnnlab.params import load_params
    from cnnlab.pipeline.stage import Paths
    from cnnlab.training.evaluation import evaluate
    from cnnlab.workflows import train

    root = project(tmp_path / "project", fashion)
    assert grid(root, monkeypatch, "stage", "--experiments", "F0") == 0  # default seed: params' (42)
    (cell,) = summary(root, "stage").itertuples()
    params, paths = load_params(root / "params.yaml"), Paths(root)
    train.run(params, paths, "F0")
    trained = json.loads((paths.metrics("F0") / "train.json").read_text())
    test = load_split(paths.prepared("fashion_mnist") / "test.npz")
    classes = json.loads((paths.prepared("fashion_mnist") / "meta.json").read_text())["classes"]
    scored = evaluate(load_model(paths.model("F0")), *test, classes, params.recipe("F0").loss_for(len(classes)))
    assert (cell.seed, cell.val_accuracy, cell.test_accuracy) == (42, trained["val_accuracy"], scored.accuracy)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["g", "--experiments", "F0", "X9"], {}, r"unknown experiment 'X9'; allowed: F0, F1, M0"),
        (["g", "--experiments", "M0"], {}, r"`dvc repro preprocess@mnist`"),
        (["../up", "--experiments", "F0"], {}, r"grid name '../up': use letters"),
        (["g", "--experiments", "F0", "--executor", "ray"], {"RAY_ADDRESS": "127.0.0.1:{port}"},
         r"RAY_ADDRESS=127.0.0.1:\d+: no Ray head answers there"),
        (["g", "--experiments", "F0", "--executor", "ray"], {"ray": None}, r"needs Ray: `pip install 'cnnlab\[ray\]'`"),
    ],
)  # fmt: skip
def test_bad_requests_fail_before_any_training(
    tmp_path: Path, fashion: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    args: list[str], env: dict[str, Any], message: str,
) -> None:  # fmt: skip
    def with_mnist(raw: dict) -> None:  # M0 on MNIST, whose data is not prepared
        two_fashion_experiments(raw)
        raw["datasets"].append("mnist")
        raw["experiments"]["M0"] = {"dataset": "mnist", "model": "M0", "epochs": 1}

    root = project(tmp_path / "project", fashion, with_mnist)
    before = files(root)
    for name, value in env.items():
        if name == "ray":  # `import ray` raises ModuleNotFoundError
            monkeypatch.setitem(sys.modules, "ray", value)
            monkeypatch.delitem(sys.modules, "cnnlab.workflows.ray_cluster", raising=False)
        else:
            monkeypatch.setenv(name, value.format(port=free_port()))
    trained = []
    monkeypatch.setattr("cnnlab.workflows.grid.cells.fit", lambda *a, **k: trained.append(a))
    assert grid(root, monkeypatch, *args) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not trained and files(root) == before  # no folder made, nothing written
    assert mlflow.search_runs(experiment_names=[EXPERIMENT]).empty  # no run opened


@pytest.mark.slow
def test_a_grid_on_ray_scores_as_the_local_executor(
    tmp_path: Path, fashion: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    local = project(tmp_path / "local", fashion)
    assert grid(local, monkeypatch, "g", "--experiments", "F0", "F1", "--seeds", "1") == 0
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name, value in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}.items():
        monkeypatch.setenv(name, value)
    on_ray = project(tmp_path / "ray", fashion)
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")  # a one-CPU Ray: one task at a time
    try:
        assert grid(on_ray, monkeypatch, "g", "--experiments", "F0", "F1", "--seeds", "1", "--executor", "ray") == 0
    finally:
        ray.shutdown()
    assert scores(summary(on_ray, "g")) == scores(summary(local, "g"))
    _, children = mlflow_runs_of_project("g", 2)
    assert children["tags.ray_node_id"].notna().sum() == 2  # two cells trained as Ray tasks, logged from the workers


def mlflow_runs_of_project(name: str, grids: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both projects' grid runs share the test's store: the grid runs, and the cell runs of the latest."""
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string=f"tags.grid = '{name}'")
    parents = runs[runs["tags.stage"] == "grid"]
    assert len(parents) == grids and set(runs["status"]) == {"FINISHED"}
    latest = parents.sort_values("start_time").iloc[-1]["run_id"]
    return parents, runs[runs["tags.mlflow.parentRunId"] == latest]
