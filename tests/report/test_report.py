"""The reproduction report sets each seed's claim beside the metrics files, and claims.yaml matches the zoo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cnnlab.catalog.datasets import DATASETS
from cnnlab.catalog.networks import build_model
from cnnlab.params import ParamsError, load_params, parse_params
from cnnlab.report.claims import Claims, load_claims
from cnnlab.report.rows import build_rows, markdown, to_csv
from helpers.metrics import write_metrics
from helpers.project import ROOT, fit_quick_floors

CLAIMS = ROOT / "claims.yaml"


def two_experiments() -> tuple:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["experiments"] = {k: raw["experiments"][k] for k in ("F1", "C1", "M2")}
    raw["datasets"] = ["fashion_mnist", "cifar10", "mnist"]
    raw["finetune"]["run"] = []
    fit_quick_floors(raw)
    return parse_params(raw), load_claims(CLAIMS)


def test_rows_compare_the_claimed_metric_with_the_measured_one(tmp_path: Path) -> None:
    params, claims = two_experiments()
    write_metrics(
        tmp_path,
        "F1",
        {"val_accuracy": 0.9012, "params": 89546, "budget": "full", "dataset": "fashion_mnist", "data_format": "idx"},
        {"test_accuracy": 0.8934},
    )
    write_metrics(
        tmp_path,
        "C1",
        {
            "val_accuracy": 0.5,
            "params": 890410,
            "budget": "quick",
            "dataset": "cifar10",
            "data_format": "image-zip",
            "device": "cpu",
            "compute_dtype": "mixed_bfloat16",
        },
        {"test_accuracy": 0.4811},
    )
    f1, c1, m2 = build_rows(params, claims, tmp_path)
    # F1's claim is a validation accuracy (0.9178): compared with our validation accuracy, not the test one.
    assert (f1.metric, f1.measured, f1.test_accuracy) == ("val_accuracy", 0.9012, 0.8934)
    assert f1.difference == pytest.approx(-1.66)
    assert f1.budget == "full" and c1.budget == "quick"
    assert (f1.device, c1.device) == ("cpu", "cpu, bf16")  # a row says when its model trained in bfloat16
    assert "88,546" in f1.notes and "differs" not in f1.notes  # the seed's typo explained, our count matches it
    assert c1.difference == pytest.approx(100 * (0.4811 - 0.7989))
    assert "JPEG" in c1.notes and "JPEG" not in f1.notes
    assert m2.measured is None and m2.difference is None and "Not run yet" in m2.notes

    text = markdown([f1, c1, m2], claims, "Reproduction")
    assert "| **F1** |" in text and "90.12%" in text and "-1.66 pp" in text and "89,546 / 89,546" in text
    assert "## Mistakes in the seeds that we did not copy" in text and "C4" in text
    lines = to_csv([f1, c1, m2]).splitlines()
    assert lines[0].startswith("id,seed,") and lines[0].endswith(",difference") and len(lines) == 4


def test_a_parameter_count_unlike_the_seeds_is_flagged(tmp_path: Path) -> None:
    params, claims = two_experiments()
    write_metrics(tmp_path, "F1", {"val_accuracy": 0.9, "params": 88546, "budget": "full"}, {"test_accuracy": 0.9})
    assert "our model has 88,546" in build_rows(params, claims, tmp_path)[0].notes


def test_an_experiment_without_a_claim_is_one_of_yours_in_its_own_table(tmp_path: Path) -> None:
    params, claims = two_experiments()
    claims = Claims(experiments={k: v for k, v in claims.experiments.items() if k != "C1"})  # C1 as if it were yours
    write_metrics(tmp_path, "C1", {"val_accuracy": 0.61, "params": 890410, "budget": "full"}, {"test_accuracy": 0.6})
    rows = build_rows(params, claims, tmp_path)
    assert [(r.id, r.own) for r in rows] == [("F1", False), ("C1", True), ("M2", False)]
    text = markdown(rows, claims, "Report")
    seeds, own = text.split("## Your experiments")
    assert "| **F1** |" in seeds and "| **M2** |" in seeds and "**C1**" not in seeds
    c1 = next(line for line in own.splitlines() if line.startswith("| **C1** |"))
    assert "cifar10 | C1 | 61.00% | 60.00% |" in c1 and "890,410" in c1
    assert to_csv(rows).splitlines()[2].startswith("C1,,,test_accuracy,,0.6,0.6,full")  # no seed, no claim


def test_bad_claims_file_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "claims.yaml").write_text("experiments:\n  F1: {seed: x, text: y, metric: top5}\n")
    with pytest.raises(ParamsError, match=r"claims\.yaml is not valid"):
        load_claims(tmp_path / "claims.yaml")
    with pytest.raises(FileNotFoundError, match="seeds' claims"):
        load_claims(tmp_path / "missing.yaml")


def test_every_experiment_has_a_claim_and_printed_param_counts_match_the_zoo() -> None:
    """The seeds' parameter counts (F1 89,546; F2 333,526; M1 93,322; C1 890,410; M4 61,706) are our models'."""
    params, claims = load_params(ROOT / "params.yaml"), load_claims(CLAIMS)
    assert set(params.experiments) <= set(claims.experiments)
    checked = set()
    for exp_id, claim in claims.experiments.items():
        if claim.params is None:
            continue
        experiment = params.experiments[exp_id]
        spec = DATASETS[experiment.dataset]
        model = build_model(experiment.model, spec.image_shape, len(spec.classes), **experiment.model_options)
        assert model.count_params() == claim.params, exp_id
        checked.add(exp_id)
    assert checked == {"F1", "F2", "M1", "M4", "C1"}


def test_report_command_renders_any_metrics_folder(tmp_path: Path) -> None:
    from cnnlab.cli import main as cli

    write_metrics(tmp_path / "metrics", "M1", {"val_accuracy": 0.98, "params": 93322, "budget": "full"})
    (tmp_path / "metrics" / "M1" / "evaluate.json").write_text(json.dumps({"test_accuracy": 0.9902}))
    out = tmp_path / "results.md"
    args = ["--params", str(ROOT / "params.yaml"), "report", "--metrics", str(tmp_path / "metrics")]
    chart = tmp_path / "results.png"
    assert cli([*args, "--measured-only", "--title", "Full budget", "--out", str(out), "--chart", str(chart)]) == 0
    assert chart.read_bytes()[:4] == b"\x89PNG"
    rows = [line for line in out.read_text().splitlines() if line.startswith("| **")]
    assert out.read_text().startswith("# Full budget") and len(rows) == 1
    assert "99.02%" in rows[0] and "-0.08 pp" in rows[0]  # against the book's 99.1%
