"""The experiments' table: one row per registered experiment, its claim beside what the pipeline measured,
as Markdown and as CSV. An experiment without a claim in claims.yaml is one of your own: it gets a table of its
own, "Your experiments", with what the pipeline measured."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cnnlab.params import Params
from cnnlab.report.cells import _count, _device, _percent, _signed
from cnnlab.report.claims import Claim, Claims
from cnnlab.report.floors import FloorCheck, floor_cell, quick_floor
from cnnlab.report.text import table_row


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
    floor: float | None = None  # its quick-budget floor on test accuracy; None off the quick budget
    own: bool = False  # one of your experiments: no claim in claims.yaml
    dataset: str = ""
    model: str = ""
    val_accuracy: float | None = None

    @property
    def floor_check(self) -> FloorCheck | None:
        return None if self.floor is None else FloorCheck(self.id, "", "test accuracy", self.test_accuracy, self.floor)

    @property
    def below_floor(self) -> bool:
        return self.floor_check is not None and self.floor_check.below

    @property
    def difference(self) -> float | None:
        """Measured minus claimed, in percentage points."""
        if self.claimed is None or self.measured is None:
            return None
        return round(100 * (self.measured - self.claimed), 2)


def _read(path: Path) -> dict:
    """A metrics file's contents; empty if the stage has not written it yet."""
    return json.loads(path.read_text()) if path.is_file() else {}


def _notes(claim: Claim | None, claims: Claims, train: dict) -> str:
    notes = [claim.note] if claim and claim.note else []
    if not train:
        return " ".join([*notes, "Not run yet: `dvc repro` runs it."])
    data_note = claims.data_notes.get(train.get("dataset", ""), {}).get(train.get("data_format", ""))
    if data_note:
        notes.append(data_note)
    if claim and claim.params is not None and claim.params != train["params"]:
        notes.append(f"Parameter count differs: the seed prints {claim.params:,}, our model has {train['params']:,}.")
    return " ".join(notes)


def build_rows(params: Params, claims: Claims, metrics_root: Path) -> list[Row]:
    """One row per registered experiment, in registry order; one without a claim is one of yours (`own`)."""
    rows = []
    for exp_id in params.experiments:
        claim = claims.experiments.get(exp_id)
        train = _read(metrics_root / exp_id / "train.json")
        evaluate = _read(metrics_root / exp_id / "evaluate.json")
        scores = {**train, **evaluate}
        metric = claim.metric if claim else "test_accuracy"
        recipe = params.experiments[exp_id]
        rows.append(
            Row(
                id=exp_id,
                seed=claim.seed if claim else "",
                claim_text=claim.text if claim else "",
                metric=metric,
                claimed=claim.claim if claim else None,
                measured=scores.get(metric),
                test_accuracy=scores.get("test_accuracy"),
                budget=train.get("budget", "-"),
                epochs=f"{train['kept_epoch']}/{train['epochs_run']}" if train else "-",
                train_samples=train.get("train_samples"),
                train_seconds=train.get("train_seconds"),
                device=_device(train),
                params_claimed=claim.params if claim else None,
                params_measured=train.get("params"),
                notes=_notes(claim, claims, train),
                floor=quick_floor(params, "experiments", exp_id, train.get("budget")),
                own=claim is None,
                dataset=recipe.dataset,
                model=recipe.model,
                val_accuracy=train.get("val_accuracy"),
            )
        )
    return rows


def _row_checks(row: Row) -> list[FloorCheck]:
    return [] if row.floor_check is None else [row.floor_check]


def markdown(rows: list[Row], claims: Claims, title: str, preface: str = "", sections: tuple[str, ...] = ()) -> str:
    header = [
        "id",
        "seed",
        "seed claims",
        "metric",
        "measured",
        "test acc.",
        "difference",
        "quick floor",
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
    seeds = [r for r in rows if not r.own]
    lines += [table_row(header), "|" + "---|" * len(header)] if seeds else []
    for r in seeds:
        params = f"{_count(r.params_claimed)} / {_count(r.params_measured)}"
        seconds = "-" if r.train_seconds is None else f"{r.train_seconds:.0f} s"
        cells = [
            *(f"**{r.id}**", r.seed, r.claim_text, r.metric.replace("_accuracy", ""), _percent(r.measured)),
            *(_percent(r.test_accuracy), _signed(r.difference), floor_cell(_row_checks(r)), r.budget, r.epochs),
            _count(r.train_samples),
            *(seconds, r.device, params, r.notes),
        ]
        lines.append(table_row(cells))
    lines += ["", own_section([r for r in rows if r.own])] if any(r.own for r in rows) else []
    lines += [line for section in sections for line in ("", section.rstrip())]
    if claims.seed_mistakes:
        lines += ["", "## Mistakes in the seeds that we did not copy", ""]
        lines += [f"- {mistake}" for mistake in claims.seed_mistakes]
    return "\n".join(lines) + "\n"


def own_section(rows: list[Row]) -> str:
    """Your experiments (none has a claim in claims.yaml): what the pipeline measured."""
    header = ["id", "data set", "model", "validation acc.", "test acc.", "quick floor", "budget", "epochs kept/run",
              "train images", "train time", "device", "params", "notes"]  # fmt: skip
    lines = ["## Your experiments", "", "Experiments of your own (no claim in `claims.yaml`): what the pipeline "
             "measured on your data.", "", table_row(header), "|" + "---|" * len(header)]  # fmt: skip
    for r in rows:
        seconds = "-" if r.train_seconds is None else f"{r.train_seconds:.0f} s"
        lines.append(table_row([
            f"**{r.id}**", r.dataset, r.model, _percent(r.val_accuracy), _percent(r.test_accuracy),
            floor_cell(_row_checks(r)), r.budget, r.epochs, _count(r.train_samples), seconds, r.device,
            _count(r.params_measured), r.notes,
        ]))  # fmt: skip
    return "\n".join(lines)


def to_csv(rows: list[Row]) -> str:
    buffer = io.StringIO()
    fields = [*asdict(rows[0]), "below_floor", "difference"] if rows else []
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**asdict(row), "below_floor": row.below_floor, "difference": row.difference})
    return buffer.getvalue()
