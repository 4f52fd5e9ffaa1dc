"""End to end: `dvc repro` in a copy of the project (two experiments on one data set, tiny budgets),
then MLflow and DVC are asked what they saw."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from helpers.project import GIT, copy_project, run

pytestmark = pytest.mark.slow  # whole-pipeline runs: the full suite, not the inner loop

EXPERIMENTS = ["F0", "F1"]
STAGES = ["download@fashion_mnist", "preprocess@fashion_mnist", "train@F0", "train@F1", "evaluate@F0", "evaluate@F1"]
STAGES += ["tune@T1", "retrain@T1", "evaluate@T1"]  # a search's stages (its evaluate_tuned runs evaluate.py)
STAGES += ["explain@F0", "explain@F1", "explain@T1"]  # explain_tuned runs explain.py as explain@<id>
STAGES.append("report")
TINY_SEARCH = {
    "dataset": "fashion_mnist",
    "tuner": "random",
    "max_trials": 2,
    "max_epochs": 1,
    "space": {"conv_blocks": 1, "filters": [8, 16], "dense_units": 32, "augmentation": 0.0, "batchnorm": False},
    "budgets": {"quick": {"train_samples": 1000}},
}


def tiny_budgets(params: dict) -> None:
    params["datasets"] = ["fashion_mnist"]
    params["finetune"]["run"] = []  # tests/training/test_transfer.py runs the transfer stages
    params["experiments"] = {k: params["experiments"][k] for k in EXPERIMENTS}
    params["crossval"], params["ablation"] = {}, {}  # tests/workflows/test_study_pipeline.py runs the studies
    params["tune"] = {"T1": TINY_SEARCH}  # tests/workflows/test_tune.py tests the search itself
    params["experiments"]["F1"]["budgets"]["quick"] = {"epochs": 1, "train_samples": 3000}
    # F0's "full" budget is tiny here, so the test can run one experiment on its full budget.
    params["experiments"]["F0"]["budgets"] = {"quick": {"epochs": 1, "train_samples": 1000}, "full": {"epochs": 2}}
    params["experiments"]["F0"]["budgets"]["full"]["train_samples"] = 2000


@pytest.fixture(scope="module")
def repro(tmp_path_factory: pytest.TempPathFactory, fashion_dir: Path) -> tuple[Path, dict, float, str]:
    project = tmp_path_factory.mktemp("project")
    env = copy_project(project, tiny_budgets)
    run(["dvc", "repro"], project, env)
    started = time.perf_counter()
    again = run(["dvc", "repro"], project, env)
    return project, env, time.perf_counter() - started, again.stdout


def stage_runs(project: Path):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")  # the default store, in the project root
    runs = mlflow.search_runs(experiment_names=["cnnlab"])
    runs = runs[runs["tags.mlflow.parentRunId"].isna()]  # stage runs, not a search's trials
    return {row["tags.mlflow.runName"]: row for _, row in runs.iterrows()}, runs


def test_each_stage_left_a_finished_run_with_tags(repro) -> None:
    project = repro[0]
    by_name, runs = stage_runs(project)
    assert len(runs) == len(STAGES) and sorted(by_name) == sorted(STAGES)  # one preprocess for both experiments
    for name, row in by_name.items():
        assert row["status"] == "FINISHED"
        assert row["tags.stage"] == name.split("@")[0]
        computes = row["tags.stage"] not in ("download", "preprocess")  # the data stages never load Keras
        for tag in ["git_commit", "git_dirty", "data_hash", "budget"] + ["keras_backend", "device"] * computes:
            assert row[f"tags.{tag}"] not in (None, "", "unknown"), (name, tag)
        assert computes or pd.isna(row.get("tags.device")), name
    for exp_id in EXPERIMENTS:
        assert by_name[f"train@{exp_id}"]["tags.experiment_id"] == exp_id
        assert by_name[f"train@{exp_id}"]["tags.data_hash"] == by_name[f"evaluate@{exp_id}"]["tags.data_hash"]
        assert by_name[f"train@{exp_id}"]["tags.data_hash"] == by_name["preprocess@fashion_mnist"]["tags.data_hash"]
    assert by_name["download@fashion_mnist"]["tags.source"].startswith("debian:")
    assert by_name["preprocess@fashion_mnist"]["tags.dataset"] == "fashion_mnist"


def test_download_and_preprocess_runs_record_what_they_did(repro) -> None:
    by_name = stage_runs(repro[0])[0]
    client = mlflow.MlflowClient()
    download = by_name["download@fashion_mnist"]
    assert {a.path for a in client.list_artifacts(download["run_id"])} == {"fashion_mnist.source.json"}
    preprocess = by_name["preprocess@fashion_mnist"]
    assert (preprocess["metrics.count_train"], preprocess["metrics.count_test"]) == (60000, 10000)
    assert preprocess["metrics.skipped_images"] == 0
    assert {a.path for a in client.list_artifacts(preprocess["run_id"])} == {"meta.json"}


def test_train_run_has_epochs_params_artifacts_and_model(repro) -> None:
    project = repro[0]
    train = stage_runs(project)[0]["train@F1"]
    client = mlflow.MlflowClient()
    history = client.get_metric_history(train["run_id"], "val_accuracy")
    assert [m.step for m in history] == [0]  # one epoch on the tiny budget
    assert train["params.optimizer.name"] == "adam" and train["params.epochs"] == "1"
    assert train["metrics.final_train_samples"] == 3000
    # `distribution: auto` on a CPU: one device, and the run says so
    assert (train["params.distribution_used"], train["params.distribution_replicas"]) == ("none", "1")
    artifacts = {a.path for a in client.list_artifacts(train["run_id"])}
    expected = {"training_curves.png", "history.csv", "train.json", "F1.summary.txt", "F1.meta.json", "model.png"}
    assert expected <= artifacts
    models = mlflow.search_logged_models(experiment_ids=[train["experiment_id"]], output_format="list")
    assert train["run_id"] in [m.source_run_id for m in models]
    logged = next(m for m in models if m.source_run_id == train["run_id"])
    assert mlflow.models.get_model_info(f"models:/{logged.model_id}").signature is not None


def test_evaluate_metrics_reach_dvc_and_mlflow(repro) -> None:
    project, env = repro[0], repro[1]
    evaluate = stage_runs(project)[0]["evaluate@F1"]
    assert evaluate["metrics.test_accuracy"] > 0.6  # 3000 images, 1 epoch; chance is 0.1
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project, env).stdout)
    metrics = next(iter(shown.values()))["data"]["metrics/F1/evaluate.json"]["data"]
    assert metrics["test_accuracy"] == pytest.approx(evaluate["metrics.test_accuracy"])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(evaluate["run_id"])}
    assert {"confusion_matrix.png", "misclassified.png", "confusion.csv", "evaluate.json"} <= artifacts


def test_report_sets_claims_beside_the_measured_metrics(repro) -> None:
    project = repro[0]
    report = (project / "reports" / "reproduction.md").read_text()
    f1_train = json.loads((project / "metrics" / "F1" / "train.json").read_text())
    f1_row = next(line for line in report.splitlines() if line.startswith("| **F1** |"))
    assert f"{100 * f1_train['val_accuracy']:.2f}%" in f1_row and "0.9178" in f1_row and "quick" in f1_row
    assert "| **F0** |" in report
    run_row = stage_runs(project)[0]["report"]
    assert {a.path for a in mlflow.MlflowClient().list_artifacts(run_row["run_id"])} == {
        "reproduction.md",
        "reproduction.csv",
        "reproduction.png",
    }
    assert (project / "reports" / "reproduction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    f1_test = json.loads((project / "metrics" / "F1" / "evaluate.json").read_text())["test_accuracy"]
    assert run_row["metrics.test_accuracy.F1"] == pytest.approx(f1_test)


def test_second_repro_does_nothing(repro) -> None:
    seconds, output = repro[2], repro[3]
    assert "up to date" in output
    assert seconds < 60
    assert len(stage_runs(repro[0])[1]) == len(STAGES)  # no new runs


def test_one_experiment_runs_alone_on_its_full_budget(repro) -> None:
    """`dvc exp run -S ++experiments.F0.budget=full` re-runs F0's train, evaluate and explain (and the report),
    nothing else."""
    project, env = repro[0], repro[1]
    f1_before = (project / "metrics" / "F1" / "evaluate.json").read_text()
    run(["dvc", "exp", "run", "-S", "++experiments.F0.budget=full"], project, env)
    new_runs = set(stage_runs(project)[1]["tags.mlflow.runName"].tolist())
    assert len(stage_runs(project)[1]) == len(STAGES) + 4 and new_runs == set(STAGES)
    latest = mlflow.search_runs(experiment_names=["cnnlab"], order_by=["start_time DESC"], max_results=4)
    assert sorted(latest["tags.mlflow.runName"]) == ["evaluate@F0", "explain@F0", "report", "train@F0"]
    f0_train = json.loads((project / "metrics" / "F0" / "train.json").read_text())
    assert (f0_train["budget"], f0_train["epochs_run"], f0_train["train_samples"]) == ("full", 2, 2000)
    assert (project / "metrics" / "F1" / "evaluate.json").read_text() == f1_before
    assert "| **F0** |" in (project / "reports" / "reproduction.md").read_text()
    # The full-budget F0 is version 2 of cnnlab-F0; the champion alias is where the decision put it.
    client = mlflow.MlflowClient()
    second = client.get_model_version("cnnlab-F0", "2")
    f0_test = json.loads((project / "metrics" / "F0" / "evaluate.json").read_text())["test_accuracy"]
    assert float(second.tags["test_accuracy"]) == pytest.approx(f0_test, abs=1e-6)
    first_score = float(second.tags["champion_test_accuracy"])
    champion = client.get_model_version_by_alias("cnnlab-F0", "champion")
    assert str(champion.version) == ("2" if f0_test > first_score else "1")
    assert second.tags["promoted"] == str(f0_test > first_score).lower()
    assert latest.set_index("tags.mlflow.runName").loc["evaluate@F0", "metrics.promoted"] == float(
        f0_test > first_score
    )


def test_searched_model_is_retrained_and_evaluated_through_dvc(repro) -> None:
    project, env = repro[0], repro[1]
    best = json.loads((project / "metrics" / "T1" / "best_hparams.json").read_text())
    assert best["recipe"]["model"] == "CNN" and best["recipe"]["model_options"]["filters"][0] in (8, 16)
    trained = json.loads((project / "metrics" / "T1" / "train.json").read_text())
    assert trained["train_samples"] == 1000 and trained["params"] == best["params"]
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project, env).stdout)
    workspace = next(iter(shown.values()))["data"]
    assert workspace["metrics/T1/tune.json"]["data"]["trials"] == 2
    assert workspace["metrics/T1/evaluate.json"]["data"]["test_accuracy"] > 0.4  # 1 epoch on 1,000 images
    by_name, _ = stage_runs(project)
    trials = mlflow.search_runs(
        experiment_names=["cnnlab"], filter_string=f"tags.mlflow.parentRunId = '{by_name['tune@T1']['run_id']}'"
    )
    assert sorted(trials["tags.mlflow.runName"]) == ["T1/trial_0", "T1/trial_1"]
    assert by_name["evaluate@T1"]["tags.search"] == "T1"


def queue_idle(project: Path, env: dict) -> str:
    """`dvc queue status` once no experiment is queued or running (within 10 minutes)."""
    deadline = time.monotonic() + 600
    while True:
        status = run(["dvc", "queue", "status"], project, env).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, f"the queue did not finish in 10 minutes:\n{status}"
        time.sleep(2)


def test_queued_experiments_run_two_at_once_into_the_projects_store(repro) -> None:
    """`dvc exp run --queue` runs each experiment in a copy under .dvc/tmp/exps, and `dvc queue start -j 2` two at
    a time: every stage run lands FINISHED in the project's own store, none in a copy, with no lock error."""
    project, env = repro[0], repro[1]
    env = env | {k: "t" for k in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME")}
    env |= {k: "t@t" for k in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL")}
    run([*GIT, "add", "-A"], project, env)
    run([*GIT, "commit", "-qm", "the pipeline's outputs"], project, env)
    before = set(stage_runs(project)[1]["run_id"])
    for samples in (1500, 2000):
        setting = f"experiments.F1.budgets.quick.train_samples={samples}"
        run(["dvc", "exp", "run", "--queue", "-S", setting, "evaluate@F1"], project, env)
    run(["dvc", "queue", "start", "-j", "2"], project, env)
    status = queue_idle(project, env)
    assert status.count("Success") == 2, status
    logs = "".join(run(["dvc", "queue", "logs", name], project, env).stdout for name in experiment_names(status))
    assert "database is locked" not in logs
    runs = stage_runs(project)[1]
    new = runs[~runs["run_id"].isin(before)]
    assert sorted(new["tags.mlflow.runName"]) == ["evaluate@F1", "evaluate@F1", "train@F1", "train@F1"]
    assert set(new["status"]) == {"FINISHED"}
    trained = new[new["tags.mlflow.runName"] == "train@F1"]
    assert sorted(trained["metrics.final_train_samples"].astype(int)) == [1500, 2000]
    assert not list((project / ".dvc" / "tmp").rglob("mlflow.db"))


def experiment_names(status: str) -> list[str]:
    """The experiment names of `dvc queue status`'s table (its second column)."""
    return [line.split()[1] for line in status.splitlines() if "Success" in line]
