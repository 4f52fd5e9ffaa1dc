"""Warm workers: a stage handed to one runs as it would in its own process, only without the import wait."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.project import ROOT, prepared_project

SCRIPT = """
import gc, json, os, sys
from cnnlab.pipeline.warm import run_in_warm_worker
run_in_warm_worker(__file__)
import helper
print(json.dumps({
    "argv": sys.argv[1:], "cwd": os.getcwd(), "answer": os.environ.get("ANSWER"), "helper": helper.VALUE,
    "warm_for": os.environ.get("CNNLAB_WARM_CLIENT"), "keras_preloaded": "keras" in sys.modules,
    "frozen": gc.get_freeze_count(),
    "worker": int(open(f"/proc/{os.getppid()}/stat").read().rsplit(")", 1)[1].split()[1]),
}))
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


def short_folder() -> Path:
    """A folder for sockets: a Unix socket's path is limited to 107 bytes, which pytest's own folders can pass."""
    return Path(tempfile.mkdtemp(prefix="cw-"))


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A worker of this module's own (its socket in a private folder), ready, and gone soon after the last test.
    The first run finds none: it runs in its own process and starts one; the runs after it are served."""
    runtime = short_folder()
    script = script_in(tmp_path_factory.mktemp("first"))
    done, report = run_script(script, runtime, "0")
    assert done.returncode == 0, done.stderr
    assert report["warm_for"] is None and not report["keras_preloaded"]
    assert "no warm worker" not in done.stderr  # starting one is not a failure worth a line
    deadline = time.monotonic() + 180
    while not report["warm_for"]:
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.5)
        report = run_script(script, runtime, "0")[1]
    yield runtime
    shutil.rmtree(runtime, ignore_errors=True)


def env_for(runtime: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNNLAB_", "DVC_"))}
    return {**env, "XDG_RUNTIME_DIR": str(runtime), "CNNLAB_WARM_IDLE": "20", **extra}


def script_in(folder: Path, helper_value: str = "1") -> Path:
    (folder / "helper.py").write_text(f"VALUE = {helper_value}\n")
    script = folder / "stage.py"
    script.write_text(SCRIPT)
    return script


def run_script(script: Path, runtime: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=script.parent,
        env=env_for(runtime, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(done.stdout.splitlines()[-1]) if done.stdout.strip() else {}
    return done, report


def test_a_script_runs_in_the_worker_with_its_arguments_environment_streams_and_exit_code(
    tmp_path: Path, runtime: Path
) -> None:
    script = script_in(tmp_path)
    done, report = run_script(script, runtime, "3", "more", ANSWER="42")
    assert done.returncode == 3, done.stderr
    assert report["argv"] == ["3", "more"]
    assert report["cwd"] == str(tmp_path)
    assert report["answer"] == "42"
    assert report["keras_preloaded"], "the run did not happen in a worker that had Keras imported"
    assert report["frozen"] > 100_000, "the preloaded modules' objects should be out of the stage's collections"
    assert report["warm_for"] and int(report["warm_for"]) != report["worker"]
    assert done.stderr.strip().endswith("to stderr")


def test_one_worker_serves_many_runs_and_project_edits_take_effect(tmp_path: Path, runtime: Path) -> None:
    script = script_in(tmp_path, helper_value="1")
    first = run_script(script, runtime, "0")[1]
    (tmp_path / "helper.py").write_text("VALUE = 2\n")
    started = time.monotonic()
    second = run_script(script, runtime, "0")[1]
    assert (first["helper"], second["helper"]) == (1, 2)
    assert first["worker"] == second["worker"]
    assert time.monotonic() - started < 2.5, "a warm run should not pay Keras's import again"


def test_copies_of_a_project_in_other_folders_share_one_worker(tmp_path: Path, runtime: Path) -> None:
    """Each copy puts its own sources on PYTHONPATH (as the tests' project copies do): still one worker, and each
    run imports its own copy's modules."""
    reports = []
    for value in ("1", "2"):
        copy = tmp_path / f"copy{value}"
        (copy / "src").mkdir(parents=True)
        script = script_in(copy, helper_value=value)
        (copy / "helper.py").rename(copy / "src" / "helper.py")  # found through PYTHONPATH only
        reports.append(run_script(script, runtime, "0", PYTHONPATH=str(copy / "src"))[1])
    assert [r["helper"] for r in reports] == [1, 2]
    assert reports[0]["warm_for"] and reports[0]["worker"] == reports[1]["worker"]


def test_switched_off_the_script_runs_in_its_own_process(tmp_path: Path, runtime: Path) -> None:
    done, report = run_script(script_in(tmp_path), runtime, "0", CNNLAB_WARM="0")
    assert done.returncode == 0, done.stderr
    assert report["warm_for"] is None
    assert not report["keras_preloaded"]


def test_an_uncaught_error_prints_the_scripts_traceback_and_exits_1(tmp_path: Path, runtime: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text(
        "from cnnlab.pipeline.warm import run_in_warm_worker\nrun_in_warm_worker(__file__)\n"
        "raise ValueError('bad input')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env_for(runtime), capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "ValueError: bad input" in done.stderr
    assert 'broken.py", line 3' in done.stderr
    for worker_file in ("runpy", "warm.py", "warm_worker.py"):  # the worker's frames are not the user's
        assert worker_file not in done.stderr


def test_a_signal_to_the_stages_process_reaches_the_stage(tmp_path: Path, runtime: Path) -> None:
    script = tmp_path / "sleeper.py"
    script.write_text(
        "import os, sys, time\nfrom cnnlab.pipeline.warm import run_in_warm_worker\nrun_in_warm_worker(__file__)\n"
        "print(os.getpid(), flush=True)\ntime.sleep(600)\n"
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, env=env_for(runtime), stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    stage_pid = int(process.stdout.readline())
    assert stage_pid != process.pid
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while Path(f"/proc/{stage_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{stage_pid}").exists()


@pytest.mark.slow
def test_a_train_stage_gives_the_same_model_metrics_warm_and_cold(tmp_path: Path, runtime: Path, fashion: dict) -> None:
    """The worker has imported Keras and TensorFlow before the stage set its seeds and threads: that must not
    change a single number of the training."""

    def small(raw: dict) -> None:
        raw["experiments"]["F1"]["budgets"] = {"quick": {"epochs": 2, "train_samples": 1500}}

    prepared_project(tmp_path, fashion, small, train_size=2000, test_size=200)
    metrics = {}
    for mode in ("1", "0"):
        done = subprocess.run(
            [sys.executable, str(ROOT / "stages" / "train.py"), "F1"],
            cwd=tmp_path,
            env=env_for(runtime, CNNLAB_WARM=mode, MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"]),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "no warm worker" not in done.stderr
        metrics[mode] = json.loads((tmp_path / "metrics" / "F1" / "train.json").read_text())
        metrics[mode].pop("train_seconds")
    assert len(list(runtime.glob("*/*.log"))) == 1, "the warm run was served by a worker of its own: it ran cold"
    assert metrics["1"] == metrics["0"]
    assert metrics["1"]["val_accuracy"] > 0.5  # it learned (chance is 0.1)


def test_a_stage_imported_by_a_test_stays_in_the_importing_process(tmp_path: Path, runtime: Path) -> None:
    importer = tmp_path / "importer.py"
    importer.write_text(
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('a_stage', {str(ROOT / 'stages' / 'report.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('still here', os.environ.get('CNNLAB_WARM_CLIENT'))\n"
    )
    done = subprocess.run(
        [sys.executable, str(importer)], cwd=tmp_path, env=env_for(runtime), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "still here None"


def test_a_worker_that_goes_away_before_the_stage_starts_leaves_it_to_run_here(tmp_path: Path) -> None:
    """A worker that exits, idle, just as a stage connects: the stage runs in its own process instead."""
    script = tmp_path / "stage.py"
    script.write_text(
        "import os, socket, threading\nfrom cnnlab.pipeline import warm\n"
        "listener = socket.socket(socket.AF_UNIX)\n"
        "listener.bind(str(warm.runtime_dir() / f'{warm.worker_key()}.sock'))\nlistener.listen()\n"
        "threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True).start()\n"
        "warm.run_in_warm_worker(__file__)\nprint('ran here', os.environ.get('CNNLAB_WARM_CLIENT'))\n"
    )
    runtime = short_folder()
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env_for(runtime), capture_output=True, text=True
    )
    shutil.rmtree(runtime, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ran here None"
    assert "no warm worker (" in done.stderr


def test_a_runtime_folder_too_long_for_a_socket_is_named_and_the_stage_runs_here(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    done, report = run_script(script_in(tmp_path), deep, "0")
    assert done.returncode == 0, done.stderr
    assert report["warm_for"] is None
    assert "too long a path for a Unix socket; set XDG_RUNTIME_DIR" in done.stderr


def test_the_worker_fills_mlflows_first_call_caches_before_forking_stages() -> None:
    """What a stage's first MLflow write would compute (1 s a stage): filled once, in the worker."""
    probe = (
        "from cnnlab.pipeline.warm_worker import fill_first_call_caches; fill_first_call_caches()\n"
        "from mlflow.utils import requirements_utils as r\n"
        "from mlflow.store.db.base_sql_model import Base\n"
        "mappers = list(Base.registry.mappers)\n"
        "assert r._PACKAGES_TO_MODULES and r._PACKAGES_TO_MODULES.get('keras') == 'keras'\n"
        "assert len(mappers) > 10 and all('_sorted_tables' in m.__dict__ for m in mappers)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def run_warm(project: Path, runtime: Path, **env: str) -> subprocess.CompletedProcess:
    """`cnnlab warm` in `project`, on its own MLflow store (as a newcomer's, not the test's)."""
    project.mkdir(exist_ok=True)
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    env = {k: v for k, v in env_for(runtime, **env).items() if k != "MLFLOW_TRACKING_URI"}
    command = [str(Path(sys.executable).parent / "cnnlab"), "warm"]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_cnnlab_warm_readies_the_worker_and_the_store_for_the_first_stage(tmp_path: Path) -> None:
    runtime, project = short_folder(), tmp_path / "project"
    try:
        done = run_warm(project, runtime)
        assert done.returncode == 0, done.stderr
        assert "the stage worker is ready in" in done.stdout
        assert (project / "mlflow.db").is_file(), "the project's MLflow store should exist before the first stage"
        report = run_script(script_in(project), runtime, "0")[1]
        assert report["warm_for"] and report["keras_preloaded"], "the first stage after `cnnlab warm` ran cold"
        again = run_warm(project, runtime)
        assert again.returncode == 0 and "running already" in again.stdout
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_cnnlab_warm_names_the_log_of_a_worker_that_fails_to_start(tmp_path: Path) -> None:
    runtime, project = short_folder(), tmp_path / "project"
    site = tmp_path / "project" / "site"
    site.mkdir(parents=True)
    # Loaded by every Python process on this path; the worker is the one that starts in /.
    (site / "sitecustomize.py").write_text(
        "import os, sys\nif os.getcwd() == '/':\n    print('no worker today', file=sys.stderr)\n    os._exit(3)\n"
    )
    try:
        done = run_warm(project, runtime, PYTHONPATH=str(site))
        assert done.returncode == 1
        log = next(runtime.glob("cnnlab-warm-*/*.log"))
        assert str(log) in done.stderr and "stopped while starting" in done.stderr
        assert "no worker today" in log.read_text()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_cnnlab_warm_switched_off_starts_nothing(tmp_path: Path) -> None:
    runtime = short_folder()
    try:
        done = run_warm(tmp_path / "project", runtime, CNNLAB_WARM="0")
        assert done.returncode == 0 and "warm stage workers are off" in done.stdout
        assert not list(runtime.glob("cnnlab-warm-*/*.sock"))
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_cnnlab_warm_starts_a_worker_when_the_one_it_found_exits(tmp_path: Path) -> None:
    """A worker that answers once, then goes (its idle time over): `cnnlab warm` starts one and waits for it."""
    runtime, project = short_folder(), tmp_path / "project"
    project.mkdir()
    env = env_for(runtime)
    code = "from cnnlab.pipeline.warm import runtime_dir, worker_key; print(runtime_dir() / f'{worker_key()}.sock')"
    sock_path = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
    going = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    going.bind(sock_path)
    going.listen(1)

    def answer_once() -> None:
        going.accept()[0].close()
        going.close()
        os.unlink(sock_path)

    threading.Thread(target=answer_once, daemon=True).start()
    try:
        done = run_warm(project, runtime)
        assert done.returncode == 0, done.stderr
        assert run_script(script_in(project), runtime, "0")[1]["warm_for"], "no worker took the stage"
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
