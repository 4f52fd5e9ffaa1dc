"""Studies: arms built from params, k folds that partition the data, no leakage into training, the statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cnnlab.data.prepare import Prepared, describe, save_split
from cnnlab.data.splits import kfold_splits
from cnnlab.params import ParamsError, parse_params
from cnnlab.pipeline.stage import Paths
from cnnlab.training import fit as training
from cnnlab.workflows.study.plan import StudyPlan
from cnnlab.workflows.study.stats import factorial_effects, interval, paired_comparison, summarize
from helpers.project import ROOT, fit_quick_floors

# ---------------------------------------------------------------- params


def project_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_c3_and_c4_arms_follow_the_seed() -> None:
    params = parse_params(project_params())
    c3 = params.study("C3").arms(params.experiments["C1"], "full")
    assert list(c3) == ["no_dropout", "dropout"]
    assert c3["no_dropout"].model_options["dropout"] == [0.0, 0.0, 0.0]
    assert c3["dropout"].model_options["dropout"] == [0.25, 0.25, 0.5]
    assert {(r.dataset, r.epochs, r.batch_size) for r in c3.values()} == {("cifar10", 10, 128)}
    assert params.study("C3").folds_for("full").model_dump() == {"k": 5, "shuffle": True, "stratify": True}
    c4 = params.study("C4").arms(params.experiments["C1"], "full")
    assert list(c4) == ["000", "001", "010", "011", "100", "101", "110", "111"]
    assert c4["000"].model_options == {"dropout": [0.0, 0.0, 0.0]} and c4["000"].augmentation.rotation_range == 0
    assert c4["011"].model_options == {"dropout": [0.25, 0.25, 0.5], "output_l2": 0.01}  # changes merge
    assert c4["100"].augmentation.rotation_range == 3 and c4["100"].augmentation.horizontal_flip
    assert c4["101"].augmentation.width_shift_range == 0.1 and c4["101"].model_options["output_l2"] == 0.01
    assert params.study("C4").cells()["101"] == ["augmentation", "l2"]


def test_quick_budget_runs_the_studies_on_fashion_mnist() -> None:
    params = parse_params(project_params())
    for study_id in ("C3", "C4"):
        assert {r.dataset for r in params.study_arms(study_id).values()} == {"fashion_mnist"}


def test_batch_normalization_is_a_fourth_factor() -> None:
    raw = project_params()
    raw["ablation"]["C4"]["design"] = ["augmentation", "dropout", "l2", "batchnorm"]
    arms = parse_params(raw).study_arms("C4")
    assert len(arms) == 16 and arms["0001"].model_options["batchnorm"] is True


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["crossval"]["C3"]["variants"].update(bad={"model_options": {"rate": 0.5}}),
         r"crossval\.C3 \(quick budget\): arm 'bad' is not a valid recipe: .*no option rate"),
        (lambda r: r["ablation"]["C4"].update(design=["augmentation", "typo"]), r"design must list distinct factors"),
        (lambda r: r["crossval"]["C3"].update(experiment="C9"), r"crossval\.C3\.experiment: unknown experiment 'C9'"),
        (lambda r: r["crossval"]["C3"]["budgets"]["quick"].update(dataset="svhn"), r"'svhn' is not in `datasets`"),
        (lambda r: r["crossval"]["C3"]["variants"].pop("dropout"), r"at least two variants"),
        (lambda r: r["crossval"]["C3"]["variants"].update({"a b": {}}), r"letters, digits"),
        (lambda r: r["crossval"]["C3"]["recipe"].update(callbacks={"checkpoint_best": True}), r"sets callbacks"),
        (lambda r: r["crossval"]["C3"]["folds"].update(k=1), r"crossval\.C3\.folds\.k"),
        (lambda r: r["ablation"]["C4"].update(parallel=0), r"ablation\.C4\.parallel"),
    ],
)  # fmt: skip
def test_a_bad_study_is_refused_before_any_training(edit, message: str) -> None:
    raw = project_params()
    edit(raw)
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


# ---------------------------------------------------------------- folds and leakage


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("stratify", [False, True])
def test_kfold_splits_validate_every_index_exactly_once(shuffle: bool, stratify: bool) -> None:
    labels = np.arange(100) % 4
    folds = kfold_splits(labels, 5, shuffle, stratify, seed=3)
    held = np.concatenate([val for _, val in folds])
    assert sorted(held) == list(range(100))
    for train, val in folds:
        assert not set(train) & set(val) and len(train) + len(val) == 100
        if stratify:
            assert np.bincount(labels[val]).tolist() == [5, 5, 5, 5]
    if not shuffle and not stratify:  # the seed's KFold(5): contiguous blocks in file order
        assert folds[1][1].tolist() == list(range(20, 40))
    assert [v.tolist() for _, v in kfold_splits(labels, 5, shuffle, stratify, seed=3)] == [v.tolist() for _, v in folds]


def indexed_images(count: int) -> np.ndarray:
    """28x28 grey images whose first two pixels spell their row number, so any batch can be traced back."""
    x = np.random.default_rng(0).integers(0, 256, (count, 28, 28, 1), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = np.arange(count) // 256, np.arange(count) % 256
    return x


def write_prepared(folder: Path, x: np.ndarray, y: np.ndarray) -> None:
    folder.mkdir(parents=True)
    prepared = Prepared({"train": (x, y), "test": (x[:20], y[:20])}, [f"c{i}" for i in range(10)])
    hashes = {s: save_split(folder / f"{s}.npz", a) for s, a in prepared.splits.items()}
    meta = describe(prepared, "fashion_mnist") | {"sha256": hashes}
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.slow
def test_validation_rows_never_reach_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch source `fit` trains on, augmented or not, holds only the fold's training rows (the seed's C4
    trained its augmented cells on the whole training set, held-out fold included)."""
    count = 300
    x, y = indexed_images(count), np.arange(count) % 10
    paths = Paths(tmp_path)
    write_prepared(paths.prepared("fashion_mnist"), x, y)
    raw = project_params()
    raw["datasets"] = ["fashion_mnist"]
    raw["finetune"]["run"] = []
    raw["experiments"] = {"C1": raw["experiments"]["C1"] | {"dataset": "fashion_mnist"}}
    raw["crossval"] = {}
    raw["ablation"]["C4"]["design"] = ["augmentation", "dropout"]
    raw["ablation"]["C4"]["budgets"]["quick"] = {"epochs": 1, "k": 3}
    fit_quick_floors(raw)
    params = parse_params(raw)
    seen: list[tuple[str, set[int], bool]] = []
    real_inputs, real_fit = training.training_inputs, training.keras.Model.fit

    def spy_inputs(x_train, y_train, recipe, seed):
        rows = {int(a) * 256 + int(b) for a, b in x_train[:, 0, :2, 0]}
        seen.append(("train", rows, recipe.augmentation.horizontal_flip))
        return real_inputs(x_train, y_train, recipe, seed)

    def spy_fit(self, *args, validation_data=None, **kwargs):
        images = np.concatenate([np.asarray(batch) for batch, _ in validation_data])  # the held-out batches
        rows = {int(a) * 256 + int(b) for a, b in images[:, 0, :2, 0]}
        seen.append(("val", rows, False))
        return real_fit(self, *args, validation_data=validation_data, **kwargs)

    monkeypatch.setattr(training, "training_inputs", spy_inputs)
    monkeypatch.setattr(training.keras.Model, "fit", spy_fit)
    plan = StudyPlan.make("ablation", "C4", params, paths)
    with plan.parent_run(params, paths, {}):
        run = plan.train_all(params.seed)
    assert len(run.scores) == 4 * 3 and len(seen) == 2 * 12
    trained = [s for s in seen if s[0] == "train"]
    validated = [s for s in seen if s[0] == "val"]
    assert sum(augmented for _, _, augmented in trained) == 2 * 3  # cells [10] and [11], three folds each
    for (_, train_rows, _), (_, val_rows, _), (train_index, val_index) in zip(
        trained, validated, plan.folds * 4, strict=True
    ):
        assert val_rows == set(val_index.tolist()) and train_rows == set(train_index.tolist())
        assert not train_rows & val_rows and len(train_rows | val_rows) == count
    assert all(0 <= s.val_accuracy <= 1 and s.val_samples == 100 for s in run.scores)


