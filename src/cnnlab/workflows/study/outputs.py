"""What a study stage writes: the per-fold table, its statistics, plots, metrics and a readable summary.

- `plots/<study>/folds.csv`: one row per arm and fold (`dvc plots show` draws it as a box plot);
- `metrics/<study>/<stage>.json`: per-arm mean, std and 95% CI, comparisons or effects, timings
  (`dvc metrics show`);
- `reports/<study>/`: README.md (tables), summary.csv, comparisons.csv or effects.csv, boxplot.png
  and effects.png.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from cnnlab.data.prepare import read_meta
from cnnlab.params import AblationStudy, CrossvalStudy, Params, ParamsError
from cnnlab.pipeline.stage import Paths
from cnnlab.plots.studies import effects_plot, fold_boxplot
from cnnlab.report.text import markdown_table, plural
from cnnlab.tracking.inputs import TRAINING, log_prepared_inputs
from cnnlab.tracking.runs import flatten, safe_metric_name
from cnnlab.tracking.system import system_metrics
from cnnlab.training import backend
from cnnlab.training.precision import policy_name
from cnnlab.util.files import Staging, staged_outputs, write_json, write_text
from cnnlab.workflows.study.ledger import StudyRun
from cnnlab.workflows.study.plan import StudyPlan
from cnnlab.workflows.study.stats import CONFIDENCE, by_fold, factorial_effects, paired_comparisons, summarize

log = logging.getLogger("cnnlab.study")
Outputs = Callable[[StudyPlan, StudyRun, Params, Staging, Paths], list[Path]]

FOLD_COLUMNS = ["arm", "fold", "val_accuracy", "val_loss", "train_accuracy", "epochs", "seconds"]
FOLD_COLUMNS += ["train_samples", "val_samples"]


def fold_table(run: StudyRun) -> pd.DataFrame:
    return pd.DataFrame([asdict(s) for s in run.scores])[FOLD_COLUMNS]


def _pct(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:.2f}%"


def _pp(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:+.2f}"


def _p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3g}"


def describe_setup(plan: StudyPlan, params: Params) -> dict[str, Any]:
    study, budget = params.study(plan.study_id), params.study_budget(plan.study_id)
    spec = study.folds_for(budget)
    first = next(iter(plan.arms.values()))
    return {
        "study": plan.study_id,
        "stage": plan.kind,
        "experiment": study.experiment,
        "model": first.model,
        "dataset": plan.dataset,
        "budget": budget,
        "device": backend.device(),
        "compute_dtype": policy_name(first.precision),
        "k": spec.k,
        "shuffle": spec.shuffle,
        "stratify": spec.stratify,
        "epochs": first.epochs,
        "batch_size": first.batch_size,
        "train_samples": len(plan.y),
    }


def timing(run: StudyRun) -> dict[str, float | int]:
    return {
        "trainings": len(run.scores),
        "trainings_now": run.trained,
        "wall_seconds": round(run.wall_seconds, 1),
        "train_seconds_now": round(run.train_seconds, 1),
        "train_seconds_all_folds": round(sum(s.seconds for s in run.scores), 1),
        "trainings_per_minute": round(run.trainings_per_minute, 3),
    }


def _finite(value: Any) -> Any:
    """NaN (a spread of one value) as JSON null."""
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _records(frame: pd.DataFrame, key: str) -> dict[str, dict[str, Any]]:
    return {str(row[key]): {k: _finite(v) for k, v in row.items() if k != key} for row in frame.to_dict("records")}


def setup_line(setup: dict[str, Any]) -> str:
    order = "shuffled" if setup["shuffle"] else "in file order"
    strata = ", stratified" if setup["stratify"] else ""
    return (
        f"{setup['model']} on {setup['dataset']}: {setup['k']}-fold cross-validation ({order}{strata}) over "
        f"{setup['train_samples']:,} training images, {plural(setup['epochs'], 'epoch')}, batch {setup['batch_size']}, "
        f"budget `{setup['budget']}`, device {setup['device']}. Every fold trains a fresh model on its training "
        "part only and scores it on its held-out part; the test set is not used."
    )


def summary_rows(summary: pd.DataFrame, labels: dict[str, str]) -> list[list[str]]:
    return [
        [labels.get(r["arm"], r["arm"]), f"{_pct(r['mean'])} ± {100 * r['std']:.2f}",
         f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]", _pct(r["min"]), _pct(r["max"])]
        for r in summary.to_dict("records")
    ]  # fmt: skip


SUMMARY_HEADER = ["arm", "mean ± std", f"{CONFIDENCE:.0%} CI", "min", "max"]


def fold_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    wide = by_fold(table)
    return ["fold", *wide.columns], [
        [str(f), *(_pct(v) for v in row)] for f, row in zip(wide.index, wide.values, strict=True)
    ]


def timing_text(times: dict[str, float | int]) -> str:
    return (
        f"{times['trainings']} trainings, {times['trainings_now']} of them in this run: "
        f"{times['wall_seconds']:.0f} s wall, {times['trainings_per_minute']:.2f} trainings per minute."
    )


def crossval_outputs(plan: StudyPlan, run: StudyRun, params: Params, out: Staging, paths: Paths) -> list[Path]:
    """The crossval stage's outputs, staged under `out`; returns the files to log to MLflow."""
    study = params.study(plan.study_id)
    assert isinstance(study, CrossvalStudy)
    table, setup, times = fold_table(run), describe_setup(plan, params), timing(run)
    summary, comparisons = summarize(table), paired_comparisons(table)
    metrics = {
        **setup,
        "arms": _records(summary, "arm"),
        "comparisons": _records(comparisons.assign(pair=comparisons["second"] + "_vs_" + comparisons["first"]), "pair"),
        **times,
    }
    compare_rows = [
        [f"{r['second']} vs {r['first']}", _pp(r["mean_difference"]), f"[{_pp(r['ci_low'])}, {_pp(r['ci_high'])}]",
         _p(r["p_t"]), _p(r["p_t_corrected"]), _p(r["p_wilcoxon"]), f"{r['cohen_dz']:.2f}",
         f"{r['wins']} of {r['folds']}"]
        for r in comparisons.to_dict("records")
    ]  # fmt: skip
    header, per_fold = fold_rows(table)
    text = "\n\n".join(
        [
            f"# {plan.study_id}: cross-validation",
            study.description,
            setup_line(setup),
            "Written by `dvc repro crossval@"
            + plan.study_id
            + "`; the per-fold scores are `plots/"
            + plan.study_id
            + "/folds.csv`.",
            "![fold scores per variant](boxplot.png)",
            "## Variants",
            markdown_table(SUMMARY_HEADER, summary_rows(summary, {})),
            "## Paired comparison over the same folds",
            markdown_table(
                [
                    "comparison",
                    "difference (pp)",
                    f"{CONFIDENCE:.0%} CI (pp)",
                    "paired t p",
                    "corrected t p",
                    "Wilcoxon p",
                    "Cohen's d_z",
                    "folds won",
                ],
                compare_rows,
            ),
            "A positive difference means the variant named first scored higher. *corrected t* is the "
            "Nadeau-Bengio corrected resampled t-test (fold training sets overlap, so the plain paired t-test "
            "is too liberal); with "
            f"{setup['k']} folds the two-sided exact Wilcoxon p-value cannot fall below "
            f"{2 / 2 ** setup['k']:.4g}.",
            "## Per fold",
            markdown_table(header, per_fold),
            "## Timing",
            timing_text(times),
        ]
    )
    return _write(plan, table, metrics, text, summary, {"comparisons.csv": comparisons}, out, paths, None)


