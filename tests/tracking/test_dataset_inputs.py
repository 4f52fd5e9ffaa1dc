"""Data sets in MLflow's own terms: each train, evaluate and study run has its data set among its inputs (name,
the data hash as digest, source, the split as context), read back through the MLflow client; the training runs
also have system metrics, and the evaluated model its card."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from cnnlab.nets.predict import model_card_path
from cnnlab.pipeline.stage import Paths
from cnnlab.tracking.cards import model_card
from cnnlab.tracking.inputs import ORIGIN_TAG, TEST, TRAINING, VALIDATION, log_prepared_inputs
from cnnlab.tracking.registry import CHAMPION
from cnnlab.tracking.runs import stage_run
from cnnlab.workflows.study.outputs import crossval_outputs, run_study_stage
from helpers.mlflow_store import new_store
from helpers.project import load_stage, prepared_project

CONTEXT = "mlflow.data.context"


def inputs_of(run_id: str) -> dict[str, tuple[str, str, str, dict[str, str]]]:
    """context -> (name, digest, source, the input's other tags) of a run's dataset inputs."""
    found = {}
    for entry in mlflow.MlflowClient().get_run(run_id).inputs.dataset_inputs:
        tags = {tag.key: tag.value for tag in entry.tags}
        dataset = entry.dataset
        found[tags.pop(CONTEXT)] = (dataset.name, dataset.digest, dataset.source, tags)
    return found


def test_each_split_is_an_input_named_after_the_data_set_with_the_data_hash(tmp_path: Path) -> None:
    meta = {"dataset": "pets", "image_shape": [8, 8, 3],
            "source": {"source": "local", "location": "/data/pets", "format": "image-dir"}}  # fmt: skip
    with stage_run("train", "P1", root=tmp_path, tracking_experiment="cnnlab", budget="quick", data_hash="0123abcd",
                   params={}, computes=False) as active:  # fmt: skip
        log_prepared_inputs(meta, "0123abcd", tmp_path, [TRAINING, VALIDATION])
        log_prepared_inputs(meta, "0123abcd", tmp_path, [TRAINING])  # a resumed run logs them again: no duplicate
    found = inputs_of(active.info.run_id)
    assert found.keys() == {TRAINING, VALIDATION}
    assert found[TRAINING][:2] == ("pets", "0123abcd-train") and found[VALIDATION][:2] == ("pets", "0123abcd-val")
    assert '"/data/pets"' in found[TRAINING][2] and found[TRAINING][3] == {ORIGIN_TAG: "local"}
    schema = mlflow.MlflowClient().get_run(active.info.run_id).inputs.dataset_inputs[0].dataset.schema
    assert '"shape":[-1,8,8,3]' in schema.replace(" ", "")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, fashion: dict) -> tuple[Paths, str, dict[str, str]]:
    """F0 trained, evaluated and registered, and C3 cross-validated (2 folds), on a small Fashion-MNIST, into
    an MLflow store of their own: (paths, the store, the stage runs by name)."""
    root = tmp_path_factory.mktemp("project")
    store = new_store(root / "mlflow.db")

    def edit(raw: dict) -> None:
        raw["mlflow"]["log_model"] = True
        raw["experiments"]["F0"]["budgets"]["quick"].update(epochs=1, train_samples=300)
        raw["crossval"]["C3"]["budgets"]["quick"].update(epochs=1, batch_size=32, train_samples=200, k=2)
        raw["crossval"]["C3"]["parallel"] = 1

    params = prepared_project(root, fashion, edit, train_size=400, test_size=100)
    paths = Paths(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store)
        load_stage("train").main(params, paths, "F0")
        load_stage("evaluate").main(params, paths, "F0")
        run_study_stage("crossval", "C3", params, paths, crossval_outputs)
    runs = mlflow.search_runs(experiment_names=["cnnlab"], output_format="list")
    return paths, store, {run.info.run_name: run.info.run_id for run in runs}


@pytest.fixture
def staged(project: tuple[Paths, str, dict[str, str]]) -> tuple[Paths, dict[str, str]]:
    """The project's paths and runs, its store the tracking URI (each test has its own otherwise)."""
    paths, store, runs = project
    mlflow.set_tracking_uri(store)
    return paths, runs


@pytest.mark.slow  # real train, evaluate and study stages: the full suite
def test_train_evaluate_and_study_runs_log_their_data_set(staged) -> None:
    paths, runs = staged
    data_hash = paths.data_hash("fashion_mnist")
    assert mlflow.get_run(runs["train@F0"]).data.tags["data_hash"] == data_hash
    train, evaluate, study = (inputs_of(runs[name]) for name in ("train@F0", "evaluate@F0", "crossval@C3"))
    assert {c: i[:2] for c, i in train.items()} == {TRAINING: ("fashion_mnist", f"{data_hash}-train"),
                                                   VALIDATION: ("fashion_mnist", f"{data_hash}-val")}  # fmt: skip
    assert {c: i[:2] for c, i in evaluate.items()} == {TEST: ("fashion_mnist", f"{data_hash}-test")}
    assert {c: i[:2] for c, i in study.items()} == {TRAINING: ("fashion_mnist", f"{data_hash}-train")}
    assert train[TRAINING][3] == {ORIGIN_TAG: "debian"}  # where the download stage found it


@pytest.mark.slow  # real train, evaluate and study stages: the full suite
def test_training_runs_have_system_metrics(staged) -> None:
    _, runs = staged
    for name in ("train@F0", "crossval@C3"):
        metrics = mlflow.get_run(runs[name]).data.metrics
        assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics
    assert not any(key.startswith("system/") for key in mlflow.get_run(runs["evaluate@F0"]).data.metrics)


@pytest.mark.slow  # real train, evaluate and study stages: the full suite
def test_the_champion_carries_the_class_names(staged) -> None:
    paths, _ = staged
    card = json.loads(model_card_path(paths.model("F0")).read_text())
    assert model_card(f"models:/cnnlab-F0@{CHAMPION}") == (card["classes"], (28, 28, 1), "fashion_mnist")
