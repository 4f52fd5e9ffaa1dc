"""Metrics files as the train and evaluate stages write them."""

from __future__ import annotations

import json
from pathlib import Path


def write_metrics(root: Path, exp_id: str, train: dict, evaluate: dict | None = None) -> None:
    folder = root / exp_id
    folder.mkdir(parents=True)
    base = {"kept_epoch": 3, "epochs_run": 3, "train_samples": 42000, "train_seconds": 61.4, "device": "cpu"}
    (folder / "train.json").write_text(json.dumps({"experiment": exp_id, **base, **train}))
    if evaluate is not None:
        (folder / "evaluate.json").write_text(json.dumps({"experiment": exp_id, **evaluate}))