def ablation_outputs(plan: StudyPlan, run: StudyRun, params: Params, out: Staging, paths: Paths) -> list[Path]:
    """The ablation stage's outputs, staged under `out`; returns the files to log to MLflow."""
    study = params.study(plan.study_id)
    assert isinstance(study, AblationStudy)
    cells = study.cells()
    table, setup, times = fold_table(run), describe_setup(plan, params), timing(run)
    summary, effects = summarize(table), factorial_effects(table, cells, study.design)
    labels = {cell: f"[{cell}] {' + '.join(on) or 'none'}" for cell, on in cells.items()}
    metrics = {
        **setup,
        "design": study.design,
        "arms": {
            cell: {"factors": "+".join(cells[cell]) or "none", **v} for cell, v in _records(summary, "arm").items()
        },
        "effects": _records(effects, "term"),
        **times,
    }
    effect_rows = [
        [r["term"], r["kind"], _pp(r["effect"]), f"[{_pp(r['ci_low'])}, {_pp(r['ci_high'])}]", _p(r["p"])]
        for r in effects.to_dict("records")
    ]
    header, per_fold = fold_rows(table)
    notation = ", ".join(f"{i + 1}. {f}" for i, f in enumerate(study.design))
    text = "\n\n".join(
        [
            f"# {plan.study_id}: {len(study.design)}-factor ablation",
            study.description,
            setup_line(setup),
            f"Cells are named by one digit per factor ({notation}); 1 means on. Written by `dvc repro ablation@"
            + plan.study_id
            + "`; the per-fold scores are `plots/"
            + plan.study_id
            + "/folds.csv`.",
            "![fold scores per cell](boxplot.png)",
            "## Cells",
            markdown_table(SUMMARY_HEADER, summary_rows(summary, labels)),
            "## Main effects and two-way interactions",
            "![effects with confidence intervals](effects.png)",
            markdown_table(["term", "kind", "effect (pp)", f"{CONFIDENCE:.0%} CI (pp)", "p"], effect_rows),
            "Each effect is computed within every fold (each fold is a complete replicate of the design) and its "
            "mean, t interval and p-value taken over the folds. A main effect is the mean of the cells with the "
            "factor on minus those with it off; A:B is half of (A's effect with B on minus A's effect with B off).",
            "## Per fold",
            markdown_table(header, per_fold),
            "## Timing",
            timing_text(times),
        ]
    )
    figure = out.path(paths.reports / plan.study_id / "effects.png")
    effects_plot(
        list(effects["term"]),
        100 * effects["effect"].to_numpy(),
        100 * effects["ci_low"].to_numpy(),
        100 * effects["ci_high"].to_numpy(),
        f"{plan.study_id}: effects ({CONFIDENCE:.0%} CI over {setup['k']} folds)",
        figure,
    )
    return _write(plan, table, metrics, text, summary, {"effects.csv": effects}, out, paths, figure)


