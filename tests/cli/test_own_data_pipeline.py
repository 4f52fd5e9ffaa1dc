"""From a zip of your own images to a registered model, as the README's "Your own images" tells it: `cnnlab
add-data`, `cnnlab add-experiment`, then `dvc repro evaluate@<id>` and the report, in a copy of the project."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import pytest

from helpers.project import copy_project, run
from helpers.shapes import shapes_zip

pytestmark = pytest.mark.slow  # a whole chain of stages: about a minute on a 2-core CPU


def bare(params: dict) -> None:
    """No built-in data set or experiment: the copy runs only what the user adds."""
    params["datasets"], params["experiments"] = [], {}
    params["crossval"], params["ablation"], params["tune"] = {}, {}, {}
    params["finetune"]["run"], params["detect"]["run"] = [], []


def test_a_zip_of_your_images_becomes_a_registered_model(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env = copy_project(project, bare)
    images = shapes_zip(tmp_path / "shapes.zip")  # 2 x 40 images, 4 greyscale, one corrupt file and a note
    cnnlab = [sys.executable, "-m", "cnnlab.cli"]
    run([*cnnlab, "add-data", "shapes", str(images)], project, env)
    run([*cnnlab, "add-experiment", "SHAPES", "--data", "shapes", "--model", "F1", "--epochs", "12"], project, env)
    assert "shapes" in run([*cnnlab, "check"], project, env).stdout
    run(["dvc", "repro", "evaluate@SHAPES"], project, env)

    meta = json.loads((project / "data" / "prepared" / "shapes" / "meta.json").read_text())
    assert meta["counts"] == {"train": 56, "val": 8, "test": 16} and meta["classes"] == ["disc", "square"]
    assert meta["skipped_count"] == 1 and meta["converted_count"] == 4  # the corrupt file; the greyscale images
    tested = json.loads((project / "metrics" / "SHAPES" / "evaluate.json").read_text())
    assert tested["test_accuracy"] >= 0.8  # chance is 0.5: red discs and blue squares are easy to tell apart

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["cnnlab"])
    finished = dict(zip(runs["tags.mlflow.runName"], runs["status"], strict=True))
    for stage in ("download@shapes", "preprocess@shapes", "train@SHAPES", "evaluate@SHAPES"):
        assert finished.get(stage) == "FINISHED", (stage, finished)
    champion = mlflow.MlflowClient().get_model_version_by_alias("cnnlab-SHAPES", "champion")
    assert float(champion.tags["test_accuracy"]) == pytest.approx(tested["test_accuracy"], abs=1e-6)

    run(["dvc", "repro", "report"], project, env)  # no claim in claims.yaml: the report lists it as yours
    report = (project / "reports" / "reproduction.md").read_text()
    row = next(line for line in report.split("## Your experiments")[1].splitlines() if line.startswith("| **SHAPES**"))
    assert f"{100 * tested['test_accuracy']:.2f}%" in row and "| shapes | F1 |" in row
