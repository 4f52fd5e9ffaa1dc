"""A grid's summary in reports/grid/<name>/: every cell (summary.csv), each experiment's spread over its seeds
(experiments.csv), both as Markdown (summary.md), and the test accuracies as dots (summary.png)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from cnnlab.plots.grid import seed_dots
from cnnlab.report.text import markdown_table, plural
from cnnlab.util.files import write_text
from cnnlab.workflows.grid.cells import CellScore

CELL_COLUMNS = ["experiment", "seed", "budget", "test_accuracy", "val_accuracy", "seconds", "epochs",
                "train_samples", "run_id"]  # fmt: skip
SUMMARY_FILES = ("summary.csv", "experiments.csv", "summary.md", "summary.png")


def cell_table(scores: list[CellScore]) -> pd.DataFrame:
    return pd.DataFrame([{column: getattr(s, column) for column in CELL_COLUMNS} for s in scores])


def experiment_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per experiment, in the grid's order: seeds, and the mean, sd (n-1; none for one seed), min and max of its
    test accuracy; its mean validation accuracy and training seconds."""
    rows = []
    for (experiment, budget), group in cells.groupby(["experiment", "budget"], sort=False):
        test = group["test_accuracy"]
        rows.append(
            {"experiment": experiment, "budget": budget, "seeds": len(group), "test_mean": test.mean(),
             "test_sd": test.std(ddof=1) if len(group) > 1 else math.nan, "test_min": test.min(),
             "test_max": test.max(), "val_mean": group["val_accuracy"].mean(), "seconds_mean": group["seconds"].mean()}
        )  # fmt: skip
    return pd.DataFrame(rows)


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.2f}"


def markdown(name: str, cells: pd.DataFrame, experiments: pd.DataFrame) -> str:
    spread = [
        [r.experiment, r.budget, str(r.seeds), _percent(r.test_mean), _percent(r.test_sd), _percent(r.test_min),
         _percent(r.test_max), _percent(r.val_mean), f"{r.seconds_mean:.1f}"]
        for r in experiments.itertuples()
    ]  # fmt: skip
    each = [
        [r.experiment, str(r.seed), r.budget, _percent(r.test_accuracy), _percent(r.val_accuracy), f"{r.seconds:.1f}"]
        for r in cells.itertuples()
    ]
    header = ["experiment", "budget", "seeds", "test mean", "test sd", "test min", "test max", "val mean",
              "seconds (mean)"]  # fmt: skip
    parts = [
        f"# Grid {name}",
        f"{plural(len(experiments), 'experiment')}, {plural(len(cells), 'training')}; accuracies in %, sd over seeds "
        f"(n-1). Each training is logged to MLflow under the run `grid@{name}`.",
        "## Per experiment",
        markdown_table(header, spread),
        "## Per training",
        markdown_table(["experiment", "seed", "budget", "test accuracy", "val accuracy", "seconds"], each),
    ]
    return "\n\n".join(parts) + "\n"


def write_summary(name: str, scores: list[CellScore], folder: Path) -> list[Path]:
    """The summary files of the grid's cells (in the grid's order), written atomically; returns their paths."""
    cells = cell_table(scores)
    experiments = experiment_table(cells)
    dots = {e: list(g["test_accuracy"]) for e, g in cells.groupby("experiment", sort=False)}
    return [
        write_text(folder / "summary.csv", cells.to_csv(index=False)),
        write_text(folder / "experiments.csv", experiments.to_csv(index=False)),
        write_text(folder / "summary.md", markdown(name, cells, experiments)),
        seed_dots(dots, f"grid {name}: test accuracy per seed", folder / "summary.png"),
    ]


def spread_lines(scores: list[CellScore]) -> list[str]:
    """One line per experiment: its test accuracy's mean, sd and range over its seeds."""
    lines = []
    for r in experiment_table(cell_table(scores)).itertuples():
        spread = f" ± {_percent(r.test_sd)}, range {_percent(r.test_min)}-{_percent(r.test_max)}" if r.seeds > 1 else ""
        lines.append(f"{r.experiment} ({r.budget}): test accuracy {_percent(r.test_mean)}%{spread} over "
                     f"{plural(r.seeds, 'seed')}")  # fmt: skip
    return lines
