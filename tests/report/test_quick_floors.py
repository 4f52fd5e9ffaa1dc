"""The quick budget's floors (params.yaml `quick_floors`): resolved per id, checked, marked by the report, and met
by the committed quick-budget metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cnnlab.params import Params, ParamsError, load_params, parse_params
from cnnlab.report.claims import load_claims
from cnnlab.report.floors import floor_metrics, floor_section
from cnnlab.report.rows import build_rows, markdown, to_csv
from cnnlab.report.sections import floor_checks, search_section, study_section, transfer_section
from helpers.metrics import write_metrics
from helpers.project import ROOT, fit_quick_floors

PARAMS = load_params(ROOT / "params.yaml")
CLAIMS = load_claims(ROOT / "claims.yaml")
SECTIONS = ("experiments", "crossval", "ablation", "tune", "finetune")
# Every id the pipeline runs that has a floor (of the transfer recipes, those in finetune.run)
FLOORED = [
    i
    for s in SECTIONS
    for i in (PARAMS.finetune.run if s == "finetune" else PARAMS.ids_of(s))
    if PARAMS.quick_floors.floor(s, i) is not None
]


def project_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_every_built_in_id_resolves_to_its_floor() -> None:
    c_family = ("C1", "C2", "C5", "C5_L2", "C5_DROPOUT", "C5_BN", "C6")
    expected = {
        "experiments": {
            **dict.fromkeys(("F0", "F1", "F2", "F3", "M0", "M1", "M2", "M3", "M4"), 0.80),
            **dict.fromkeys(c_family, 0.30),
            **dict.fromkeys(("D1", "D2"), 0.55),
        },
        "crossval": {"C3": 0.60},
        "ablation": {"C4": 0.60},
        "tune": {"T1": 0.65},
        "finetune": {"D3": 0.80, "D4": 0.80, "D5": 0.80, "C7": None, "birds": None, "birds_frozen": None},
    }
    resolved = {s: {i: PARAMS.quick_floors.floor(s, i) for i in PARAMS.ids_of(s)} for s in SECTIONS}
    assert resolved == expected


@pytest.mark.parametrize(
    ("floors", "expected"),
    [
        ({"experiments": {"Z*": 0.5}}, r"quick_floors\.experiments\.Z\*: names no id of `experiments`; the ids: F0"),
        ({"crossval": {"C4": 0.5}}, r"quick_floors\.crossval\.C4: names no id of `crossval`; the ids: C3"),
        ({"finetune": {"D9": 0.5}}, r"quick_floors\.finetune\.D9: names no id of `finetune\.recipes`"),
        ({"experiments": {"C*": 0.3, "C5*": 0.2}}, r"quick_floors\.experiments: C5 matches C\* and C5\*; give each"),
        ({"experiments": {"F*": 80}}, r"quick_floors\.experiments\.F\*: a floor is an accuracy from 0 to 1 .*got 80"),
        ({"tune": {"T1": -0.1}}, r"quick_floors\.tune\.T1: a floor is an accuracy from 0 to 1"),
        ({"tune": {"T1": "0.6"}}, r"quick_floors\.tune\.T1: Input should be a valid number"),
        ({"experiment": {"F*": 0.8}}, r"quick_floors\.experiment: unknown key.*allowed keys: experiments, crossval"),
    ],
)
def test_bad_floors_name_the_key_and_the_fix(floors: dict, expected: str) -> None:
    raw = project_params()
    raw["quick_floors"] = floors
    with pytest.raises(ParamsError, match=expected):
        parse_params(raw)


def small_project() -> Params:
    """F1, C1 and M2 from scratch, the C3 and C4 studies, the T1 search and the D3 transfer recipe."""
    raw = project_params()
    raw["experiments"] = {k: raw["experiments"][k] for k in ("F1", "C1", "M2")}
    raw["datasets"] = ["fashion_mnist", "cifar10", "mnist", "cats_vs_dogs"]
    raw["finetune"]["run"] = ["D3"]
    fit_quick_floors(raw)  # experiments: F*, M* and C*
    return parse_params(raw)


def write_study(root: Path, means: dict[str, float]) -> None:
    arms = {
        arm: {"mean": mean, "std": 0.01, "ci_low": mean - 0.01, "ci_high": mean + 0.01} for arm, mean in means.items()
    }
    found = {"model": "C1", "dataset": "fashion_mnist", "k": 5, "epochs": 2, "train_samples": 5000, "budget": "quick",
             "device": "cpu", "trainings": 10, "train_seconds_all_folds": 60.0, "arms": arms}  # fmt: skip
    (root / "C3").mkdir()
    (root / "C3" / "crossval.json").write_text(json.dumps(found))


def write_search(root: Path, best_validation: float, test_accuracy: float) -> None:
    found = {"objective": "val_accuracy", "best_objective": best_validation, "trials": 5, "failed": 0,
             "best_params": 800000, "trial_hours": 0.01, "device": "cpu"}  # fmt: skip
    write_metrics(root, "T1", {"budget": "quick", "params": 800000}, {"test_accuracy": test_accuracy})
    (root / "T1" / "tune.json").write_text(json.dumps(found))


def test_the_report_marks_a_quick_result_under_its_floor_and_no_other(tmp_path: Path) -> None:
    params = small_project()
    write_metrics(tmp_path, "F1", {"val_accuracy": 0.86, "params": 89546, "budget": "quick"}, {"test_accuracy": 0.85})
    write_metrics(tmp_path, "C1", {"val_accuracy": 0.26, "params": 890410, "budget": "quick"}, {"test_accuracy": 0.25})
    # Below every floor, but on the full budget: the floors are the quick budget's.
    write_metrics(tmp_path, "M2", {"val_accuracy": 0.5, "params": 1199882, "budget": "full"}, {"test_accuracy": 0.5})
    write_study(tmp_path, {"no_dropout": 0.7, "dropout": 0.55})
    write_search(tmp_path, best_validation=0.7, test_accuracy=0.6)
    write_metrics(tmp_path, "D3", {"val_accuracy": 0.9, "budget": "quick"}, {"test_accuracy": 0.9})

    rows = build_rows(params, CLAIMS, tmp_path)
    f1, c1, m2 = rows
    assert (f1.floor, c1.floor, m2.floor) == (0.8, 0.3, None)
    assert [r.below_floor for r in rows] == [False, True, False]
    table = {line.split(" | ")[0]: line for line in markdown(rows, CLAIMS, "Report").splitlines()}
    assert "| 80% | quick |" in table["| **F1**"] and "below" not in table["| **F1**"]
    assert "| **below floor 30%** | quick |" in table["| **C1**"]
    assert "| - | full |" in table["| **M2**"]
    csv_rows = to_csv(rows).splitlines()
    assert csv_rows[0].endswith(",floor,own,dataset,model,val_accuracy,below_floor,difference")
    assert [line.split(",")[-2] for line in csv_rows[1:]] == ["False", "True", "False"]

    arms = {line.split(" | ")[0]: line for line in study_section(params, CLAIMS, tmp_path).splitlines()}
    assert arms["| no_dropout"].endswith("| 60% |") and arms["| dropout"].endswith("| **below floor 60%** |")
    searched = next(line for line in search_section(params, rows, tmp_path).splitlines() if line.startswith("| T1 "))
    assert "| 60.00% | **below floor 65%** (retrained) |" in searched
    transfer = next(line for line in transfer_section(params, CLAIMS, rows, tmp_path).splitlines() if "**D3**" in line)
    assert "| 90.00% | 80% |" in transfer

    checks = floor_checks(params, rows, tmp_path)
    assert [str(c) for c in checks if c.below] == [
        "C1: test accuracy 25.00%, floor 30%",
        "C3 dropout: mean fold accuracy 55.00%, floor 60%",
        "T1 retrained: test accuracy 60.00%, floor 65%",
    ]
    assert floor_metrics(checks) == {"quick_floor.checked": 7, "quick_floor.below": 3}  # F1, C1, 2 arms, T1 x2, D3
    summary = floor_section(checks)
    assert "7 quick-budget results held to their floors" in summary and "3 fall below" in summary
    assert "- **C1: test accuracy 25.00%, floor 30%**" in summary


def test_results_that_reach_their_floors_are_not_marked(tmp_path: Path) -> None:
    params = small_project()
    write_metrics(tmp_path, "F1", {"val_accuracy": 0.8, "params": 89546, "budget": "quick"}, {"test_accuracy": 0.8})
    write_search(tmp_path, best_validation=0.66, test_accuracy=0.65)  # exactly at the floor reaches it
    rows = build_rows(params, CLAIMS, tmp_path)
    checks = floor_checks(params, rows, tmp_path)
    assert [(c.id, c.part, c.below) for c in checks] == [
        ("F1", "", False),
        ("T1", "best trial", False),
        ("T1", "retrained", False),
    ]
    assert "**below" not in markdown(rows, CLAIMS, "Report") + search_section(params, rows, tmp_path)
    assert "all reach them" in floor_section(checks)


@pytest.fixture(scope="module")
def committed_checks() -> list:
    rows = build_rows(PARAMS, CLAIMS, ROOT / "metrics")
    return floor_checks(PARAMS, rows, ROOT / "metrics")


@pytest.mark.parametrize("target", FLOORED)
def test_committed_quick_metrics_reach_their_floors(committed_checks: list, target: str) -> None:
    """The quick-budget metrics committed in metrics/ (dvc.lock's cache: false outputs) show that each model learns."""
    checks = [c for c in committed_checks if c.id == target]
    assert checks, f"metrics/{target}/ holds no quick-budget result: run `dvc repro` on the quick budget and commit it"
    assert all(c.value is not None for c in checks), f"metrics/{target}/ is missing a result: {checks}"
    below = [str(c) for c in checks if c.below]
    assert not below, f"below the quick floor: {'; '.join(below)}"
