"""A study's trainings as Ray tasks (`executor: ray`): on the cluster at $RAY_ADDRESS, or on a Ray started on
this machine when it is unset.

The address comes from the environment only, so that moving to another cluster changes no DVC dependency.
The study's images go to the object store once (`ray.put`), not through a shared disk. Each task logs its
fold run to the tracking URI and under the arm run it is handed: a Ray worker has no active MLflow run to nest
under. Results come back as they finish (`ray.wait`), and the study records each at once in its ledger, so an
interrupted study resumes. A task cut off by a lost node runs again elsewhere (`max_retries`); a training that
raises an error is not retried, since it would raise it again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import mlflow
import numpy as np

from cnnlab.params.studies import RayTasks
from cnnlab.pipeline import stage
from cnnlab.training import backend
from cnnlab.util.errors import UserError
from cnnlab.workflows.study.folds import FoldJob, train_job
from cnnlab.workflows.study.ledger import FoldScore

log = logging.getLogger("cnnlab.study")

try:
    import ray
except ModuleNotFoundError as missing:  # an optional extra
    raise UserError("`executor: ray` needs Ray: `pip install 'cnnlab[ray]'`, or set `executor: local`") from missing

NODE_TAG = "ray_node_id"  # on each fold run: the Ray node its training ran on


def _train_task(job: FoldJob, x: np.ndarray, y: np.ndarray, tracking_uri: str) -> FoldScore:
    stage.setup_logging()
    mlflow.set_tracking_uri(tracking_uri)
    return train_job(job, x, y, tags={NODE_TAG: ray.get_runtime_context().get_node_id()})


def worker_env() -> dict[str, str]:
    """What a worker needs before it first imports Keras: the driver's backend (the same arithmetic, so the same
    scores), and device memory taken as needed, so trainings that share a GPU fit."""
    backend.share_the_device()  # sets both variables below where they are unset
    shared = ("XLA_PYTHON_CLIENT_PREALLOCATE", "TF_FORCE_GPU_ALLOW_GROWTH")
    return {"KERAS_BACKEND": backend.name()} | {name: os.environ[name] for name in shared}


def gpus_per_training(tasks: RayTasks) -> float:
    """'auto': one GPU per training on a cluster that has GPUs, none on one that has not."""
    if tasks.num_gpus != "auto":
        return float(tasks.num_gpus)
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


class RayTrainer:
    """Connects to the cluster (or starts a local Ray) at the first job; a study with nothing left to train
    starts nothing. Trainings still running when the block ends (an error, Ctrl-C) are cancelled."""

    def __init__(self, x: np.ndarray, y: np.ndarray, tasks: RayTasks):
        self.x, self.y, self.tasks = x, y, tasks
        self._started = False
        self._images: tuple[Any, Any] | None = None
        self._pending: list[Any] = []

    def __enter__(self) -> RayTrainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for ref in self._pending:
            ray.cancel(ref, force=True)
        self._pending = []
        if self._started:
            ray.shutdown()  # disconnects from a cluster; stops a Ray this trainer started

    def _connect(self) -> tuple[Any, Any]:
        if self._images is None:
            if not ray.is_initialized():
                address = os.environ.get("RAY_ADDRESS")
                # No address: a Ray of the study's own ("local", not whichever `ray start` ran here last), without
                # the dashboard a study does not use
                ray.init(address=address or "local", include_dashboard=False if not address else None,
                         logging_level=logging.WARNING)  # fmt: skip
                self._started = True
            nodes = [n for n in ray.nodes() if n["Alive"]]
            resources = ray.cluster_resources()
            log.info("Ray: %d nodes, %g CPUs, %g GPUs", len(nodes), resources.get("CPU", 0), resources.get("GPU", 0))
            self._images = (ray.put(self.x), ray.put(self.y))
        return self._images

    def scores(self, jobs: list[FoldJob]) -> Iterator[FoldScore]:
        """Start every job as a task, then yield each score as its task finishes."""
        if not jobs:
            return iter(())
        x, y = self._connect()
        task = ray.remote(_train_task).options(
            num_cpus=self.tasks.num_cpus,
            num_gpus=gpus_per_training(self.tasks),
            max_retries=self.tasks.max_retries,
            retry_exceptions=False,
            runtime_env={"env_vars": worker_env()},
        )
        uri = mlflow.get_tracking_uri()
        self._pending = [task.remote(job, x, y, uri) for job in jobs]
        return self._collect()

    def _collect(self) -> Iterator[FoldScore]:
        while self._pending:
            (done,), self._pending = ray.wait(self._pending, num_returns=1)
            yield ray.get(done)
