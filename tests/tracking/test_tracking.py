"""Stage runs end FINISHED or FAILED, never RUNNING, even when MLflow's own end_run breaks."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from cnnlab.tracking.runs import stage_run, use_experiment
from cnnlab.training.fit import StopOnSignal
from cnnlab.util.signals import stops_at_safe_points


def run(tmp_path: Path, fail: BaseException | None = None, body: Callable[[], None] | None = None) -> str:
    with stage_run(
        "train",
        "F1",
        root=tmp_path,
        tracking_experiment="cnnlab",
        budget="quick",
        data_hash="h",
        params={"a": {"b": 1}},
    ) as active:
        if fail is not None:
            raise fail
        if body is not None:
            body()
    return active.info.run_id


def test_finished_run_has_tags_and_flattened_params(tmp_path: Path) -> None:
    found = mlflow.get_run(run(tmp_path))
    assert found.info.status == "FINISHED"
    assert found.data.params == {"a.b": "1"}
    assert {
        "stage": "train",
        "experiment_id": "F1",
        "budget": "quick",
        "data_hash": "h",
    }.items() <= found.data.tags.items()


def test_a_run_with_background_logged_metrics_ends_without_waiting_for_the_logger(tmp_path: Path) -> None:
    """Epoch metrics are logged in the background (MLflow's Keras callback); the run's end flushes them at once
    instead of waiting out the logger's 1 s poll of its queue."""
    ended: list[float] = []

    def body() -> None:
        mlflow.log_metrics({"val_accuracy": 0.5}, step=0, synchronous=False)
        time.sleep(0.2)  # the logger has taken the metrics and waits for more
        ended.append(time.perf_counter())

    run_id = run(tmp_path, body=body)
    assert time.perf_counter() - ended[0] < 0.4  # 0.8 s when the logger polls
    assert mlflow.get_run(run_id).data.metrics == {"val_accuracy": 0.5}


TARGET_KINDS = [("train", "F1", "experiment_id"), ("finetune", "D3", "transfer"), ("explain", "D3", "transfer"),
                ("ablation", "C4", "study"), ("crossval", "C3", "study"), ("tune", "T1", "search"),
                ("detect", "yolov3", "detect_job"), ("download", "mnist", "dataset")]  # fmt: skip


def test_a_stage_run_is_tagged_with_its_targets_kind_and_own_budget(tmp_path: Path) -> None:
    import yaml

    from cnnlab.params import parse_params
    from cnnlab.pipeline import stage
    from helpers.project import ROOT

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    own = (raw["experiments"]["F1"], raw["finetune"]["recipes"]["D3"], raw["ablation"]["C4"], raw["crossval"]["C3"],
           raw["tune"]["T1"])  # fmt: skip
    for section in own:
        section["budget"] = "full"  # each target's own budget, not the global quick one
    params = parse_params(raw)
    for stage_name, target, tag in TARGET_KINDS:
        with stage.mlflow_run(stage_name, target, params, stage.Paths(tmp_path), "h", {}, computes=False) as active:
            pass
        tags = mlflow.get_run(active.info.run_id).data.tags
        assert tags[tag] == target, (stage_name, target)
        assert tags["budget"] == ("quick" if tag in ("dataset", "detect_job") else "full"), (stage_name, target)
        assert tag == "dataset" or "dataset" not in tags, (stage_name, target)


def test_an_experiment_created_by_another_process_after_the_lookup_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tuner's chief and workers start together: each may find no experiment, and all but one lose the insert."""
    first = use_experiment("cnnlab", tmp_path)
    lookup = mlflow.get_experiment_by_name
    calls: list[str] = []

    def missed_once(name: str) -> object:
        calls.append(name)
        return None if len(calls) == 1 else lookup(name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", missed_once)
    assert use_experiment("cnnlab", tmp_path) == first
    assert len(calls) == 2


def test_interrupted_run_is_failed_even_if_end_run_breaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_end_run = mlflow.end_run

    def broken_end_run(status: str = "FINISHED") -> None:
        raise RuntimeError("async logging queue broken by the signal")

    monkeypatch.setattr(mlflow, "end_run", broken_end_run)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, KeyboardInterrupt("stopped by signal SIGTERM"))
    monkeypatch.setattr(mlflow, "end_run", real_end_run)
    (failed,) = mlflow.search_runs(experiment_names=["cnnlab"], output_format="list")
    assert failed.info.status == "FAILED"
    real_end_run()  # release the fluent API's active run for the next test


class InterruptsInDel:
    """Sends this process SIGINT from its __del__, where Python prints the KeyboardInterrupt and drops it."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(2)  # the handler runs here, inside __del__


@pytest.fixture
def ctrl_c_interrupts() -> Iterator[None]:
    """SIGINT as in a terminal (a test run started in the background has it ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed interrupt, on purpose
def test_a_ctrl_c_that_python_swallowed_still_stops_training(tmp_path: Path, ctrl_c_interrupts: None) -> None:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    reached = []

    def train_after_a_swallowed_interrupt() -> None:
        InterruptsInDel()  # garbage at once; its KeyboardInterrupt is only printed ("Exception ignored in ...")
        reached.append("the stage went on")
        model.fit(np.zeros((8, 2)), np.zeros(8), epochs=3, verbose=0, callbacks=[StopOnSignal()])
        reached.append("trained")

    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        run(tmp_path, body=train_after_a_swallowed_interrupt)
    assert reached == ["the stage went on"]  # Python did swallow it, and training stopped anyway
    (failed,) = mlflow.search_runs(experiment_names=["cnnlab"], output_format="list")
    assert failed.info.status == "FAILED"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored after the stage


def test_a_stop_during_training_waits_for_the_next_batch(tmp_path: Path) -> None:
    """Inside `stops_at_safe_points` (every fit) a SIGTERM does not raise where it lands, which could be half way
    through TensorFlow's own Python code, but at the next batch, and the run is still marked FAILED."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    reached = []

    class SignalMidStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if batch == 1:
                os.kill(os.getpid(), signal.SIGTERM)
                reached.append(batch)  # the handler has run: it did not raise here

    def train() -> None:
        with stops_at_safe_points():
            model.fit(np.zeros((32, 2)), np.zeros(32), batch_size=4, epochs=5, verbose=0,
                      callbacks=[SignalMidStep(), StopOnSignal()])  # fmt: skip

    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        run(tmp_path, body=train)
    assert reached == [1] and model.optimizer.iterations.numpy() == 2  # stopped before the third batch
    (failed,) = mlflow.search_runs(experiment_names=["cnnlab"], output_format="list")
    assert failed.info.status == "FAILED"

    def signal_at_the_end() -> None:
        with stops_at_safe_points():
            os.kill(os.getpid(), signal.SIGTERM)
            reached.append("after the signal")

    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):  # no batch came: leaving the block raises it
        run(tmp_path / "again", body=signal_at_the_end)
    assert reached == [1, "after the signal"]


def test_a_signal_ignored_by_nohup_stays_ignored_during_the_stage(tmp_path: Path) -> None:
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup dvc repro &` starts the stage
    try:
        seen = []
        run(tmp_path, body=lambda: seen.append(signal.getsignal(signal.SIGHUP)))
    finally:
        signal.signal(signal.SIGHUP, before)
    assert seen == [signal.SIG_IGN]  # a closed terminal does not stop it


def test_a_logged_model_lists_its_pinned_requirements_without_a_child_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    from mlflow.utils import requirements_utils

    from cnnlab.tracking.runs import log_keras_model

    def no_capture(*args: object, **kwargs: object) -> None:
        raise AssertionError("MLflow loaded the model in a child process to infer its requirements")

    monkeypatch.setattr(requirements_utils, "_capture_imported_modules", no_capture)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    logged = {}
    run(tmp_path, body=lambda: logged.update(info=log_keras_model(model, np.ones((4, 3), np.uint8))))
    folder = mlflow.artifacts.download_artifacts(logged["info"].model_uri, dst_path=str(tmp_path / "model"))
    requirements = Path(folder, "requirements.txt").read_text().split()
    for package in ("mlflow", "keras", "numpy"):
        assert f"{package}=={importlib.metadata.version(package)}" in requirements
    assert any(r.split("==")[0] in ("tensorflow", "tensorflow-cpu", "jax", "torch") for r in requirements)
    assert logged["info"].signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3)
    reloaded = mlflow.keras.load_model(logged["info"].model_uri)
    np.testing.assert_allclose(reloaded.predict(np.ones((2, 3)), verbose=0), model.predict(np.ones((2, 3)), verbose=0))