def _write(
    plan: StudyPlan,
    table: pd.DataFrame,
    metrics: dict[str, Any],
    text: str,
    summary: pd.DataFrame,
    extra: dict[str, pd.DataFrame],
    out: Staging,
    paths: Paths,
    figure: Path | None,
) -> list[Path]:
    folder = paths.reports / plan.study_id
    scores = {arm: list(group["val_accuracy"]) for arm, group in table.groupby("arm", sort=False)}
    written = [
        write_text(out.path(paths.plots(plan.study_id) / "folds.csv"), table.to_csv(index=False)),
        write_json(out.path(paths.metrics(plan.study_id) / f"{plan.kind}.json"), metrics),
        write_text(out.path(folder / "README.md"), text + "\n"),
        write_text(out.path(folder / "summary.csv"), summary.to_csv(index=False)),
        *(write_text(out.path(folder / name), frame.to_csv(index=False)) for name, frame in extra.items()),
        fold_boxplot(scores, f"{plan.study_id}: accuracy per fold", out.path(folder / "boxplot.png")),
    ]
    return written + ([figure] if figure else [])


def run_study_stage(kind: str, study_id: str, params: Params, paths: Paths, outputs: Outputs) -> None:
    """One crossval or ablation stage: train what is not finished, then write and log the study's outputs."""
    studies = params.crossval if kind == "crossval" else params.ablation
    if study_id not in studies:
        raise ParamsError(
            f"unknown {kind} study {study_id!r}; params.yaml `{kind}` has: {', '.join(studies) or '(none)'}"
        )
    backend.share_the_device()  # before this process first asks for the device: the workers may need room on it
    plan = StudyPlan.make(kind, study_id, params, paths)
    study = studies[study_id]
    logged = {"study": study_id, "budget": params.study_budget(study_id), "seed": params.seed}
    # Where the trainings run is left out: a resumed run may change it (MLflow refuses a changed param)
    logged |= study.model_dump(mode="json", exclude={"description", "parallel", "executor", "ray"})
    with plan.parent_run(params, paths, logged), staged_outputs(paths.root) as out:
        prepared = paths.prepared(plan.dataset)
        log_prepared_inputs(read_meta(prepared), plan.data_hash, prepared, [TRAINING])  # the folds' source
        with system_metrics():
            ray = study.ray if study.executor == "ray" else None
            run = plan.train_all(params.seed, backend.trainings_at_once(study.parallel, len(plan.folds)), ray)
        for path in outputs(plan, run, params, out, paths):
            mlflow.log_artifact(str(path))
        metrics = json_metrics(out, paths.metrics(study_id) / f"{kind}.json")
        mlflow.log_metrics(metrics)
    means = ", ".join(
        f"{arm} {100 * np.mean([s.val_accuracy for s in run.scores if s.arm == arm]):.2f}%" for arm in plan.arms
    )
    log.info("%s: %s (%d trainings, %d now, %.1f per minute)", study_id, means, len(run.scores), run.trained,
             run.trainings_per_minute)  # fmt: skip


def json_metrics(out: Staging, target: Path) -> dict[str, float]:
    """The numeric entries of the staged metrics file, flattened, under names MLflow accepts."""
    staged = next(staged for staged, final in out.moves if final == target)
    flat = flatten(json.loads(staged.read_text()))
    return {
        safe_metric_name(k): float(v)
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
    }
