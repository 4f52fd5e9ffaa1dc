"""The finished trainings of a study, recorded as they finish, and the MLflow runs they belong to."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow

from cnnlab.util.files import write_json

log = logging.getLogger("cnnlab.study")


RUNS_FILE = "runs.json"


@dataclass(frozen=True)
class FoldScore:
    """One arm trained on one fold's training part and scored on its held-out part."""

    arm: str
    fold: int  # 1-based
    val_accuracy: float
    val_loss: float
    train_accuracy: float
    train_samples: int
    val_samples: int
    epochs: int
    seconds: float
    run_id: str
    fingerprint: str


@dataclass
class StudyRun:
    """What a study run produced: its scores in arm and fold order, and how long the new trainings took."""

    scores: list[FoldScore]
    trained: int  # trainings run now (the rest were finished by an earlier, interrupted run)
    train_seconds: float
    wall_seconds: float

    @property
    def trainings_per_minute(self) -> float:
        return 60 * self.trained / self.wall_seconds if self.trained else 0.0


class Ledger:
    """The finished trainings of one study and the MLflow runs they belong to."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = folder, fingerprint
        self.runs: dict[str, Any] = {}
        runs_file = folder / RUNS_FILE
        if runs_file.is_file():
            recorded = json.loads(runs_file.read_text())
            if recorded.get("fingerprint") == fingerprint:
                self.runs = recorded
            else:
                log.info("%s: the study changed since its trainings were recorded; starting afresh", folder.name)
                self._clear()

    def _clear(self) -> None:
        for path in self.folder.rglob("*.json"):
            path.unlink()

    def _fold_path(self, arm: str, fold: int) -> Path:
        return self.folder / arm / f"fold{fold}.json"

    def finished(self, arm: str, fold: int) -> FoldScore | None:
        path = self._fold_path(arm, fold)
        if not path.is_file():
            return None
        score = FoldScore(**json.loads(path.read_text()))
        return score if score.fingerprint == self.fingerprint else None

    def record(self, score: FoldScore) -> None:
        write_json(self._fold_path(score.arm, score.fold), asdict(score))

    def run_id(self, key: str) -> str | None:
        """The MLflow run recorded for `key` ('parent' or an arm), if it still exists and is not deleted."""
        run_id = self.runs.get("parent") if key == "parent" else self.runs.get("arms", {}).get(key)
        if not run_id:
            return None
        try:
            found = mlflow.MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException:
            return None
        return run_id if found.info.lifecycle_stage == "active" else None

    def remember(self, key: str, run_id: str) -> None:
        runs = {"fingerprint": self.fingerprint, "parent": self.runs.get("parent"), "arms": self.runs.get("arms", {})}
        if key == "parent":
            runs["parent"] = run_id
        else:
            runs["arms"] = {**runs["arms"], key: run_id}
        self.runs = runs
        write_json(self.folder / RUNS_FILE, runs)
