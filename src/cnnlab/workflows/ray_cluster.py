"""Trainings as Ray tasks, shared by studies (`executor: ray`) and experiment grids (`cnnlab grid`): on the cluster
at $RAY_ADDRESS, or on a Ray started on this machine when it is unset.

The address comes from the environment only, so that moving to another cluster changes no DVC dependency.
Arrays go to the object store once (`put`), not through a shared disk. Results come back as they finish
(`ray.wait`), so the caller can record each at once. A task cut off by a lost node runs again elsewhere
(`max_retries`); a task that raises an error is not retried, since it would raise it again.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

from cnnlab.params.studies import RayTasks
from cnnlab.training import backend
from cnnlab.util.errors import UserError

log = logging.getLogger("cnnlab.ray")

try:
    import ray
except ModuleNotFoundError as missing:  # an optional extra
    raise UserError("running on Ray needs Ray: `pip install 'cnnlab[ray]'`") from missing

NODE_TAG = "ray_node_id"  # on each training's run: the Ray node it ran on
REACH_SECONDS = 5.0  # how long to wait for the cluster's head to answer before saying it cannot be reached


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


def check_reachable(address: str) -> None:
    """Refuse an address whose head does not answer, in seconds rather than after Ray's own minute of retries.
    'auto' and 'local' name no host to try."""
    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS).close()
    except OSError as exc:
        raise UserError(
            f"RAY_ADDRESS={address}: no Ray head answers there ({exc}); start one (`ray start --head --port "
            f"{port}`) or unset RAY_ADDRESS"
        ) from None


class RayCluster:
    """Connects to the cluster (or starts a local Ray) at first use: work with nothing left to run starts nothing.
    Tasks still running when the block ends (an error, Ctrl-C) are cancelled."""

    def __init__(self, tasks: RayTasks):
        self.tasks = tasks
        self._started = False
        self._connected = False
        self._pending: list[Any] = []

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for ref in self._pending:
            ray.cancel(ref, force=True)
        self._pending = []
        if self._started:
            ray.shutdown()  # disconnects from a cluster; stops a Ray this object started

    def connect(self) -> None:
        if self._connected:
            return
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            if address:
                check_reachable(address)
            # No address: a Ray of our own ("local", not whichever `ray start` ran here last), without the
            # dashboard nothing here uses
            ray.init(address=address or "local", include_dashboard=False if not address else None,
                     logging_level=logging.WARNING)  # fmt: skip
            self._started = True
        self._connected = True
        nodes = [n for n in ray.nodes() if n["Alive"]]
        resources = ray.cluster_resources()
        log.info("Ray: %d nodes, %g CPUs, %g GPUs", len(nodes), resources.get("CPU", 0), resources.get("GPU", 0))

    def put(self, value: Any) -> Any:
        """`value` in the object store (connecting first): tasks given the reference read it from there."""
        self.connect()
        return ray.put(value)

    def run(self, function: Callable[..., Any], calls: list[tuple]) -> Iterator[Any]:
        """`function(*call)` for every call as a task that asks for the trainings' resources; yields each result
        as its task finishes."""
        if not calls:
            return iter(())
        self.connect()
        task = ray.remote(function).options(
            num_cpus=self.tasks.num_cpus,
            num_gpus=gpus_per_training(self.tasks),
            max_retries=self.tasks.max_retries,
            retry_exceptions=False,
            runtime_env={"env_vars": worker_env()},
        )
        self._pending = [task.remote(*call) for call in calls]
        return self._collect()

    def _collect(self) -> Iterator[Any]:
        while self._pending:
            (done,), self._pending = ray.wait(self._pending, num_returns=1)
            yield ray.get(done)


def node_id() -> str:
    """The Ray node a task runs on."""
    return str(ray.get_runtime_context().get_node_id())
