"""End to end: the crossval and ablation stages under `dvc repro`, an ablation (two folds at once) killed in the
middle and resumed, then what DVC and MLflow hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest

from helpers.project import copy_project, run

pytestmark = pytest.mark.slow  # whole-pipeline runs: the full suite, not the inner loop

FOLDS = 2
CELLS = 8  # 2^3
TRAININGS = CELLS * FOLDS
KILL_AFTER = 5  # finished trainings of the ablation when it is interrupted


def tiny_studies(params: dict) -> None:
    params["datasets"] = ["fashion_mnist"]
    params["finetune"]["run"] = []
    params["tune"] = {}  # tests/project/test_pipeline.py runs the search's stages
    c1 = params["experiments"]["C1"] | {"dataset": "fashion_mnist"}
    params["experiments"] = {"C1": c1 | {"budgets": {"quick": {"epochs": 1, "train_samples": 600}}}}
    tiny = {"epochs": 2, "batch_size": 32, "train_samples": 1200, "k": FOLDS}  # 600 a training
    params["crossval"]["C3"]["budgets"]["quick"] = tiny
    params["ablation"]["C4"]["budgets"]["quick"] = tiny
    params["ablation"]["C4"]["parallel"] = 2  # the ablation's folds train on worker processes, C3's in the stage
    params["crossval"]["C3"]["parallel"] = 1


def finished(project: Path) -> dict[str, str]:
    """The ablation's finished-training records: path -> content."""
    return {str(p.relative_to(project)): p.read_text() for p in sorted((project / "folds" / "C4").glob("*/fold*.json"))}


