"""A run left RUNNING by a process killed outright (`kill -9`) is ended KILLED by the next run of its stage and
target; a run whose owner lives, or lives on another machine, is left alone, and no tuner worker joins a dead
chief's run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from cnnlab.tracking import owners
from cnnlab.tracking.runs import stage_run
from cnnlab.workflows.tuner import FINGERPRINT_TAG, find_chief_run
from helpers.project import ROOT

HOLD_A_RUN = """
import sys, time
from pathlib import Path
from cnnlab.tracking.runs import stage_run
with stage_run("train", sys.argv[2], target_tag="experiment_id", root=Path(sys.argv[1]), tracking_experiment="cnnlab",
               budget="quick", data_hash=None, params={}, computes=False) as run:
    print(run.info.run_id, flush=True)
    time.sleep(120)
"""


def run_in_process(root: Path, target: str) -> tuple[subprocess.Popen, str]:
    """A process that starts train@<target>'s run and holds it; with the run's id."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen([sys.executable, "-c", HOLD_A_RUN, str(root), target], env=env,
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def next_run(root: Path, target: str) -> None:
    with stage_run("train", target, target_tag="experiment_id", root=root, tracking_experiment="cnnlab",
                   budget="quick", data_hash=None, params={}, computes=False):  # fmt: skip
        pass


def status(run_id: str) -> str:
    return mlflow.MlflowClient().get_run(run_id).info.status


def test_a_run_killed_outright_is_ended_killed_by_the_next_run_of_its_stage(tmp_path: Path) -> None:
    process, killed = run_in_process(tmp_path, "F1")
    other, _ = run_in_process(tmp_path, "M1")  # another target's run is not this one's business
    process.send_signal(signal.SIGKILL)
    process.wait()
    other.send_signal(signal.SIGKILL)
    other.wait()
    assert status(killed) == "RUNNING"  # nothing could end it
    tags = mlflow.MlflowClient().get_run(killed).data.tags
    assert tags[owners.PID_TAG] == str(process.pid) and tags[owners.BOOT_TAG] == owners.boot_id()
    next_run(tmp_path, "F1")
    assert status(killed) == "KILLED"
    assert "owner process was gone" in mlflow.MlflowClient().get_run(killed).data.tags["cnnlab.ended_by"]
    stale_m1 = mlflow.search_runs(experiment_names=["cnnlab"], filter_string="tags.experiment_id = 'M1'")
    assert stale_m1["status"].tolist() == ["RUNNING"]


def test_a_run_whose_owner_lives_here_or_elsewhere_is_left_running(tmp_path: Path) -> None:
    process, alive = run_in_process(tmp_path, "F1")
    try:
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name("cnnlab").experiment_id
        stage = {"stage": "train", "experiment_id": "F1"}
        away = {owners.HOST_TAG: "another-machine", owners.PID_TAG: "99999999", owners.BOOT_TAG: "0"}
        elsewhere = client.create_run(experiment, tags={**stage, **away}).info.run_id
        earlier_boot = {**owners.owner_tags(), owners.BOOT_TAG: "an earlier boot"}
        rebooted = client.create_run(experiment, tags={**stage, **earlier_boot})
        next_run(tmp_path, "F1")
        assert (status(alive), status(elsewhere)) == ("RUNNING", "RUNNING")
        assert status(rebooted.info.run_id) == "KILLED"  # this machine restarted: all its processes are gone
    finally:
        process.kill()
        process.wait()


def test_a_tuner_worker_never_joins_a_chief_killed_outright(tmp_path: Path) -> None:
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("search")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tags = {FINGERPRINT_TAG: "f" * 16, **owners.owner_tags(), owners.PID_TAG: str(dead.pid)}
    client.create_run(experiment, tags=tags)
    with pytest.raises(RuntimeError, match="no running chief"):
        find_chief_run(experiment, "f" * 16, wait_seconds=0)
    live = client.create_run(experiment, tags={**tags, **owners.owner_tags()}).info.run_id
    assert find_chief_run(experiment, "f" * 16, wait_seconds=0) == live


def test_a_run_its_owner_ends_between_the_search_and_the_owner_check_stays_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stages of the same target at once (`dvc queue start -j 2`): the later one finds the earlier one's run
    RUNNING, and by the time it sees the owner gone, that owner has ended its run FINISHED and exited."""
    process, finished = run_in_process(tmp_path, "F1")
    owner_gone = owners.owner_gone

    def ends_then_exits(tags: dict[str, str]) -> bool:
        if tags.get(owners.PID_TAG) == str(process.pid):
            mlflow.MlflowClient().set_terminated(finished, status="FINISHED")  # the owner's last write
            process.send_signal(signal.SIGKILL)
            process.wait()
        return owner_gone(tags)

    monkeypatch.setattr(owners, "owner_gone", ends_then_exits)
    next_run(tmp_path, "F1")
    assert status(finished) == "FINISHED"
    assert "cnnlab.ended_by" not in mlflow.MlflowClient().get_run(finished).data.tags
