"""The finished cells of a grid, one record each in reports/grid/<name>/cells/, and the grid's MLflow run.

Each record carries its cell's fingerprint: a cell whose recipe, seeds, data or training code changed is trained
again, the others are kept, so a grid grown by an experiment or a seed trains only what is new.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from cnnlab.util.files import write_json
from cnnlab.workflows.grid.cells import CellScore
from cnnlab.workflows.study.ledger import Ledger

RUNS_KEY = "grid"  # the runs file's constant fingerprint: the grid's run outlives any change of its cells


class GridLedger:
    def __init__(self, folder: Path):
        self.folder = folder
        self.runs = Ledger(folder / "mlflow", RUNS_KEY)  # the grid run's id, if it still exists

    def _path(self, experiment: str, seed: int) -> Path:
        return self.folder / "cells" / experiment / f"seed{seed}.json"

    def finished(self, experiment: str, seed: int, fingerprint: str) -> CellScore | None:
        """The cell's record, if it was trained with the same fingerprint."""
        path = self._path(experiment, seed)
        if not path.is_file():
            return None
        score = CellScore(**json.loads(path.read_text()))
        return score if score.fingerprint == fingerprint else None

    def record(self, score: CellScore) -> None:
        write_json(self._path(score.experiment, score.seed), asdict(score))

    def run_ids(self) -> set[str]:
        """The runs of every recorded cell, of this command's cells and of earlier commands' alike."""
        return {json.loads(path.read_text())["run_id"] for path in (self.folder / "cells").glob("*/seed*.json")}

    def grid_run_id(self) -> str | None:
        return self.runs.run_id("parent")

    def remember_grid_run(self, run_id: str) -> None:
        self.runs.remember("parent", run_id)
