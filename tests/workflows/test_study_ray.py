"""Studies on Ray (`executor: ray`): the settings, what runs where, and a real two-node cluster on loopback (a
head and a second node, separate processes) with MLflow on an HTTP tracking server: the same scores as one
training at a time, one finished run per arm and fold, and a node lost in the middle of a study."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from cnnlab.params import ParamsError, parse_params
from cnnlab.params.studies import RayTasks
from cnnlab.pipeline.stage import Paths
from cnnlab.util.errors import UserError
from cnnlab.workflows.study.folds import FoldTrainer, fold_trainer
from cnnlab.workflows.study.ledger import StudyRun
from cnnlab.workflows.study.plan import StudyPlan
from helpers.project import ROOT, free_port, prepared_project

sys.path.append(str(ROOT / "benchmarks"))  # the loopback cluster is shared with the Ray benchmark
from loopback_ray import UNAUTHENTICATED, Node, loopback_cluster, node_ids

FOLDS = 2
ARMS = ("no_dropout", "dropout")  # C3's variants


def tiny_crossval(raw: dict) -> None:
    """C3 alone: 2 arms x 2 folds of 100 Fashion-MNIST images each, one epoch."""
    raw["datasets"] = ["fashion_mnist"]
    raw["finetune"]["run"] = []
    raw["experiments"] = {"C1": raw["experiments"]["C1"] | {"dataset": "fashion_mnist"}}
    raw["ablation"] = {}
    raw["crossval"]["C3"]["budgets"]["quick"] = {"epochs": 1, "batch_size": 32, "train_samples": 200, "k": FOLDS}


def project(root: Path, fashion: dict, edit: Callable[[dict], None] = tiny_crossval) -> Any:
    """A project at `root` with the tiny C3 and 300 prepared Fashion-MNIST training images; its params."""
    root.mkdir()
    return prepared_project(root, fashion, edit, 300, 50)


def run_study(params: Any, root: Path, parallel: int = 1, ray: RayTasks | None = None) -> StudyRun:
    """The C3 study of the project at `root`, in this process as its stage runs it."""
    paths = Paths(root)
    plan = StudyPlan.make("crossval", "C3", params, paths)
    with plan.parent_run(params, paths, {}):
        return plan.train_all(params.seed, parallel, ray)


# ---------------------------------------------------------------- settings


def project_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_ray_settings_default_to_local_and_bad_ones_are_refused() -> None:
    raw = project_params()
    study = parse_params(raw).study("C3")
    assert study.executor == "local" and study.ray == RayTasks(num_cpus=1, num_gpus="auto", max_retries=3)
    raw["crossval"]["C3"] |= {"executor": "ray", "ray": {"num_cpus": 2, "num_gpus": 0.5, "max_retries": 1}}
    study = parse_params(raw).study("C3")
    assert study.executor == "ray" and study.ray == RayTasks(num_cpus=2, num_gpus=0.5, max_retries=1)
    for edit, message in [
        ({"executor": "dask"}, r"crossval\.C3\.executor"),
        ({"ray": {"num_gpus": -1}}, r"crossval\.C3\.ray\.num_gpus"),
        ({"ray": {"max_retries": -1}}, r"crossval\.C3\.ray\.max_retries"),
        ({"ray": {"address": "10.0.0.1:6379"}}, r"crossval\.C3\.ray\.address"),  # the address is not a param
    ]:
        bad = project_params()
        bad["crossval"]["C3"] |= edit
        with pytest.raises(ParamsError, match=message):
            parse_params(bad)


def test_without_ray_installed_the_ray_executor_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "cnnlab.workflows.study.ray_executor", raising=False)
    x, y = np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, np.int64)
    with pytest.raises(UserError, match=r"needs Ray: `pip install 'cnnlab\[ray\]'`"):
        fold_trainer(x, y, 2, RayTasks())
    assert isinstance(fold_trainer(x, y, 2, None), FoldTrainer)  # the local executor needs no Ray


def test_a_study_with_nothing_left_to_train_starts_no_ray() -> None:
    import ray

    from cnnlab.workflows.study.ray_executor import RayTrainer

    x, y = np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, np.int64)
    with RayTrainer(x, y, RayTasks()) as trainer:
        assert list(trainer.scores([])) == []
    assert not ray.is_initialized()


# ---------------------------------------------------------------- a cluster of two nodes on loopback


@pytest.fixture
def cluster() -> Iterator[tuple[Node, Node, str]]:
    """A head and a second node on 127.0.0.1, each stopped (and its temp dir removed) at the end, whatever happens."""
    with loopback_cluster(2) as started:
        yield started.nodes[0], started.nodes[1], started.address


def outcome(run: StudyRun) -> list[tuple]:
    """What a training's score is, without its timing and run id."""
    return [(s.arm, s.fold, s.val_accuracy, s.val_loss, s.train_accuracy, s.epochs) for s in run.scores]


