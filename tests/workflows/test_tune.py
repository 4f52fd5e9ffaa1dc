"""The tune, retrain and evaluate stages of a Keras Tuner search, on real Fashion-MNIST images (CPU, seconds).

Covers: the search space's validation and its mapping to recipes, a search whose trials are MLflow child
runs (a failing trial included), its outputs, the best model retrained and scored on the test set, an
interrupted search that resumes without rerunning finished trials, a changed space that starts afresh, and
a chief with two workers on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras_tuner as kt
import mlflow
import pandas as pd
import pytest

from cnnlab.catalog.networks import build_model
from cnnlab.params import Experiment, ParamsError, SearchSpace, Tune, parse_params
from cnnlab.pipeline.stage import Paths
from cnnlab.training.hypermodel import SearchHyperModel
from cnnlab.training.search_space import augmentation, trial_recipe
from cnnlab.workflows.search import main as tune_main
from helpers.project import ROOT, free_port, load_stage, prepared_project

SMALL_SPACE = {
    "conv_blocks": [1, 2],
    "filters": [8, 16],
    "kernel_size": 3,
    "dense_units": [32, 64],
    "dropout": 0.0,
    "l2": 0.0,
    "batchnorm": [False, True],
    "augmentation": 0.0,
    "learning_rate": {"min": 0.001, "max": 0.003, "sampling": "log"},
    "optimizer": "adam",
}


def search_params(tuner: str = "random", **changes: object) -> dict:
    """A search small enough for seconds per trial: 2 epochs on 1,600 images, scored on 400."""
    search = {"dataset": "fashion_mnist", "tuner": tuner, "max_epochs": 2, "factor": 2, "max_trials": 4,
              "batch_size": 64, "validation": 0.2, "max_consecutive_failed_trials": 10,
              "space": SMALL_SPACE}  # fmt: skip
    search.update(changes)
    return search


def make_project(root: Path, fashion: dict, **search: object) -> object:
    def edit(raw: dict) -> None:
        raw["tune"] = {"T1": search_params(**search)}

    return prepared_project(root, fashion, edit, train_size=2000, test_size=500)


def trial_runs(parent_id: str | None = None) -> pd.DataFrame:
    runs = mlflow.search_runs(experiment_names=["cnnlab"])
    trials = runs[runs["tags.mlflow.runName"].str.startswith("T1/trial_")]
    return trials if parent_id is None else trials[trials["tags.mlflow.parentRunId"] == parent_id]


def parent_runs() -> pd.DataFrame:
    runs = mlflow.search_runs(experiment_names=["cnnlab"], order_by=["start_time ASC"])
    return runs[runs["tags.mlflow.runName"] == "tune@T1"]


# ---------------------------------------------------------------- the search space


def test_space_errors_name_the_dimension_and_what_it_allows() -> None:
    raw = {"datasets": ["fashion_mnist"], "experiments": {}}
    bad = {
        "kernel_size": ([2, 3], "kernel_size: 2 is not an odd positive integer"),
        "optimizer": (["adam", "adamm"], "optimizer: 'adamm' is not one of adam, rmsprop"),
        "dropout": ({"min": 0.5, "max": 0.2}, "min must be below max"),
        "learning_rate": ({"min": 0, "max": 0.1, "sampling": "log"}, "log sampling needs min > 0"),
        "batchnorm": ([1], "batchnorm: 1 is not true or false"),
        "filters": ([], "filters: an empty list of choices"),
    }
    for name, (value, message) in bad.items():
        raw["tune"] = {"T1": {"dataset": "fashion_mnist", "space": {name: value}}}
        with pytest.raises(ParamsError, match=message):
            parse_params(raw)
    raw["tune"] = {"T1": {"dataset": "fashion_mnist", "space": {"dense_unit": [64]}}}
    with pytest.raises(ParamsError, match="dense_unit: unknown key"):
        parse_params(raw)
    raw["tune"] = {"T1": {"dataset": "mnist"}}
    with pytest.raises(ParamsError, match=r"tune\.T1\.dataset: data set 'mnist' is not in `datasets`"):
        parse_params(raw)


def test_trial_values_make_the_recipe_and_filters_exist_per_block() -> None:
    search = Tune(dataset="fashion_mnist", space=SearchSpace(**{**SMALL_SPACE, "augmentation": [0.0, 0.1]}))
    hp = kt.HyperParameters()
    trial_recipe(hp, search)  # declares the space
    assert [p.name for p in hp.space][:4] == ["conv_blocks", "filters_1", "filters_2", "kernel_size"]
    hp.values.update({"conv_blocks": 2, "filters_1": 16, "filters_2": 8, "batchnorm": 1, "augmentation": 0.1})
    recipe = trial_recipe(hp, search)
    assert recipe.model == "CNN" and recipe.model_options["filters"] == [16, 8]
    assert recipe.model_options["batchnorm"] is True and recipe.batch_size == search.batch_size
    assert recipe.augmentation == augmentation(0.1, False)
    assert recipe.augmentation.rotation_range == 10 and recipe.augmentation.zoom_range == 0.1
    hp.values["conv_blocks"] = 1
    assert trial_recipe(hp, search).model_options["filters"] == [16]
    assert not hp.is_active("filters_2")  # a 1-block trial has no second block to size


def test_searched_cnn_has_the_parameters_counted_by_hand() -> None:
    model = build_model("CNN", (28, 28, 1), 10, filters=[8, 16], kernel_size=3, dense_units=32, batchnorm=True)
    conv1 = 3 * 3 * 1 * 8 + 4 * 8  # no conv bias with batch normalization: gamma, beta, mean, variance
    conv2 = 3 * 3 * 8 * 16 + 4 * 16
    dense = 7 * 7 * 16 * 32 + 32  # 28 → 14 → 7 after two poolings
    head = 32 * 10 + 10
    assert model.count_params() == conv1 + conv2 + dense + head


# ---------------------------------------------------------------- a search, its outputs, the retrained best


@pytest.mark.slow
def test_search_logs_every_trial_and_its_best_model_is_retrained_and_evaluated(tmp_path, fashion) -> None:
    # dense 4096 after one 8-filter block is 1.6M parameters: such trials must fail, not stop the search
    space = {**SMALL_SPACE, "dense_units": [32, 4096]}
    params = make_project(tmp_path, fashion, max_trials=6, max_params=300_000, space=space)
    paths = Paths(tmp_path)
    tune_main(params, paths, "T1")

    (parent,) = parent_runs()["run_id"]
    trials = trial_runs(parent)
    assert len(trials) == 6 and trials["tags.trial_id"].is_unique
    assert set(trials["status"]) <= {"FINISHED", "FAILED"}  # no trial run left open
    completed, failed = trials[trials["tags.status"] == "completed"], trials[trials["tags.status"] == "failed"]
    assert len(completed) >= 2 and len(failed) >= 1 and len(completed) + len(failed) == 6
    assert (failed["status"] == "FAILED").all() and failed["tags.error"].str.contains("Oversized model").all()
    assert (completed["status"] == "FINISHED").all() and (completed["params.dense_units"] == "32").all()
    client = mlflow.MlflowClient()
    for run_id in completed["run_id"]:
        curve = client.get_metric_history(run_id, "val_accuracy")
        assert [m.step for m in curve] == [0, 1]  # per-epoch metrics, step = epoch
    assert completed["metrics.objective"].max() > 0.5  # 2 epochs on 1,600 images; chance is 0.10

    best = json.loads(paths.best_hparams("T1").read_text())
    assert best["best_objective"] == pytest.approx(completed["metrics.objective"].max())
    assert best["params"] <= 300_000 and best["trial_id"] in set(completed["tags.trial_id"])
    recipe = Experiment.model_validate(best["recipe"])
    assert recipe.model == "CNN" and recipe.epochs == best["epochs"] <= 2
    table = pd.read_csv(paths.plots("T1") / "trials.csv")
    assert len(table) == 6 and table["best_so_far"].is_monotonic_increasing
    assert table["best_so_far"].iloc[-1] == pytest.approx(best["best_objective"])
    metrics = json.loads((paths.metrics("T1") / "tune.json").read_text())
    assert metrics["trials"] == 6 and metrics["failed"] == len(failed) and metrics["trials_per_hour"] > 0
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"top_trials.json", "search_progress.png", "best_hparams.json", "trials.csv"} <= artifacts

    load_stage("retrain").main(params, paths, "T1")
    trained = json.loads((paths.metrics("T1") / "train.json").read_text())
    assert trained["train_samples"] == 2000 and "val_accuracy" not in trained  # the whole training split
    assert trained["params"] == best["params"] and trained["epochs_run"] == best["epochs"]
    load_stage("evaluate").main(params, paths, "T1")
    scored = json.loads((paths.metrics("T1") / "evaluate.json").read_text())
    assert scored["test_accuracy"] > 0.5


def test_a_trial_that_crashes_is_tagged_invalid_and_the_search_goes_on(tmp_path, fashion, monkeypatch) -> None:
    params = make_project(tmp_path, fashion, max_trials=3)
    original_fit, calls = SearchHyperModel.fit, []

    def crash_second(self, hp, model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("out of memory, say")
        return original_fit(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(SearchHyperModel, "fit", crash_second)
    tune_main(params, Paths(tmp_path), "T1")
    trials = trial_runs().sort_values("tags.trial_id")
    assert trials["tags.status"].tolist() == ["completed", "invalid", "completed"]
    assert trials["status"].tolist() == ["FINISHED", "FAILED", "FINISHED"]
    assert "out of memory, say" in trials["tags.error"].iloc[1]
    assert json.loads((Paths(tmp_path).metrics("T1") / "tune.json").read_text())["failed"] == 1


@pytest.mark.slow
def test_same_search_same_trials(tmp_path, fashion) -> None:
    """A seeded search is repeatable: the same trials with the same scores, augmented trials included, and
    Hyperband continues an augmented trial from its saved weights."""
    scores = []
    for copy in ("a", "b"):
        root = tmp_path / copy
        root.mkdir()
        space = {**SMALL_SPACE, "augmentation": 0.1}
        tune_main(make_project(root, fashion, tuner="hyperband", max_trials=3, space=space), Paths(root), "T1")
        table = pd.read_csv(Paths(root).plots("T1") / "trials.csv")
        scores.append(table.drop(columns=["seconds", "minutes"]).fillna("-").to_dict("records"))  # NaN != NaN
    assert scores[0] == scores[1]
    assert {row["status"] for row in scores[0]} == {"completed"} and max(row["epochs"] for row in scores[0]) == 2
    assert {row["augmentation"] for row in scores[0]} == {0.1} and all(row["val_accuracy"] > 0.3 for row in scores[0])


# ---------------------------------------------------------------- resume and restart


@pytest.mark.slow
def test_interrupted_search_resumes_and_a_changed_space_starts_afresh(tmp_path, fashion, monkeypatch) -> None:
    params = make_project(tmp_path, fashion, max_trials=4)
    paths = Paths(tmp_path)
    original_fit, fitted = SearchHyperModel.fit, []

    def counted_fit(self, hp, model, *args, **kwargs):
        fitted.append(dict(hp.values))
        if os.environ.get("STOP_AT") == str(len(fitted)):
            raise KeyboardInterrupt("stopped in the third trial")
        return original_fit(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(SearchHyperModel, "fit", counted_fit)
    monkeypatch.setenv("STOP_AT", "3")
    with pytest.raises(KeyboardInterrupt):
        tune_main(params, paths, "T1")
    (first,) = parent_runs()["run_id"]
    assert mlflow.get_run(first).info.status == "FAILED"
    assert not mlflow.active_run()  # the trial's run and the stage's run were both ended
    interrupted = dict(fitted[2])

    monkeypatch.delenv("STOP_AT")
    fitted.clear()
    tune_main(params, paths, "T1")
    assert len(fitted) == 2 and fitted[0] == interrupted  # trials 1 and 2 were not trained again
    assert parent_runs()["run_id"].tolist() == [first] and mlflow.get_run(first).info.status == "FINISHED"
    trials = trial_runs(first)
    assert sorted(trials["tags.trial_id"]) == ["0", "1", "2", "3"]  # one run each: the cut-off one was deleted
    assert (trials["status"] == "FINISHED").all()
    resumed = pd.read_csv(paths.plots("T1") / "trials.csv")
    assert len(resumed) == 4

    fitted.clear()
    tune_main(params, paths, "T1")  # nothing left to do
    assert fitted == [] and parent_runs()["run_id"].tolist() == [first]

    space = {**SMALL_SPACE, "dense_units": [16]}
    changed = make_project(tmp_path, fashion, max_trials=4, space=space)
    tune_main(changed, paths, "T1")
    assert len(fitted) == 4 and all(values["dense_units"] == 16 for values in fitted)
    parents = parent_runs()["run_id"].tolist()
    assert len(parents) == 2 and len(trial_runs(parents[1])) == 4
    assert len(list(paths.tuning("T1").glob("trial_*"))) == 4  # the old trials are gone from the directory


# ---------------------------------------------------------------- distributed


@pytest.mark.slow
def test_chief_and_two_workers_share_one_search(tmp_path, fashion, private_mlflow) -> None:
    make_project(tmp_path, fashion, max_trials=6)
    mlflow.MlflowClient().search_experiments()  # create the store's tables once, not in three processes at once
    env = {**os.environ, "MLFLOW_TRACKING_URI": private_mlflow, "PYTHONPATH": str(ROOT / "src"),
           "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}  # fmt: skip
    cli = [sys.executable, "-m", "cnnlab.cli", "tune", "T1"]
    chief = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "tune.py"), "T1"],
        cwd=tmp_path, env={**env, "KERASTUNER_TUNER_ID": "chief"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    workers = [
        subprocess.Popen(cli, cwd=tmp_path, env={**env, "KERASTUNER_TUNER_ID": name}, **output)
        for name in ("worker1", "worker2")
    ]
    try:
        for process in [*workers, chief]:
            output, _ = process.communicate(timeout=600)
            assert process.returncode == 0, output[-3000:]
    finally:  # a chief whose workers died would wait for them forever
        for process in [*workers, chief]:
            process.kill()

    (parent,) = parent_runs()["run_id"]
    assert mlflow.get_run(parent).info.status == "FINISHED"
    trials = trial_runs(parent)
    assert len(trials) == 6 and trials["tags.trial_id"].is_unique  # no trial run twice
    assert (trials["status"] == "FINISHED").all()
    assert set(trials["tags.tuner_id"]) == {"worker1", "worker2"}  # both did work; the chief ran none
    table = pd.read_csv(Paths(tmp_path).plots("T1") / "trials.csv")
    assert sorted(table["trial_id"]) == sorted(int(t) for t in trials["tags.trial_id"])
    assert Paths(tmp_path).best_hparams("T1").is_file()
