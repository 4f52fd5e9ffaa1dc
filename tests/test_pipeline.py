"""End to end: `dvc repro` in a copy of the project on a tiny budget, then MLflow and DVC are asked what they saw."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import ROOT

STAGES = ["download", "preprocess", "train", "evaluate"]


def run(command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def repro(tmp_path_factory: pytest.TempPathFactory, fashion_dir: Path) -> tuple[Path, dict, float]:
    project = tmp_path_factory.mktemp("project")
    for name in ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "pyproject.toml"]:
        shutil.copy(ROOT / name, project / name)
    for folder in ["stages", "src"]:
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["experiments"]["F1"]["budgets"]["quick"] = {"epochs": 1, "train_samples": 3000}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CNNLAB_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(project / "src")
    run(["git", "init", "-q"], project, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], project, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], project, env)
    run(["dvc", "init", "-q"], project, env)
    run(["dvc", "repro"], project, env)
    started = time.perf_counter()
    again = run(["dvc", "repro"], project, env)
    return project, env, time.perf_counter() - started, again.stdout


def stage_runs(project: Path):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")  # the default store, in the project root
    runs = mlflow.search_runs(experiment_names=["cnnlab"])
    return {row["tags.stage"]: row for _, row in runs.iterrows()}, runs


def test_each_stage_left_a_finished_run_with_tags(repro) -> None:
    project = repro[0]
    by_stage, runs = stage_runs(project)
    assert len(runs) == len(STAGES) and sorted(by_stage) == sorted(STAGES)
    for stage, row in by_stage.items():
        assert row["status"] == "FINISHED"
        assert row["tags.mlflow.runName"] == f"{stage}@F1"
        for tag in ["experiment_id", "git_commit", "git_dirty", "data_hash", "keras_backend", "device", "budget"]:
            assert row[f"tags.{tag}"] not in (None, "", "unknown"), (stage, tag)
    assert by_stage["download"]["tags.source.fashion_mnist"].startswith("debian:")
    assert by_stage["train"]["tags.data_hash"] == by_stage["evaluate"]["tags.data_hash"]
    assert by_stage["preprocess"]["tags.data_hash"] == by_stage["train"]["tags.data_hash"]


def test_download_and_preprocess_runs_record_what_they_did(repro) -> None:
    by_stage = stage_runs(repro[0])[0]
    client = mlflow.MlflowClient()
    assert {a.path for a in client.list_artifacts(by_stage["download"]["run_id"])} == {"sources.json"}
    preprocess = by_stage["preprocess"]
    assert (preprocess["metrics.count_train"], preprocess["metrics.count_val"]) == (42000, 18000)
    assert preprocess["metrics.count_test"] == 10000 and preprocess["metrics.skipped_images"] == 0
    assert {a.path for a in client.list_artifacts(preprocess["run_id"])} == {"meta.json"}


def test_train_run_has_epochs_params_artifacts_and_model(repro) -> None:
    project = repro[0]
    train = stage_runs(project)[0]["train"]
    client = mlflow.MlflowClient()
    history = client.get_metric_history(train["run_id"], "val_accuracy")
    assert [m.step for m in history] == [0]  # one epoch on the tiny budget
    assert train["params.optimizer.name"] == "adam" and train["params.epochs"] == "1"
    artifacts = {a.path for a in client.list_artifacts(train["run_id"])}
    expected = {"training_curves.png", "history.csv", "train.json", "F1.summary.txt", "F1.meta.json", "model.png"}
    assert expected <= artifacts
    models = mlflow.search_logged_models(experiment_ids=[train["experiment_id"]], output_format="list")
    assert [m.source_run_id for m in models] == [train["run_id"]]
    assert models[0].model_id  # logged with a signature: loading it back needs nothing else
    loaded = mlflow.models.get_model_info(f"models:/{models[0].model_id}")
    assert loaded.signature is not None


def test_evaluate_metrics_reach_dvc_and_mlflow(repro) -> None:
    project, env = repro[0], repro[1]
    evaluate = stage_runs(project)[0]["evaluate"]
    assert evaluate["metrics.test_accuracy"] > 0.6  # 3000 images, 1 epoch; chance is 0.1
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project, env).stdout)
    metrics = next(iter(shown.values()))["data"]["metrics/evaluate.json"]["data"]
    assert metrics["test_accuracy"] == pytest.approx(evaluate["metrics.test_accuracy"])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(evaluate["run_id"])}
    assert {"confusion_matrix.png", "misclassified.png", "confusion.csv", "evaluate.json"} <= artifacts


def test_second_repro_does_nothing(repro) -> None:
    seconds, output = repro[2], repro[3]
    assert "up to date" in output
    assert seconds < 60
    assert len(stage_runs(repro[0])[1]) == len(STAGES)  # no new runs
