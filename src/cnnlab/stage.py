"""What every pipeline stage shares: project paths, params, logging, and errors shown as one clear line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from cnnlab.config import Params, ParamsError, load_params
from cnnlab.download import ChecksumError, DataUnavailableError
from cnnlab.files import combined_hash
from cnnlab.loaders import DataFormatError
from cnnlab.tracking import stage_run

log = logging.getLogger("cnnlab")

# Errors a user can fix: shown without a traceback, exit code 2.
USER_ERRORS = (ParamsError, DataUnavailableError, ChecksumError, DataFormatError, FileNotFoundError)


@dataclass(frozen=True)
class Paths:
    """Where the stages read and write, relative to the project root."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    def prepared(self, dataset: str) -> Path:
        return self.root / "data" / "prepared" / dataset

    def model(self, experiment: str) -> Path:
        return self.root / "models" / f"{experiment}.keras"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def data_hash(self, dataset: str) -> str:
        """A digest of the prepared arrays (their sha256s are recorded in meta.json)."""
        meta = self.prepared(dataset) / "meta.json"
        if not meta.is_file():
            return "none"
        return combined_hash(json.loads(meta.read_text()).get("sha256", {}).values())


def mlflow_run(
    stage: str, params: Params, paths: Paths, data_hash: str | None, logged: Mapping[str, Any]
) -> AbstractContextManager[mlflow.ActiveRun]:
    """The MLflow run of one execution of `stage` on the configured experiment (FAILED if the stage fails)."""
    return stage_run(
        stage,
        params.experiment,
        root=paths.root,
        tracking_experiment=params.mlflow.experiment_name,
        budget=params.budget,
        data_hash=data_hash,
        params=logged,
    )


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run(main: Callable[[Params, Paths], None], params_path: str = "params.yaml") -> None:
    """Validate params before any work, run the stage, and turn user errors into one clear message."""
    setup_logging()
    try:
        params = load_params(params_path)
        main(params, Paths(Path.cwd().resolve()))
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
