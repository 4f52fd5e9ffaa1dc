"""Where a grid's cells train: one after another in this process, or as Ray tasks (`cnnlab.workflows.ray_cluster`,
the same cluster code as studies) that each ask for the CPUs and GPUs of one training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

import mlflow

from cnnlab.data.splits import Arrays
from cnnlab.params.studies import RayTasks
from cnnlab.pipeline import stage
from cnnlab.workflows.grid.cells import CellJob, CellScore, train_cell


class CellData(Protocol):
    """The arrays of a grid: an experiment's (train, validation) and a data set's test split."""

    splits: dict[str, tuple[Arrays, Arrays]]
    tests: dict[str, Arrays]


class Trainer(Protocol):
    def __enter__(self) -> Trainer: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def connect(self) -> None:
        """Reach where the cells will train, before any run is opened (a cluster that cannot be reached fails here)."""

    def scores(self, jobs: list[CellJob]) -> Iterator[CellScore]:
        """Each job's score as its training finishes."""
        ...


class LocalTrainer:
    """Trains the cells in this process, one after another, inside the grid's run."""

    def __init__(self, data: CellData):
        self.data = data

    def __enter__(self) -> LocalTrainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def connect(self) -> None:
        pass

    def scores(self, jobs: list[CellJob]) -> Iterator[CellScore]:
        for job in jobs:
            train, validation = self.data.splits[job.experiment]
            yield train_cell(job, train, validation, self.data.tests[job.recipe.dataset])


def cell_trainer(data: CellData, tasks: RayTasks | None) -> AbstractContextManager[Trainer]:
    """Ray tasks when `tasks` says what each asks for, else this process."""
    if tasks is None:
        return LocalTrainer(data)
    return RayCellTrainer(data, tasks)


def _cell_task(job: CellJob, split: tuple[Arrays, Arrays], test: Arrays, tracking_uri: str) -> CellScore:
    from cnnlab.workflows.ray_cluster import NODE_TAG, node_id

    stage.setup_logging()
    mlflow.set_tracking_uri(tracking_uri)
    return train_cell(job, *split, test, tags={NODE_TAG: node_id()})


class RayCellTrainer:
    """Each cell a Ray task; each experiment's arrays and each data set's test split go to the object store once."""

    def __init__(self, data: CellData, tasks: RayTasks):
        from cnnlab.workflows.ray_cluster import RayCluster  # Ray is an optional extra: imported only here

        self.data = data
        self.cluster = RayCluster(tasks)

    def __enter__(self) -> RayCellTrainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cluster.__exit__(*exc_info)

    def connect(self) -> None:
        self.cluster.connect()

    def scores(self, jobs: list[CellJob]) -> Iterator[CellScore]:
        splits: dict[str, Any] = {}
        tests: dict[str, Any] = {}
        calls = []
        for job in jobs:
            if job.experiment not in splits:
                splits[job.experiment] = self.cluster.put(self.data.splits[job.experiment])
            dataset = job.recipe.dataset
            if dataset not in tests:
                tests[dataset] = self.cluster.put(self.data.tests[dataset])
            calls.append((job, splits[job.experiment], tests[dataset], mlflow.get_tracking_uri()))
        return self.cluster.run(_cell_task, calls)
