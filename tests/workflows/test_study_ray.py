"""Studies on Ray (`executor: ray`): the settings, what runs where, and a real two-node cluster on loopback (a
head and a second node, separate processes) with MLflow on an HTTP tracking server: the same scores as one
training at a time, one finished run per arm and fold, and a node lost in the middle of a study."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@dataclass
class Node:
    """One `ray start` on this machine, with its own temp dir and ports."""

    temp_dir: Path
    args: list[str]
    node_id: str = ""

    def pids(self) -> list[int]:
        """This node's processes: those whose command line names its temp dir, and their children (its agents and
        workers do not name it; the workers lead process groups of their own)."""
        parents, named = {}, []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != os.getpid():
                try:
                    state, parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                    if state == "Z":
                        continue  # ended, not yet reaped by its new parent
                    parents[int(proc.name)] = int(parent)
                    if str(self.temp_dir).encode() in (proc / "cmdline").read_bytes():
                        named.append(int(proc.name))
                except (OSError, IndexError, ValueError):
                    continue  # ended meanwhile
        found, todo = set(named), list(named)
        while todo:
            pid = todo.pop()
            children = [child for child, parent in parents.items() if parent == pid and child not in found]
            found.update(children)
            todo.extend(children)
        return sorted(found)

    def raylets(self) -> list[int]:
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    found.append(pid)
        return found

    def stop(self) -> None:
        """`ray stop` for this node alone (`ray stop` itself ends every Ray process of the machine)."""
        for sig, wait in ((signal.SIGTERM, 2), (signal.SIGKILL, 10)):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)


RAY = str(Path(sys.executable).parent / "ray")


# Without RAY_AUTH_MODE, Ray turns token authentication on when ~/.ray/auth_token exists: the test's nodes and
# driver must not depend on what a user's home holds.
UNAUTHENTICATED = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def ray_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # A lost node is declared dead after 3 missed one-second health checks (the default waits about 30 s)
    return env | UNAUTHENTICATED | {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                                    "RAY_health_check_initial_delay_ms": "1000"}  # fmt: skip


def start_node(node: Node) -> None:
    done = subprocess.run([RAY, "start", *node.args], env=ray_env(), capture_output=True, text=True, timeout=120,
                          start_new_session=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def new_node(name: str, head_address: str | None) -> Node:
    """A head (no address) or a node that joins it: one CPU, a small object store, no dashboard, ports of its own.
    Ray reports the machine's own address for 127.0.0.1 (it does not advertise loopback)."""
    temp_dir = Path(tempfile.mkdtemp(prefix=f"ray{name}", dir="/tmp"))  # Ray's socket paths must stay short
    ports = [f"--{option}-port={free_port()}" for option in PORTS]
    if head_address:
        where = ["--address", head_address]
    else:
        where = ["--head", f"--port={free_port()}", f"--ray-client-server-port={free_port()}",
                 f"--dashboard-port={free_port()}", "--include-dashboard=false"]  # fmt: skip
    args = [*where, "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp_dir}",
            f"--object-store-memory={200 * 2**20}", "--disable-usage-stats", *ports]  # fmt: skip
    return Node(temp_dir, args)


PORTS = ("node-manager", "object-manager", "metrics-export", "runtime-env-agent", "dashboard-agent-listen",
         "dashboard-agent-grpc")  # fmt: skip


def option(args: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))


@pytest.fixture
def cluster() -> Iterator[tuple[Node, Node, str]]:
    """A head and a second node on 127.0.0.1, each stopped (and its temp dir removed) at the end, whatever happens."""
    nodes = [new_node("head", None)]
    address = f"127.0.0.1:{option(nodes[0].args, 'port')}"
    nodes.append(new_node("second", address))
    try:
        for node in nodes:
            start_node(node)
        yield nodes[0], nodes[1], address
    finally:
        for node in reversed(nodes):
            node.stop()
            shutil.rmtree(node.temp_dir, ignore_errors=True)


def node_ids(address: str, nodes: tuple[Node, ...]) -> str:
    """Each node's Ray id (told apart by node manager port: both report this machine's address); the id of the
    node a driver on this machine connects to."""
    import ray

    ray.init(address=address, logging_level="WARNING")
    try:
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == len(nodes) and len({n["NodeManagerAddress"] for n in alive}) == 1  # one machine
        by_port = {str(n["NodeManagerPort"]): n["NodeID"] for n in alive}
        for node in nodes:
            node.node_id = by_port[option(node.args, "node-manager-port")]
        return ray.get_runtime_context().get_node_id()
    finally:
        ray.shutdown()


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
    with mlflow_server(store, tmp_path / "artifacts", "127.0.0.1", free_port(), tmp_path / "server.log") as url:
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
