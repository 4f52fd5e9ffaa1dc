"""Stage runs end FINISHED or FAILED, never RUNNING, even when MLflow's own end_run breaks."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from cnnlab.tracking import stage_run


def run(tmp_path: Path, fail: BaseException | None = None) -> str:
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