def fold_runs(experiment: str) -> pd.DataFrame:
    """The study's fold runs in MLflow (deleted ones are not listed)."""
    runs = mlflow.search_runs(experiment_names=[experiment])
    return runs[runs["tags.fold"].notna()] if "tags.fold" in runs else runs


def kill_when_training_on(node: Node, experiment: str, done: threading.Event, killed: dict) -> None:
    """SIGKILL the node's raylet once a training runs on it (its fold run is RUNNING in MLflow)."""
    while not done.is_set():
        runs = fold_runs(experiment)
        if "tags.ray_node_id" in runs:
            running = runs[(runs["tags.ray_node_id"] == node.node_id) & (runs["status"] == "RUNNING")]
            if len(running):
                killed["run_id"], killed["name"] = running.iloc[0]["run_id"], running.iloc[0]["tags.mlflow.runName"]
                (raylet,) = node.raylets()
                os.kill(raylet, signal.SIGKILL)
                return
        time.sleep(0.2)


@pytest.mark.slow
def test_a_study_on_two_nodes_scores_as_one_training_at_a_time_and_survives_a_lost_node(
    tmp_path: Path, fashion: dict, cluster: tuple[Node, Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnlab.tracking.server import mlflow_server
    from helpers.mlflow_store import new_store

    head, second, address = cluster
    for name, value in UNAUTHENTICATED.items():
        monkeypatch.setenv(name, value)
    assert node_ids(address, (head, second)) == head.node_id  # the study's driver, and its images, on the head
    params = project(tmp_path / "alone", fashion)
    alone = run_study(params, tmp_path / "alone")  # one training at a time, in this process
    experiment = params.mlflow.experiment_name
    store = new_store(tmp_path / "server" / "mlflow.db")
    with mlflow_server(
        store, tmp_path / "artifacts", "127.0.0.1", free_port(), tmp_path / "server.log", workers=1
    ) as url:  # a few calls per training: one server process is enough
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        monkeypatch.setenv("RAY_ADDRESS", address)
        tasks = RayTasks(max_retries=3)

        project(tmp_path / "cluster", fashion)
        on_ray = run_study(params, tmp_path / "cluster", ray=tasks)
        assert outcome(on_ray) == outcome(alone) and on_ray.trained == len(ARMS) * FOLDS
        runs = fold_runs(experiment)
        assert len(runs) == len(ARMS) * FOLDS and set(runs["status"]) == {"FINISHED"}
        assert sorted(runs["tags.mlflow.runName"]) == sorted(f"C3/{a}/fold{f}" for a in ARMS for f in (1, 2))
        assert set(runs["tags.ray_node_id"]) == {head.node_id, second.node_id}  # both nodes trained
        arms = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.arm != ''")
        assert set(runs["tags.mlflow.parentRunId"]) <= set(arms["run_id"])  # each fold under its arm's run

        # The second node's raylet killed while it trains: Ray runs that training again on the head
        params = project(tmp_path / "lost", fashion, lost_node_study)
        done, killed = threading.Event(), {}
        watcher = threading.Thread(target=kill_when_training_on, args=(second, LOST, done, killed))
        watcher.start()
        try:
            lost = run_study(params, tmp_path / "lost", ray=tasks)
        finally:
            done.set()
            watcher.join()
        assert killed, "no training ran on the second node before the study ended"
        assert not second.raylets() and outcome(lost) == outcome(alone) and lost.trained == len(ARMS) * FOLDS
        runs = fold_runs(LOST)
        assert len(runs) == len(ARMS) * FOLDS and set(runs["status"]) == {"FINISHED"}  # the cut-off run deleted
        assert killed["run_id"] not in set(runs["run_id"])
        assert list(runs[runs["tags.mlflow.runName"] == killed["name"]]["tags.ray_node_id"]) == [head.node_id]

        # Run again: everything is in the ledger, nothing is retrained
        ledger = finished(tmp_path / "lost")
        again = run_study(params, tmp_path / "lost", ray=tasks)
        assert again.trained == 0 and outcome(again) == outcome(alone)
        assert finished(tmp_path / "lost") == ledger and len(fold_runs(LOST)) == len(ARMS) * FOLDS


LOST = "lost-node"  # the MLflow experiment of the study that loses a node


def lost_node_study(raw: dict) -> None:
    tiny_crossval(raw)
    raw["mlflow"]["experiment_name"] = LOST


def finished(root: Path) -> dict[str, str]:
    """The study's ledger: each finished training's record."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(Paths(root).folds("C3").glob("*/fold*.json"))}
