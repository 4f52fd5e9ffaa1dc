"""MLflow system metrics (CPU, memory, disk, network, and GPU where NVML or ROCm answers) on a training run.

MLflow's own monitor (`start_run(log_system_metrics=True)`) samples at the start of each interval and publishes at
its end, so a run shorter than the interval (10 s) gets nothing. Here each sample covers the interval before it,
and the run's end publishes the last, partial one: every training run has its figures, and ending one costs a
single batch write, not a wait for the sampler. `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL` sets the interval.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import mlflow

log = logging.getLogger(__name__)
SAMPLING_SECONDS = 10.0  # MLflow's default: a few rows per minute of training


@contextlib.contextmanager
def system_metrics(sampling_seconds: float = SAMPLING_SECONDS) -> Iterator[None]:
    """Log system metrics (`system/cpu_utilization_percentage`, ...) to the active run while the block runs.

    A resumed run's metrics go on from its last step. Without psutil the block runs unmonitored, with a warning.
    """
    active = mlflow.active_run()
    assert active is not None, "system_metrics runs inside an MLflow run"
    try:
        monitor = _monitor(active.info.run_id, sampling_seconds)
    except ImportError as exc:  # MLflow's monitors need psutil
        log.warning("no system metrics: %s (pip install psutil)", exc)
        yield
        return
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def _monitor(run_id: str, sampling_seconds: float) -> Any:
    """MLflow's monitor, sampling at the end of each interval and once more when the run ends."""
    from mlflow.system_metrics.metrics.base_metrics_monitor import BaseMetricsMonitor
    from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
    from mlflow.system_metrics.metrics.rocm_monitor import ROCMMonitor
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class Monitor(SystemMetricsMonitor):
        def _initialize_gpu_monitor(self) -> BaseMetricsMonitor | None:
            # MLflow's logs a line on every run of a machine without a GPU; a CPU machine needs no telling.
            for kind in (GPUMonitor, ROCMMonitor):
                with contextlib.suppress(Exception):
                    return kind()
            return None

        def start(self) -> None:
            self._sample()  # primes psutil's CPU counter: its first reading covers nothing
            self.clear()
            self._process = threading.Thread(target=self.monitor, daemon=True, name="cnnlab-system-metrics")
            self._process.start()

        def monitor(self) -> None:
            while not self._shutdown_event.wait(self.sampling_interval):
                self._publish()

        def finish(self) -> None:
            if self._process is None:
                return
            self._shutdown_event.set()
            self._process.join()
            self._process = None
            self._publish(flush=True)  # the time since the last sample, however short the run

        def _sample(self) -> None:
            self.collect_metrics()

        def clear(self) -> None:
            for monitor in self.monitors:
                monitor.clear_metrics()

        def _publish(self, flush: bool = False) -> None:
            try:
                self._sample()
                self.publish_metrics(self.aggregate_metrics())
                if flush:
                    self.mlflow_logger.flush()
            except Exception as exc:  # a monitoring hiccup never fails a training
                log.warning("system metrics not logged: %s", exc)
                self.clear()

    return Monitor(run_id, sampling_interval=sampling_seconds, resume_logging=True)
