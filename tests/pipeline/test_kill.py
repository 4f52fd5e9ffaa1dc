"""`kill -9` in the middle of a download stage and of a train stage, under a real `dvc repro`: the next `dvc repro`
removes what the killed process left (temporary files, staging folders), ends its RUNNING MLflow run, and
finishes normally."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from cnnlab.tracking.owners import PID_TAG
from cnnlab.util.files import STAGING, TMP_MARK
from helpers.project import FASHION_DEBIAN, copy_project, run

pytestmark = pytest.mark.slow
WAIT = 120.0  # seconds for what a stage does in a few


class StallingFiles(http.server.BaseHTTPRequestHandler):
    """Serves Fashion-MNIST's files; while `stall` is set, sends the first half of a file and then hangs."""

    stall = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:  # the name http.server calls
        path = FASHION_DEBIAN / Path(self.path).name
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.stall.is_set():
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.release.wait(WAIT)
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StallingFiles)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        StallingFiles.release.set()
        server.shutdown()


def online_only_f1(base: str) -> Callable[[dict], None]:
    """Fashion-MNIST from `base` only (no mirror, no Debian folder), and F1 alone, a few seconds of training."""

    def edit(params: dict) -> None:
        params["datasets"] = ["fashion_mnist"]
        params["data"] |= {"mirror": None, "debian_dir": "/nonexistent", "online": True}
        params["data"]["online_base"] = {"fashion_mnist": base}
        params["finetune"]["run"] = []
        params["tune"], params["crossval"], params["ablation"] = {}, {}, {}
        params["detect"]["run"] = []
        f1 = params["experiments"]["F1"]
        f1["budgets"] = {"quick": {"epochs": 3, "train_samples": 3000}}
        params["experiments"] = {"F1": f1}

    return edit


def wait_for(found: Callable[[], Path | None], what: str) -> Path:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if (path := found()) is not None:
            return path
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {WAIT:.0f} s")


def leftovers(project: Path) -> list[Path]:
    """Temporary files and staging folders anywhere in the project outside git's and DVC's own folders."""
    found = []
    for here, folders, files in os.walk(project):
        folders[:] = [name for name in folders if name not in {".git", ".dvc"}]
        found += [Path(here) / name for name in [*folders, *files] if TMP_MARK in name or name.startswith(STAGING)]
    return found


def owner_pid(path: Path, mark: str) -> int:
    """The process id in a temporary or staging name (`<mark><pid>-...`)."""
    return int(path.name.partition(mark)[2].partition("-")[0])


def kill_stage(project: Path, env: dict, target: str, found: Callable[[], Path | None], mark: str) -> int:
    """Start `dvc repro target`, kill -9 the process that owns the first leftover `found` returns, and wait
    for DVC to report the failure. The killed process id."""
    repro = subprocess.Popen(["dvc", "repro", target], cwd=project, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        pid = owner_pid(wait_for(found, f"leftover of {target}"), mark)
        os.kill(pid, signal.SIGKILL)
        output, _ = repro.communicate(timeout=WAIT)
    finally:
        repro.kill()
    assert repro.returncode != 0, output
    return pid


def stage_runs(uri: str, stage: str) -> dict[int, str]:
    """Owner process id → status of every MLflow run of `stage`."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("cnnlab")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.stage = '{stage}'")
    return {int(r.data.tags[PID_TAG]): r.info.status for r in runs}


def test_the_run_after_a_kill_9_cleans_up_ends_the_stale_run_and_finishes(
    tmp_path: Path, file_server: str, fashion_dir: Path
) -> None:
    project, uri = tmp_path / "project", f"sqlite:///{tmp_path / 'mlflow.db'}"
    project.mkdir()
    env = copy_project(project, online_only_f1(file_server)) | {"MLFLOW_TRACKING_URI": uri, "CNNLAB_WARM_IDLE": "5"}
    mlflow.set_tracking_uri(uri)
    raw = project / "data" / "raw" / "fashion_mnist"

    # The download, killed while the first file is half written into the DVC output data/raw/fashion_mnist/
    StallingFiles.stall.set()
    partial = lambda: next((p for p in raw.glob(f".*{TMP_MARK}*") if p.stat().st_size > 0), None)  # noqa: E731
    killed = kill_stage(project, env, "download@fashion_mnist", partial, TMP_MARK)
    StallingFiles.stall.clear()
    StallingFiles.release.set()
    assert leftovers(project) and stage_runs(uri, "download") == {killed: "RUNNING"}
    run(["dvc", "repro", "download@fashion_mnist"], project, env)
    assert leftovers(project) == []
    runs = stage_runs(uri, "download")
    assert runs.pop(killed) in {"KILLED", "FAILED"} and list(runs.values()) == ["FINISHED"]
    assert len(list(raw.glob("*.gz"))) == 4

    # The training, killed while its outputs are staged
    run(["dvc", "repro", "preprocess@fashion_mnist"], project, env)
    staging = lambda: next(iter(project.glob(f"{STAGING}*")), None)  # noqa: E731
    killed = kill_stage(project, env, "train@F1", staging, STAGING)
    assert leftovers(project) and stage_runs(uri, "train") == {killed: "RUNNING"}
    run(["dvc", "repro", "train@F1"], project, env)
    assert leftovers(project) == []
    runs = stage_runs(uri, "train")
    assert runs.pop(killed) in {"KILLED", "FAILED"} and list(runs.values()) == ["FINISHED"]
    assert (project / "models" / "F1.keras").is_file()
    assert run(["dvc", "status", "train@F1"], project, env).stdout.strip().endswith("up to date.")
