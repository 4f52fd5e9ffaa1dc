"""A study's trainings as Ray tasks (`executor: ray`): on the cluster at $RAY_ADDRESS, or on a Ray started on
this machine when it is unset (the connection, resources and task lifecycle are in `cnnlab.workflows.ray_cluster`).

The study's images go to the object store once (`ray.put`), not through a shared disk. Each task logs its
fold run to the tracking URI and under the arm run it is handed: a Ray worker has no active MLflow run to nest
under. Results come back as they finish, and the study records each at once in its ledger, so an interrupted
study resumes. A task cut off by a lost node runs again elsewhere (`max_retries`); a training that raises an
error is not retried, since it would raise it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mlflow
import numpy as np

from cnnlab.params.studies import RayTasks
from cnnlab.pipeline import stage
from cnnlab.util.errors import UserError
from cnnlab.workflows.study.folds import FoldJob, train_job
from cnnlab.workflows.study.ledger import FoldScore

try:
    import ray  # noqa: F401  (checked here, with the study's own advice, before the shared module loads)
except ModuleNotFoundError as missing:  # an optional extra
    raise UserError("`executor: ray` needs Ray: `pip install 'cnnlab[ray]'`, or set `executor: local`") from missing

from cnnlab.workflows.ray_cluster import NODE_TAG, RayCluster, node_id  # needs Ray, checked above


def _train_task(job: FoldJob, x: np.ndarray, y: np.ndarray, tracking_uri: str) -> FoldScore:
    stage.setup_logging()
    mlflow.set_tracking_uri(tracking_uri)
    return train_job(job, x, y, tags={NODE_TAG: node_id()})


class RayTrainer:
    """Connects to the cluster (or starts a local Ray) at the first job; a study with nothing left to train
    starts nothing. Trainings still running when the block ends (an error, Ctrl-C) are cancelled."""

    def __init__(self, x: np.ndarray, y: np.ndarray, tasks: RayTasks):
        self.x, self.y = x, y
        self.cluster = RayCluster(tasks)
        self._images: tuple[Any, Any] | None = None

    def __enter__(self) -> RayTrainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cluster.__exit__(*exc_info)

    def scores(self, jobs: list[FoldJob]) -> Iterator[FoldScore]:
        """Start every job as a task, then yield each score as its task finishes."""
        if not jobs:
            return iter(())
        if self._images is None:
            self._images = (self.cluster.put(self.x), self.cluster.put(self.y))
        x, y = self._images
        uri = mlflow.get_tracking_uri()
        return self.cluster.run(_train_task, [(job, x, y, uri) for job in jobs])
