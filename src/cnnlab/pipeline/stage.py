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

from cnnlab.params import Params, ParamsError, load_params
from cnnlab.tracking.runs import stage_run
from cnnlab.util.errors import UserError
from cnnlab.util.files import combined_hash, remove_stale_temporaries

log = logging.getLogger("cnnlab")

# Errors a user can fix (a missing file among them): shown without a traceback, exit code 2.
USER_ERRORS = (UserError, FileNotFoundError)


@dataclass(frozen=True)
class Paths:
    """Where the stages read and write, relative to the project root."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    def source_record(self, dataset: str) -> Path:
        """Which source the download stage used for `dataset`, and the digests of its files."""
        return self.raw / f"{dataset}.source.json"

    def prepared(self, dataset: str) -> Path:
        return self.root / "data" / "prepared" / dataset

    def model(self, experiment: str) -> Path:
        return self.root / "models" / f"{experiment}.keras"

    def metrics(self, experiment: str) -> Path:
        return self.root / "metrics" / experiment

    def plots(self, experiment: str) -> Path:
        return self.root / "plots" / experiment

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def features(self, transfer: str) -> Path:
        """A transfer recipe's stored backbone features (fast feature extraction computes them once)."""
        return self.root / "features" / transfer / "features.npz"

    def tuning(self, search: str) -> Path:
        """The Keras Tuner directory of a search: its trials, so an interrupted search resumes."""
        return self.root / "tuning" / search

    def best_hparams(self, search: str) -> Path:
        """The best trial as a recipe (small JSON kept in git, beside the search's metrics)."""
        return self.metrics(search) / "best_hparams.json"

    def folds(self, study: str) -> Path:
        """The finished trainings of a study, one record per arm and fold (what an interrupted study resumes from)."""
        return self.root / "folds" / study

    def detections(self, job: str) -> Path:
        """A detect job's drawn images and detections.json."""
        return self.root / "detections" / job

    @property
    def output_folders(self) -> list[Path]:
        """Every folder the stages write outputs into."""
        names = [
            "data",
            "models",
            "metrics",
            "plots",
            "reports",
            "features",
            "tuning",
            "folds",
            "detections",
            "explain",
            "lineage",
        ]
        return [self.root / name for name in names]

    def data_hash(self, dataset: str) -> str:
        """A digest of the prepared arrays (their sha256s are recorded in meta.json)."""
        meta = self.prepared(dataset) / "meta.json"
        if not meta.is_file():
            return "none"
        return combined_hash(json.loads(meta.read_text()).get("sha256", {}).values())


def mlflow_run(
    stage: str,
    target: str,
    params: Params,
    paths: Paths,
    data_hash: str | None,
    logged: Mapping[str, Any],
    run_id: str | None = None,
    computes: bool = True,
) -> AbstractContextManager[mlflow.ActiveRun]:
    """The MLflow run of one execution of `stage` on `target`: an experiment or study id, a data set, or ""
    for a stage that covers everything (named `stage@target` as DVC names foreach stages; FAILED on failure).
    `run_id` resumes an earlier run instead of starting one; `computes`: False for the data stages, which do not
    use Keras (their runs get no backend and device tags)."""
    resolved = params.target(target) if target else None  # "": the report, which covers every id
    return stage_run(
        stage,
        target,
        target_tag=resolved.tag[0] if resolved else "",
        root=paths.root,
        tracking_experiment=params.mlflow.experiment_name,
        budget=resolved.budget if resolved else params.budget,
        data_hash=data_hash,
        params=logged,
        run_id=run_id,
        computes=computes,
    )


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run(main: Callable[..., None], params_path: str = "params.yaml", target: str = "experiment id or data set") -> None:
    """Validate params before any work, run the stage (on the target named on the command line, as
    dvc.yaml's foreach passes it, unless `target` is empty), and turn user errors into one clear message."""
    setup_logging()
    try:
        args = sys.argv[1:]
        if len(args) != (1 if target else 0):
            raise ParamsError(f"usage: python {sys.argv[0]} {f'<{target}>' if target else '(no arguments)'}")
        params = load_params(params_path)
        paths = Paths(Path.cwd().resolve())
        remove_stale_temporaries(paths.output_folders)  # left by a stage killed outright
        main(params, paths, *args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
