"""A recipe's `precision`: mixed bfloat16 where the hardware computes it, float32 saved models, float32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cnnlab.params import ParamsError, load_params, parse_params
from cnnlab.training import precision
from cnnlab.training.fit import fit, seeded_model
from helpers.project import ROOT, subset
from helpers.training import f1_recipe, recipe


def test_auto_is_mixed_bfloat16_only_where_the_hardware_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    assert precision.policy_name("auto") == "mixed_bfloat16"
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    assert precision.policy_name("auto") == "float32"
    assert precision.policy_name("mixed_bfloat16") == "mixed_bfloat16"  # asked for by name: as asked
    assert precision.policy_name("float32") == "float32"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\nbugs\t\t: none\n")
    assert {"avx512f", "avx512_bf16"} <= precision.cpu_flags(cpuinfo)
    assert "none" not in precision.cpu_flags(cpuinfo)
    assert precision.cpu_flags(tmp_path / "missing") == set()


def test_the_quick_budget_asks_for_auto_and_the_seed_recipes_for_float32() -> None:
    params = load_params(ROOT / "params.yaml")
    for exp_id, entry in params.experiments.items():
        assert entry.precision == "float32", exp_id  # the full budget trains as the seeds do
        assert entry.recipe("quick").precision == ("float32" if exp_id == "C1" else "auto"), exp_id
        assert entry.recipe("speed").precision == "float32", exp_id
    for study_id in ("C3", "C4"):
        arms = params.study_arms(study_id)
        assert {arm.precision for arm in arms.values()} == {"auto" if params.budget == "quick" else "float32"}


def test_a_transfer_recipe_refuses_mixed_precision() -> None:
    raw = load_params(ROOT / "params.yaml").model_dump(mode="json", exclude_unset=True)
    first = next(iter(raw["finetune"]["recipes"]))
    raw["finetune"]["recipes"][first]["precision"] = "mixed_bfloat16"
    with pytest.raises(ParamsError, match="precision"):
        parse_params(raw)


def test_building_in_a_policy_restores_the_global_one() -> None:
    model = seeded_model(recipe("C5", precision="mixed_bfloat16"), (32, 32, 3), 10, seed=1)
    assert keras.config.dtype_policy().name == "float32"
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions and all(layer.compute_dtype == "bfloat16" for layer in convolutions)
    assert all(layer.variable_dtype == "float32" for layer in model.layers)
    assert model.layers[-1].compute_dtype == "float32"  # the softmax, so the loss sees full-precision probabilities


@pytest.fixture(scope="module")
def mixed_f1(fashion: dict) -> tuple:
    """F1 trained 2 epochs on 2,000 Fashion-MNIST images in mixed bfloat16, twice with one seed."""
    train, val = subset(fashion["train"], 2000), subset(fashion["test"], 500)
    plan = f1_recipe(epochs=2, budgets={}, precision="mixed_bfloat16")
    runs = []
    for _ in range(2):
        model = seeded_model(plan, (28, 28, 1), 10, seed=5)
        runs.append((model, fit(model, plan, train, val, 10, seed=5, verbose=0)))
    return runs, val


def test_mixed_bfloat16_learns_and_repeats_itself(mixed_f1: tuple) -> None:
    (_, first), (_, second) = mixed_f1[0]
    assert first.history["val_accuracy"][-1] > 0.6  # chance is 0.1
    assert first.history == second.history


def test_the_float32_copy_has_the_trained_weights_and_survives_saving(mixed_f1: tuple, tmp_path: Path) -> None:
    (trained, result), _ = mixed_f1[0]
    (x_val, _) = mixed_f1[1]
    assert result.model is trained and not precision.is_float32(trained)
    copy = precision.float32_copy(trained)
    assert precision.is_float32(copy)
    for mixed, full in zip(trained.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(mixed, full)
    copy.save(tmp_path / "f1.keras")
    loaded = keras.models.load_model(tmp_path / "f1.keras")
    assert precision.is_float32(loaded)
    full = loaded.predict(x_val, verbose=0)
    assert full.dtype == np.float32
    mixed = np.asarray(trained.predict(x_val, verbose=0), dtype=np.float32)
    assert np.abs(full - mixed).max() < 0.05  # the same network, up to bfloat16 rounding
    assert (full.argmax(1) == mixed.argmax(1)).mean() > 0.97


def test_the_train_stage_saves_and_logs_a_float32_model_trained_in_bfloat16(
    tmp_path: Path, fashion: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from cnnlab.nets.predict import load_model
    from cnnlab.pipeline.stage import Paths
    from helpers.project import load_stage, prepared_project

    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)  # as on a CPU or GPU with bfloat16
    params = prepared_project(tmp_path, fashion, lambda raw: raw["experiments"]["F1"]["budgets"]["quick"].update(
        train_samples=500, validation=0.2), 700, 100)  # fmt: skip
    load_stage("train").main(params, Paths(tmp_path), "F1")
    assert precision.is_float32(load_model(tmp_path / "models" / "F1.keras"))
    run = mlflow.search_runs(experiment_names=["cnnlab"]).iloc[0]
    assert run["params.precision"] == "auto" and run["params.compute_dtype"] == "mixed_bfloat16"


def test_a_float32_model_is_not_copied() -> None:
    model = seeded_model(f1_recipe(budgets={}), (28, 28, 1), 10, seed=1)  # the seed's recipe: float32
    assert precision.is_float32(model)
    assert precision.float32_copy(model) is model
