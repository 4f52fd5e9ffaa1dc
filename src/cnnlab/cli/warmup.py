"""`cnnlab warm`: start this environment's stage worker and create the project's MLflow store ahead of a
`dvc repro`, so that its first stage starts as warm as the rest (docs/performance.md)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from cnnlab.params import load_params
from cnnlab.pipeline import warm as workers
from cnnlab.tracking.runs import use_experiment

READY_TIMEOUT = 180.0  # seconds; importing Keras, TensorFlow and MLflow takes 5 s on an idle 2-core machine


def warm(args: argparse.Namespace) -> int:
    """Exit 0 once a worker takes stages (or warm workers are off), 1 if it fails to start, naming its log."""
    if not workers.enabled():
        print("cnnlab warm: warm stage workers are off here (CNNLAB_WARM=0, or not Linux); each stage starts its own "
              "process")  # fmt: skip
        return 0
    started = time.monotonic()
    params = load_params(args.params)  # a broken params.yaml fails here, before anything starts
    try:
        running = workers.start_worker_here()
        # The store's first use creates its tables (about 1 s), while the worker imports.
        use_experiment(params.mlflow.experiment_name, Path(args.params).resolve().parent)
        workers.wait_for_worker(args.timeout)
    except workers.WarmUnavailable as exc:
        print(f"cnnlab warm: no warm worker: {exc}; each stage starts its own process", file=sys.stderr)
        return 1
    idle = os.environ.get("CNNLAB_WARM_IDLE", "60")
    state = "running already" if running else f"ready in {time.monotonic() - started:.1f} s"
    print(f"cnnlab warm: the stage worker is {state}; it stops after {idle} s without a stage")
    return 0


def register(commands: Any) -> None:
    """Add `warm` to `cnnlab`'s subcommands."""
    parser = commands.add_parser("warm", help="start the stage worker (and the MLflow store) before `dvc repro`")
    parser.add_argument("--timeout", type=float, default=READY_TIMEOUT, help="seconds to wait for the worker "
                        f"(default {READY_TIMEOUT:g})")  # fmt: skip
    parser.set_defaults(run=warm)
