"""System metrics on training runs: every run has them, however short; sampling goes on through a long run and
a resumed one; and a run still ends at once."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pytest

from cnnlab.tracking.runs import stage_run
from cnnlab.tracking.system import system_metrics

CPU, MEMORY = "system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"


def training_run(tmp_path: Path, seconds: float, sampling: float, run_id: str | None = None) -> tuple[str, float]:
    """A stage run whose body sleeps `seconds` under system metrics; (its id, how long leaving the block took)."""
    with stage_run("train", "F1", root=tmp_path, tracking_experiment="cnnlab", budget="quick", data_hash="h",
                   params={}, run_id=run_id, computes=False) as active:  # fmt: skip
        with system_metrics(sampling):
            time.sleep(seconds)
            leaving = time.perf_counter()
        left = time.perf_counter() - leaving
    return active.info.run_id, left


def test_a_run_shorter_than_the_interval_gets_system_metrics_and_ends_at_once(tmp_path: Path) -> None:
    run_id, left = training_run(tmp_path, 0.3, sampling=10)
    assert left < 0.25  # the sampler is not waited out (it sleeps 10 s between samples)
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {CPU, MEMORY} <= run.data.metrics.keys()
    assert 0 <= run.data.metrics[CPU] <= 100 and run.data.metrics[MEMORY] > 0


def test_samples_follow_the_interval_and_a_resumed_run_goes_on_from_its_last_step(tmp_path: Path) -> None:
    client = mlflow.MlflowClient()
    run_id, _ = training_run(tmp_path, 0.75, sampling=0.2)
    first = [m.step for m in client.get_metric_history(run_id, CPU)]
    assert len(first) >= 3 and first == list(range(len(first)))  # every 0.2 s, and the partial last one
    training_run(tmp_path, 0.1, sampling=10, run_id=run_id)
    steps = [m.step for m in client.get_metric_history(run_id, CPU)]
    assert steps == [*first, len(first)]


def test_a_gpu_that_answers_is_monitored_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What NVML (nvidia-ml-py) reports on a GPU machine: here a stand-in, as this machine may have no GPU."""
    from mlflow.system_metrics.metrics import gpu_monitor
    from mlflow.system_metrics.metrics.base_metrics_monitor import BaseMetricsMonitor

    class FakeGPU(BaseMetricsMonitor):
        def collect_metrics(self) -> None:
            self._metrics["gpu_0_utilization_percentage"].append(87.0)

        def aggregate_metrics(self) -> dict[str, float]:
            return {k: sum(v) / len(v) for k, v in self._metrics.items()}

    monkeypatch.setattr(gpu_monitor, "GPUMonitor", FakeGPU)
    run_id, _ = training_run(tmp_path, 0.1, sampling=10)
    assert mlflow.get_run(run_id).data.metrics["system/gpu_0_utilization_percentage"] == 87.0