# ---------------------------------------------------------------- statistics


def test_interval_is_the_t_interval() -> None:
    mean, std, low, high = interval([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    assert (low, high) == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=1e-4)  # t(0.975, 2) = 4.3027; / sqrt(3)


def test_paired_comparison_matches_hand_computed_values() -> None:
    first = np.array([0.70, 0.71, 0.72, 0.73, 0.74])
    second = first + np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    result = paired_comparison(first, second)
    assert result["mean_difference"] == pytest.approx(0.03)
    assert result["t"] == pytest.approx(4.2426, abs=1e-3)  # 0.03 / (0.015811 / sqrt(5))
    assert result["p_t"] == pytest.approx(0.01324, abs=1e-4)
    assert result["p_t_corrected"] == pytest.approx(0.04742, abs=1e-4)  # t = 0.03 / sqrt((1/5 + 1/4) * 0.00025)
    assert result["p_wilcoxon"] == pytest.approx(0.0625)  # all five folds won: the smallest exact p for n = 5
    assert result["cohen_dz"] == pytest.approx(1.8974, abs=1e-3)
    assert result["wins"] == 5
    same = paired_comparison(first, first)
    assert same["p_wilcoxon"] == 1.0 and same["mean_difference"] == 0.0


def factorial_table(effect_a: float, effect_b: float, interaction: float, noise: float) -> pd.DataFrame:
    """Cells of a 2^2 design over 5 folds: y = 0.7 + fold block + a*A + b*B + ab*A*B (0/1 indicators)."""
    rng = np.random.default_rng(1)
    rows = []
    for fold in range(1, 6):
        block = 0.02 * fold  # a fold that is easier for every cell: blocking removes it
        for cell in ("00", "01", "10", "11"):
            a, b = int(cell[0]), int(cell[1])
            value = 0.7 + block + effect_a * a + effect_b * b + interaction * a * b + noise * rng.normal()
            rows.append({"arm": cell, "fold": fold, "val_accuracy": value})
    return pd.DataFrame(rows)


def test_factorial_effects_recover_a_known_design() -> None:
    cells = {"00": [], "01": ["b"], "10": ["a"], "11": ["a", "b"]}
    effects = factorial_effects(factorial_table(0.06, 0.0, 0.02, noise=0.0), cells, ["a", "b"]).set_index("term")
    assert effects.loc["a", "effect"] == pytest.approx(0.07)  # 0.06 + half the interaction
    assert effects.loc["b", "effect"] == pytest.approx(0.01)
    assert effects.loc["a:b", "effect"] == pytest.approx(0.01)  # half of (0.08 - 0.06)
    assert effects.loc["a", "ci_high"] - effects.loc["a", "ci_low"] == pytest.approx(0.0)  # fold blocks cancel
    noisy = factorial_effects(factorial_table(0.06, 0.0, 0.0, noise=0.01), cells, ["a", "b"]).set_index("term")
    assert noisy.loc["a", "ci_low"] < 0.06 < noisy.loc["a", "ci_high"] and noisy.loc["a", "p"] < 0.01
    assert noisy.loc["b", "ci_low"] < 0 < noisy.loc["b", "ci_high"]
    assert list(noisy["kind"]) == ["main", "main", "interaction"]


def test_summarize_keeps_the_arm_order() -> None:
    table = factorial_table(0.06, 0.0, 0.0, noise=0.0)
    summary = summarize(table)
    assert list(summary["arm"]) == ["00", "01", "10", "11"] and set(summary["folds"]) == {5}
    assert summary.set_index("arm").loc["10", "mean"] == pytest.approx(0.7 + 0.06 + 0.06)


# ---------------------------------------------------------------- check and report


def test_check_lists_each_study_with_its_trainings(capsys: pytest.CaptureFixture[str]) -> None:
    from cnnlab.cli import main as cli

    assert cli(["--params", str(ROOT / "params.yaml"), "check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    c4 = next(line for line in lines if line.strip().startswith("C4"))
    assert "ablation of C1 on fashion_mnist" in c4 and "8 arms x 3 folds = 24 trainings" in c4  # the quick budget's k


def test_report_sets_the_seed_effects_beside_ours(tmp_path: Path) -> None:
    from cnnlab.report.claims import load_claims
    from cnnlab.report.sections import seed_main_effects, study_section

    claims = load_claims(ROOT / "claims.yaml")
    params = parse_params(project_params())
    cells = params.study("C4").cells()
    arms = {cell: {"factors": "+".join(on) or "none", "mean": 0.7, "std": 0.01, "ci_low": 0.69, "ci_high": 0.71}
            for cell, on in cells.items()}  # fmt: skip
    seed = seed_main_effects(claims.studies["C4"].arms, arms, ["augmentation", "dropout", "l2"])
    assert seed["augmentation"] == pytest.approx(0.756145 - 0.7336325)  # mean([1xx]) - mean([0xx]), leaky
    assert "Not run yet: `dvc repro ablation@C4`" in study_section(params, claims, tmp_path)
    effect = {"kind": "main", "effect": -0.01, "ci_low": -0.02, "ci_high": 0.0, "p": 0.04, "std": 0.01}
    found = {"model": "C1", "dataset": "cifar10", "k": 5, "epochs": 10, "train_samples": 50000, "budget": "full",
             "device": "cpu", "trainings": 40, "train_seconds_all_folds": 100.0, "arms": arms,
             "design": ["augmentation", "dropout", "l2"], "effects": {"augmentation": effect}}  # fmt: skip
    (tmp_path / "C4").mkdir()
    (tmp_path / "C4" / "ablation.json").write_text(json.dumps(found))
    text = study_section(params, claims, tmp_path)
    assert "| [100] augmentation | 0.79340 | 70.00% ± 1.00 | [69.00%, 71.00%] | -9.34 pp |" in text
    assert (
        "main effect of augmentation: -1.00 pp [-2.00, +0.00] pp (p = 0.04); from the seed's cell means: +2.25 pp"
        in text
    )
    assert "leak" in text


def test_an_unknown_study_is_a_clear_error(tmp_path: Path) -> None:
    from cnnlab.workflows.study.outputs import crossval_outputs, run_study_stage

    params = parse_params(project_params())
    with pytest.raises(ParamsError, match=r"unknown crossval study 'C4'; params.yaml `crossval` has: C3"):
        run_study_stage("crossval", "C4", params, Paths(tmp_path), crossval_outputs)


def test_unshuffled_folds_of_class_sorted_data_are_refused(tmp_path: Path) -> None:
    """Image folders are read class by class: KFold without shuffling would hold whole classes out of training."""
    count = 300
    paths = Paths(tmp_path)
    write_prepared(paths.prepared("fashion_mnist"), indexed_images(count), np.sort(np.arange(count) % 10))
    raw = project_params()
    raw["datasets"] = ["fashion_mnist"]
    raw["finetune"]["run"] = []
    raw["experiments"] = {"C1": raw["experiments"]["C1"] | {"dataset": "fashion_mnist"}}
    raw["ablation"] = {}
    raw["crossval"]["C3"]["folds"] = {"k": 5, "shuffle": False, "stratify": False}
    raw["crossval"]["C3"]["budgets"]["quick"] = {"epochs": 1}
    fit_quick_floors(raw)
    with pytest.raises(
        ParamsError, match=r"crossval\.C3: fold 1 would train on no image of class c0, c1: .*shuffle: true"
    ):
        StudyPlan.make("crossval", "C3", parse_params(raw), paths)
    raw["crossval"]["C3"]["folds"] = {"k": 5, "shuffle": True, "stratify": True}
    plan = StudyPlan.make("crossval", "C3", parse_params(raw), paths)
    assert all(np.bincount(plan.y[val], minlength=10).tolist() == [6] * 10 for _, val in plan.folds)


@pytest.mark.parametrize(
    ("device", "cores", "expected"),
    [("gpu:0", 2, 5), ("cpu", 2, 2), ("cpu", 16, 2), ("cpu", 1, 1)],
)
def test_auto_trains_two_folds_at_once_on_a_cpu_and_all_on_a_gpu(monkeypatch, device, cores, expected) -> None:
    from cnnlab.training import backend

    monkeypatch.setattr(backend, "device", lambda: device)
    monkeypatch.setattr(backend.os, "cpu_count", lambda: cores)
    assert backend.trainings_at_once("auto", 5) == expected
    assert backend.trainings_at_once(3, 5) == 3
