"""Who owns a RUNNING run: the process that started it. A process killed outright (`kill -9`, the OOM killer,
a power cut) cannot end its run, which would then stay RUNNING for ever; the next run of the same stage and
target ends it KILLED once its owner is known to be gone. A run owned on another machine that shares the
tracking server is never touched: from here there is no telling whether it is alive."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import mlflow

from cnnlab.util.files import process_gone

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG, BOOT_TAG = "cnnlab.owner_host", "cnnlab.owner_pid", "cnnlab.owner_boot_id"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """This boot of this machine (Linux); "" where the system does not say."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def owner_tags() -> dict[str, str]:
    """The tags that name this process as a run's owner."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), BOOT_TAG: boot_id()}


def owner_gone(tags: Mapping[str, str]) -> bool:
    """Whether the process that owns a run with these tags is known to be gone: it ran on this machine and
    either the machine has rebooted since or no process has its id. Unknown owners are never gone."""
    host, pid, boot = tags.get(HOST_TAG), tags.get(PID_TAG, ""), tags.get(BOOT_TAG, "")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if boot and boot_id() and boot != boot_id():
        return True
    return int(pid) != os.getpid() and process_gone(int(pid))


def end_stale_runs(experiment_id: str, filter_string: str, keep: str | None = None) -> list[str]:
    """End KILLED every RUNNING run matching `filter_string` whose owner is gone (and its RUNNING nested runs),
    except run `keep`; the ids of those ended."""
    client = mlflow.MlflowClient()
    running = client.search_runs([experiment_id], filter_string=f"{filter_string} and attributes.status = 'RUNNING'")
    ended = []
    for run in running:
        if run.info.run_id == keep or not owner_gone(run.data.tags):
            continue
        # Read again now that the owner is gone: it may have ended its run between the search and the check (its
        # last write precedes its exit), and that ending must stand.
        if client.get_run(run.info.run_id).info.status != "RUNNING":
            continue
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}' and attributes.status = 'RUNNING'",
        )
        for stale in [*children, run]:
            client.set_tag(stale.info.run_id, "cnnlab.ended_by", "a later run: its owner process was gone")
            client.set_terminated(stale.info.run_id, status="KILLED")
            ended.append(stale.info.run_id)
        log.warning("ended %s KILLED: it was left RUNNING by process %s, which is gone",
                    run.info.run_name, run.data.tags.get(PID_TAG))  # fmt: skip
    return ended
