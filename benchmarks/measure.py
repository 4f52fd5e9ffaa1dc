"""What the harness measures while a model trains: epoch times, test accuracy after each epoch, peak memory."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

import keras
import numpy as np

from cnnlab.training import backend


class Clock(keras.callbacks.Callback):
    """Training seconds per epoch (validation included) and test accuracy after each, scored off the clock."""

    def __init__(self, x_test: np.ndarray, y_test: np.ndarray) -> None:
        super().__init__()
        self.x_test, self.y_test = x_test, y_test
        self.epoch_seconds: list[float] = []
        self.test_accuracy: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._started)
        scores = self.model.evaluate(self.x_test, self.y_test, batch_size=1024, verbose=0, return_dict=True)
        self.test_accuracy.append(float(scores["accuracy"]))

    def seconds_to(self, target: float) -> float | None:
        """Training seconds until the test accuracy first reached `target` (None if it never did)."""
        reached = [i for i, acc in enumerate(self.test_accuracy) if acc >= target]
        return sum(self.epoch_seconds[: reached[0] + 1]) if reached else None


class PeakMemory:
    """Peak resident host memory and device memory in use, sampled on a thread while the block runs (MiB)."""

    def __init__(self, every: float = 0.02) -> None:
        self.every, self.host, self.device = every, 0.0, 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.host = max(self.host, resident_mib())
            self.device = max(self.device, device_mib())
            self._stop.wait(self.every)


def resident_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * 4096 / 2**20


def device_mib() -> float:
    """Memory the backend holds on the first GPU now; 0 on a CPU."""
    if not backend.device().startswith("gpu"):
        return 0.0
    if backend.name() == "jax":
        import jax

        return jax.devices()[0].memory_stats().get("bytes_in_use", 0) / 2**20
    if backend.name() == "tensorflow":
        import tensorflow as tf

        return tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20
    import torch

    return torch.cuda.memory_allocated() / 2**20


@dataclass
class ArmResult:
    """One arm's figures for one experiment."""

    arm: str
    experiment: str
    seed: int
    train_images: int
    epochs: int
    wall_seconds: float  # the whole fit call, test scoring after each epoch included
    epoch_seconds: list[float] = field(repr=False)
    test_accuracy: list[float] = field(repr=False)
    target: float
    seconds_to_target: float | None
    peak_host_mib: float
    peak_device_mib: float

    @property
    def first_epoch(self) -> float:
        """The first epoch: compilation (tracing, XLA) included."""
        return self.epoch_seconds[0]

    @property
    def steady_epoch(self) -> float:
        """The median epoch after the first."""
        return statistics.median(self.epoch_seconds[1:] or self.epoch_seconds)

    @property
    def train_seconds(self) -> float:
        """All epochs, validation included, test scoring not."""
        return sum(self.epoch_seconds)

    @property
    def images_per_second(self) -> float:
        return self.train_images / self.steady_epoch

    @property
    def final_test_accuracy(self) -> float:
        return self.test_accuracy[-1]
