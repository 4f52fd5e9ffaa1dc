"""Reports/reproduction.md (and .csv), each seed's claim beside what the pipeline measured."""

from __future__ import annotations

import logging

import mlflow

from cnnlab.params import Params
from cnnlab.pipeline import stage
from cnnlab.report.chart import claims_chart
from cnnlab.report.claims import load_claims
from cnnlab.report.floors import floor_metrics, floor_section
from cnnlab.report.rows import build_rows, markdown, to_csv
from cnnlab.report.sections import floor_checks, search_section, study_section, transfer_section
from cnnlab.util.files import combined_hash, sha256_file, staged_outputs, write_text

log = logging.getLogger("cnnlab.report")
PREFACE = (
    "Written by the report stage (`dvc repro report`) from `claims.yaml` (the seeds' numbers) and "
    "`metrics/<id>/train.json` / `evaluate.json` (ours). *measured* is the metric the claim is about; "
    "*difference* is measured minus claimed. Rows on the `quick` budget are smoke runs (minutes on a laptop "
    "CPU): they show that each experiment learns, not what the seed's recipe reaches; "
    "`dvc exp run -S budget=full` runs the seeds' recipes."
)


def run(params: Params, paths: stage.Paths) -> None:
    claims = load_claims(paths.root / "claims.yaml")
    metrics_hash = combined_hash(sha256_file(p) for p in sorted((paths.root / "metrics").rglob("*.json")))
    with stage.mlflow_run(
        "report",
        "",
        params,
        paths,
        metrics_hash,
        {"experiments": ",".join(params.experiments), "studies": ",".join([*params.crossval, *params.ablation])},
    ):
        rows = build_rows(params, claims, paths.root / "metrics")
        checks = floor_checks(params, rows, paths.root / "metrics")
        with staged_outputs(paths.root) as out:
            outputs = [
                write_text(
                    out.path(paths.reports / "reproduction.md"),
                    markdown(
                        rows,
                        claims,
                        "Reproduction of the seed experiments",
                        PREFACE,
                        (
                            study_section(params, claims, paths.root / "metrics"),
                            search_section(params, rows, paths.root / "metrics"),
                            transfer_section(params, claims, rows, paths.root / "metrics"),
                            floor_section(checks),
                        ),
                    ),
                ),
                write_text(out.path(paths.reports / "reproduction.csv"), to_csv(rows)),
                claims_chart(rows, "Seed claims and measured accuracy", out.path(paths.reports / "reproduction.png")),
            ]
            for path in outputs:
                mlflow.log_artifact(str(path))
        measured = [r for r in rows if r.test_accuracy is not None]
        mlflow.log_metrics({f"test_accuracy.{r.id}": r.test_accuracy for r in measured if r.test_accuracy is not None})
        mlflow.log_metrics(floor_metrics(checks))
    log.info("reproduction report: %d of %d experiments measured", len(measured), len(rows))
