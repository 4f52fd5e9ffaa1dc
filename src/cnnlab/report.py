"""The reproduction report: what each seed claims (claims.yaml) beside what the pipeline measured (metrics/<id>/).

Every measured number comes from the metrics files the train and evaluate stages wrote; the
only numbers in claims.yaml are the seeds' own.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field, ValidationError

from cnnlab.config import Params, ParamsError, Strict
from cnnlab.plots import _save, plt  # the report's figure lives here so that changing it retrains nothing


class Claim(Strict):
    seed: str
    metric: Literal["test_accuracy", "val_accuracy"] = "test_accuracy"
    claim: float | None = None  # None: the seed's claim is qualitative
    text: str
    params: int | None = None
    note: str = ""


class Claims(Strict):
    experiments: dict[str, Claim]
    data_notes: dict[str, dict[str, str]] = Field(default_factory=dict)  # data set -> source format -> note
    seed_mistakes: list[str] = Field(default_factory=list)


def load_claims(path: Path) -> Claims:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the report compares against the seeds' claims listed there")
    try:
        return Claims.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ParamsError(f"{path} is not valid: {exc}") from None


@dataclass(frozen=True)
class Row:
    id: str
    seed: str
    claim_text: str
    metric: str
    claimed: float | None
    measured: float | None
    test_accuracy: float | None
    budget: str
    epochs: str
    train_samples: int | None
    train_seconds: float | None
    device: str
    params_claimed: int | None
    params_measured: int | None
    notes: str

    @property
    def difference(self) -> float | None:
        """Measured minus claimed, in percentage points."""
        if self.claimed is None or self.measured is None:
            return None
        return round(100 * (self.measured - self.claimed), 2)


def _read(path: Path) -> dict:
    """A metrics file's contents; empty if the stage has not written it yet."""
    return json.loads(path.read_text()) if path.is_file() else {}


def _notes(claim: Claim, claims: Claims, train: dict) -> str:
    notes = [claim.note] if claim.note else []
    if not train:
        return " ".join([*notes, "Not run yet: `dvc repro` runs it."])
    data_note = claims.data_notes.get(train.get("dataset", ""), {}).get(train.get("data_format", ""))
    if data_note:
        notes.append(data_note)
    if claim.params is not None and claim.params != train["params"]:
        notes.append(f"Parameter count differs: the seed prints {claim.params:,}, our model has {train['params']:,}.")
    return " ".join(notes)


def build_rows(params: Params, claims: Claims, metrics_root: Path) -> list[Row]:
    """One row per registered experiment, in registry order; experiments without a claim are named in an error."""
    unclaimed = sorted(set(params.experiments) - set(claims.experiments))
    if unclaimed:
        raise ParamsError(
            f"claims.yaml has no entry for {', '.join(unclaimed)}: add what the seed claims (or text: none)"
        )
    rows = []
    for exp_id in params.experiments:
        claim = claims.experiments[exp_id]
        train = _read(metrics_root / exp_id / "train.json")
        evaluate = _read(metrics_root / exp_id / "evaluate.json")
        scores = {**train, **evaluate}
        rows.append(
            Row(
                id=exp_id,
                seed=claim.seed,
                claim_text=claim.text,
                metric=claim.metric,
                claimed=claim.claim,
                measured=scores.get(claim.metric),
                test_accuracy=scores.get("test_accuracy"),
                budget=train.get("budget", "-"),
                epochs=f"{train['kept_epoch']}/{train['epochs_run']}" if train else "-",
                train_samples=train.get("train_samples"),
                train_seconds=train.get("train_seconds"),
                device=train.get("device", "-"),
                params_claimed=claim.params,
                params_measured=train.get("params"),
                notes=_notes(claim, claims, train),
            )
        )
    return rows


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f} pp"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def markdown(rows: list[Row], claims: Claims, title: str, preface: str = "") -> str:
    header = [
        "id",
        "seed",
        "seed claims",
        "metric",
        "measured",
        "test acc.",
        "difference",
        "budget",
        "epochs kept/run",
        "train images",
        "train time",
        "device",
        "params seed / ours",
        "notes",
    ]
    lines = [f"# {title}", ""]
    if preface:
        lines += [preface, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        params = f"{_count(r.params_claimed)} / {_count(r.params_measured)}"
        seconds = "-" if r.train_seconds is None else f"{r.train_seconds:.0f} s"
        cells = [
            *(f"**{r.id}**", r.seed, r.claim_text, r.metric.replace("_accuracy", ""), _percent(r.measured)),
            *(_percent(r.test_accuracy), _signed(r.difference), r.budget, r.epochs, _count(r.train_samples)),
            *(seconds, r.device, params, r.notes),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    if claims.seed_mistakes:
        lines += ["", "## Mistakes in the seeds that we did not copy", ""]
        lines += [f"- {mistake}" for mistake in claims.seed_mistakes]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    buffer = io.StringIO()
    fields = [*asdict(rows[0]), "difference"] if rows else []
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**asdict(row), "difference": row.difference})
    return buffer.getvalue()


def claims_chart(rows: list[Row], title: str, path: Path) -> Path:
    """Measured accuracy per experiment as bars, the seed's claim as a black tick (none where it is qualitative)."""
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.6), 4))
    positions = np.arange(len(rows))
    heights = [np.nan if r.measured is None else 100 * r.measured for r in rows]
    colours = ["tab:blue" if r.budget == "full" else "tab:gray" for r in rows]
    ax.bar(positions, heights, color=colours, width=0.7)
    ticks = [(x, 100 * r.claimed) for x, r in zip(positions, rows, strict=True) if r.claimed is not None]
    if ticks:
        ax.scatter(*zip(*ticks, strict=True), marker="_", s=400, color="black", label="seed's claim", zorder=3)
        ax.legend(loc="lower right")
    ax.set_xticks(positions, [r.id for r in rows], rotation=45, ha="right")
    ax.set(ylim=(0, 100), ylabel="accuracy (%)", title=f"{title} (blue: full budget, grey: quick)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