def ctrl_c_as_in_a_terminal() -> None:
    """SIGINT at its default in the child: a test run started in the background (nohup, CI) has it ignored, and
    ignored signals are inherited, so the stage would rightly ignore Ctrl-C too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when(project: Path, env: dict, command: list[str], records: int) -> subprocess.CompletedProcess:
    """Start `command`, and press Ctrl-C (SIGINT to its process group) once `records` trainings have finished."""
    process = subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=ctrl_c_as_in_a_terminal,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while len(finished(project)) < records and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, f"finished before it could be interrupted:\n{process.stdout.read()[-3000:]}"
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, output, "")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory, fashion_dir: Path) -> dict:
    project = tmp_path_factory.mktemp("studies")
    env = copy_project(project, tiny_studies)
    run(["dvc", "repro", "preprocess@fashion_mnist"], project, env)
    killed = interrupt_when(project, env, ["dvc", "repro", "ablation@C4"], KILL_AFTER)
    before = finished(project)
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs_at_kill = mlflow.search_runs(experiment_names=["cnnlab"])
    resumed = run(["dvc", "repro"], project, env)
    again = run(["dvc", "repro"], project, env)
    return {"project": project, "env": env, "killed": killed, "before": before, "runs_at_kill": runs_at_kill,
            "resumed": resumed.stdout + resumed.stderr, "again": again.stdout}  # fmt: skip


def runs(project: Path):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["cnnlab"])  # deleted runs are not listed


def test_the_interrupted_ablation_resumes_without_retraining(studies: dict) -> None:
    project, before = studies["project"], studies["before"]
    assert studies["killed"].returncode != 0, studies["killed"].stdout[-3000:]
    assert KILL_AFTER <= len(before) < TRAININGS
    at_kill = studies["runs_at_kill"]
    parent = at_kill[at_kill["tags.mlflow.runName"] == "ablation@C4"]
    assert list(parent["status"]) == ["FAILED"]  # the stopped run is not left RUNNING
    after = finished(project)
    assert len(after) == TRAININGS
    assert {k: after[k] for k in before} == before  # the finished ones were not retrained (same scores, same runs)
    skipped = studies["resumed"].count("finished earlier")
    assert skipped == len(before), studies["resumed"][-3000:]


def test_mlflow_holds_one_finished_run_per_cell_and_fold(studies: dict) -> None:
    table = runs(studies["project"])
    names = table["tags.mlflow.runName"].tolist()
    assert len(names) == len(set(names))  # no duplicates, not even of the interrupted training
    parent = table[table["tags.mlflow.runName"] == "ablation@C4"].iloc[0]
    assert parent["status"] == "FINISHED"
    assert parent["run_id"] == studies["runs_at_kill"].query("`tags.mlflow.runName` == 'ablation@C4'").iloc[0].run_id
    cells = table[table["tags.mlflow.parentRunId"] == parent["run_id"]]
    assert len(cells) == CELLS and set(cells["status"]) == {"FINISHED"}
    folds = table[table["tags.mlflow.parentRunId"].isin(cells["run_id"])]
    assert len(folds) == TRAININGS and set(folds["status"]) == {"FINISHED"}
    fold = folds[folds["tags.mlflow.runName"] == "C4/101/fold2"].iloc[0]
    assert fold["params.fold"] == "2" and fold["params.model_options.output_l2"] == "0.01"
    assert fold["params.augmentation.horizontal_flip"] == "True" and fold["params.train_samples"] == "600"
    history = mlflow.MlflowClient().get_metric_history(fold["run_id"], "val_accuracy")
    assert [m.step for m in history] == [0, 1]  # per-epoch metrics
    cell = cells[cells["tags.mlflow.runName"] == "C4/101"].iloc[0]
    assert cell["metrics.folds"] == FOLDS and cell["params.model_options.output_l2"] == "0.01"
    curve = mlflow.MlflowClient().get_metric_history(cell["run_id"], "mean_val_accuracy")
    assert [m.step for m in curve] == [0, 1]  # the fold-averaged learning curve, logged once
    assert cell["metrics.mean_fold_val_accuracy"] == pytest.approx(
        folds[folds["tags.arm"] == "101"]["metrics.fold_val_accuracy"].mean()
    )
    recorded = {json.loads(text)["run_id"] for text in finished(studies["project"]).values()}
    assert recorded == set(folds["run_id"])


def test_crossval_writes_statistics_for_dvc_and_mlflow(studies: dict) -> None:
    project, env = studies["project"], studies["env"]
    metrics = json.loads((project / "metrics" / "C3" / "crossval.json").read_text())
    assert set(metrics["arms"]) == {"no_dropout", "dropout"} and metrics["k"] == FOLDS
    for arm in metrics["arms"].values():
        assert arm["mean"] > 0.5  # 600 Fashion-MNIST images, two epochs; chance is 0.1
        assert arm["ci_low"] < arm["mean"] < arm["ci_high"]
    comparison = metrics["comparisons"]["dropout_vs_no_dropout"]
    assert 0 <= comparison["p_t"] <= 1 and 0 <= comparison["p_wilcoxon"] <= 1 and "cohen_dz" in comparison
    folds_csv = (project / "plots" / "C3" / "folds.csv").read_text().splitlines()
    assert folds_csv[0].startswith("arm,fold,val_accuracy") and len(folds_csv) == 1 + 2 * FOLDS
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project, env).stdout)
    data = next(iter(shown.values()))["data"]
    assert data["metrics/C3/crossval.json"]["data"]["arms"]["dropout"]["mean"] == metrics["arms"]["dropout"]["mean"]
    plots = json.loads(run(["dvc", "plots", "show", "--json", "plots/C3/folds.csv"], project, env).stdout)
    spec = json.dumps(plots)
    assert '"boxplot"' in spec  # rendered with .dvc/plots/boxplot.json
    report = (project / "reports" / "C3" / "README.md").read_text()
    assert "Wilcoxon" in report and "no_dropout" in report
    table = runs(project)
    parent = table[table["tags.mlflow.runName"] == "crossval@C3"].iloc[0]
    assert parent["metrics.arms.dropout.mean"] == pytest.approx(metrics["arms"]["dropout"]["mean"])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent["run_id"])}
    assert {"README.md", "boxplot.png", "comparisons.csv", "crossval.json", "folds.csv", "summary.csv"} <= artifacts


def test_ablation_reports_cells_effects_and_the_leak(studies: dict) -> None:
    project = studies["project"]
    metrics = json.loads((project / "metrics" / "C4" / "ablation.json").read_text())
    assert list(metrics["arms"]) == ["000", "001", "010", "011", "100", "101", "110", "111"]
    assert metrics["arms"]["101"]["factors"] == "augmentation+l2"
    terms = list(metrics["effects"])
    assert terms == ["augmentation", "dropout", "l2", "augmentation:dropout", "augmentation:l2", "dropout:l2"]
    assert (project / "reports" / "C4" / "effects.png").read_bytes()[:4] == b"\x89PNG"
    reproduction = (project / "reports" / "reproduction.md").read_text()
    assert "[100]" in reproduction and "0.7934" in reproduction and "leak" in reproduction


def test_a_finished_study_is_not_rerun(studies: dict) -> None:
    assert "up to date" in studies["again"] and "finished earlier" not in studies["again"]
