"""Bad params fail at once, naming the key and the allowed values."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnlab.params import ParamsError, load_params, parse_params
from helpers.project import ROOT


def project_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def broken(change) -> dict:
    raw = copy.deepcopy(project_params())
    change(raw)
    return raw


def test_project_params_are_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.budget == "quick"
    assert set(params.datasets) == {e.dataset for e in params.experiments.values()}  # each data set prepared once


def test_train_samples_of_every_kind_of_id_follow_its_own_budget() -> None:
    params = parse_params(project_params())
    quick = {"F2": 15000, "C3": 5000, "C4": 3000, "T1": 3000, "D4": 1000, "D3": None}  # params.yaml's quick budgets
    assert {target: params.target(target).train_samples for target in quick} == quick
    raw = broken(lambda p: [p[s][i].update(budget="full") for s, i in (("crossval", "C3"), ("tune", "T1"))])
    full = parse_params(raw)
    assert tuple(full.target(i).train_samples for i in ("C3", "T1", "C4")) == (None, None, 3000)


def test_an_experiment_can_run_on_its_own_budget() -> None:
    raw = broken(lambda p: p["experiments"]["M2"].update(budget="full"))
    params = parse_params(raw)
    assert (params.budget_of("M2"), params.budget_of("M1")) == ("full", "quick")
    assert params.recipe("M2").epochs == 12 and params.target("M2").train_samples is None
    assert params.recipe("M1").epochs == raw["experiments"]["M1"]["budgets"]["quick"]["epochs"]
    with pytest.raises(ParamsError, match="unknown experiment 'Z1'; allowed: F0, F1, F2"):
        params.recipe("Z1")
    with pytest.raises(ParamsError, match="unknown data set 'svhn'; the pipeline prepares: fashion_mnist"):
        params.check_dataset("svhn")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda p: p["experiments"]["F1"].update(model="F9"),
            r"experiments\.F1\.model: unknown model 'F9'; allowed: C1",
        ),
        (
            lambda p: p["experiments"]["F1"].update(dataset="svhn"),
            r"experiments\.F1\.dataset: data set 'svhn' is not in `datasets`",
        ),
        (lambda p: p["datasets"].append("svhn"), r"datasets: unknown data set 'svhn'; allowed: cats_vs_dogs"),
        (lambda p: p["experiments"]["F1"].update(budget="long"), r"experiments\.F1\.budget: Input should be 'quick'"),
        (lambda p: p["experiments"]["F1"].update(epochs=-3), r"experiments\.F1\.epochs: .*greater than 0 \(got -3\)"),
        (lambda p: p["experiments"]["F1"].update(epochs=2.5), r"experiments\.F1\.epochs: .*integer.*\(got 2\.5\)"),
        (
            lambda p: p["experiments"]["F1"].update(epoch=3),
            r"experiments\.F1\.epoch: unknown key.*allowed keys: .*epochs",
        ),
        (lambda p: p["experiments"]["F1"]["optimizer"].update(lr=3), r"optimizer\.lr: unknown key.*learning_rate"),
        (lambda p: p["data"].update(mirorr="/m"), r"data\.mirorr: unknown key.*allowed keys: paths, mirror"),
        (  # an arm is validated as a recipe: the allowed keys are a recipe's, not the top level's
            lambda p: p["crossval"]["C3"]["variants"]["dropout"].update(optimizer={"nme": "adam"}),
            r"arm 'dropout' is not a valid recipe: optimizer\.nme: unknown key \(a typo\?\); allowed keys: name, "
            r"learning_rate",
        ),
        (
            lambda p: p["tune"]["T1"]["space"].update(dropout={"mn": 0.0, "max": 0.5}),
            r"tune\.T1\.space\.dropout: .*mn: unknown key \(a typo\?\); allowed keys: min, max, step, sampling",
        ),
        (
            lambda p: p["experiments"]["F1"].update(epochs=True),
            r"experiments\.F1\.epochs: .*valid integer \(got True\)",
        ),
        (lambda p: p["experiments"]["F1"].update(batch_size="64"), r"experiments\.F1\.batch_size: .*valid integer"),
        (lambda p: p["experiments"]["F1"].update(model_options={"dropout": 0.5}), r"model F1 has no option dropout"),
        (lambda p: p["experiments"]["C1"].update(model_options={"dropot": [0]}), r"no option dropot; allowed: dropout"),
        (
            lambda p: p["experiments"]["F1"].update(loss="binary_crossentropy"),
            r"does not fit fashion_mnist \(10 classes\)",
        ),
        (
            lambda p: p["data"].update(online_base={"fashion": "http://x/"}),
            r"data\.online_base\.fashion: unknown data set",
        ),
        (lambda p: p["experiments"]["F1"].update(augmentation={"brightness_range": [1.2, 0.8]}), r"low <= high"),
        (lambda p: p.pop("datasets"), r"datasets: required key is missing"),
        (lambda p: p.update(budget="huge"), r"budget: Input should be 'quick', 'full' or 'speed'"),
        (
            lambda p: p["experiments"]["F1"]["budgets"]["speed"].update(model_options={"dropout": 0.1}),
            r"budgets\.speed\.model_options: model F1 has no option dropout; allowed: batchnorm",
        ),
        (lambda p: p["experiments"]["M3"]["budgets"]["speed"].update(validation=2.0), r"between 0 and 1"),
        (
            lambda p: p["experiments"]["F1"]["optimizer"].update(schedule="step"),
            r"optimizer\.schedule: Input should be 'constant' or 'cosine'",
        ),
        (lambda p: p["experiments"]["F1"].update(validation=1.5), r"between 0 and 1"),
        (lambda p: p["experiments"]["F1"]["optimizer"].update(name="adamax2"), r"optimizer\.name: Input should be"),
        (lambda p: p["experiments"]["F1"].update(augmentation={"rotation_range": 400}), r"rotation_range: .*180"),
    ],
)
def test_bad_params_name_the_key_and_the_allowed_values(change, expected: str) -> None:
    with pytest.raises(ParamsError, match=expected):
        parse_params(broken(change))


def test_budget_overrides_the_recipe() -> None:
    raw = project_params()
    quick = parse_params(raw)
    full = parse_params({**raw, "budget": "full"})
    assert quick.recipe("F1").epochs == raw["experiments"]["F1"]["budgets"]["quick"]["epochs"]
    assert full.recipe("F1").epochs == 30  # the seed's own recipe


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_a_stage_with_bad_params_fails_before_loading_data(tmp_path: Path) -> None:
    raw = broken(lambda p: p["experiments"]["F1"].update(epochs=0))
    project = tmp_path / "project"  # beside the test's own MLflow store
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py"), "F1"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "experiments.F1.epochs" in done.stderr and "greater than 0" in done.stderr
    assert "Traceback" not in done.stderr
    assert [p.name for p in project.iterdir()] == ["params.yaml"]  # nothing loaded, nothing written


def test_loss_is_chosen_from_the_number_of_classes() -> None:
    recipe = parse_params(project_params()).recipe("F1")
    assert recipe.loss is None
    assert recipe.loss_for(10) == "sparse_categorical_crossentropy"
    assert recipe.loss_for(2) == "binary_crossentropy"


def test_every_registered_experiment_builds_its_model_with_a_fitting_head() -> None:
    from cnnlab.catalog.datasets import DATASETS
    from cnnlab.catalog.networks import build_model

    params = load_params(ROOT / "params.yaml")
    assert {"F0", "F1", "F2", "F3", "M0", "M1", "M2", "M3", "M4", "C1", "C2", "C5", "C6", "D1", "D2"} <= set(
        params.experiments
    )
    for name, experiment in params.experiments.items():
        spec = DATASETS[experiment.dataset]
        model = build_model(experiment.model, spec.image_shape, len(spec.classes), **experiment.model_options)
        binary = experiment.loss_for(len(spec.classes)) == "binary_crossentropy"
        assert model.output_shape[-1] == (1 if binary else len(spec.classes)), name
        for budget in ("quick", "full"):
            assert experiment.recipe(budget).epochs > 0


def test_f2_split_is_the_seeds_train_test_split() -> None:
    import numpy as np
    from sklearn.model_selection import train_test_split

    from cnnlab.data.splits import stratified_split

    labels = np.random.default_rng(0).integers(0, 10, 1000)
    kept, held = stratified_split(labels, 0.2, seed=42, stratify=False)
    seed_train, seed_val = train_test_split(np.arange(1000), test_size=0.2, random_state=42)
    np.testing.assert_array_equal(held, np.sort(seed_val))
    np.testing.assert_array_equal(kept, np.sort(seed_train))


@pytest.mark.parametrize(
    ("args", "expected"),
    [([], "usage: python .*train.py <experiment id or data set>"), (["Z1"], "unknown experiment 'Z1'; allowed: F0")],
)
def test_a_stage_without_a_known_target_says_how_to_call_it(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(project_params(), sort_keys=False))
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py"), *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.search(expected, done.stderr), done.stderr


def test_params_validation_and_the_light_stages_load_neither_keras_nor_scikit_learn() -> None:
    # The data stages validate all params (model names and options, backbone names) and must not pay for Keras;
    # the first stage of a run starts in a fresh process, where scikit-learn's import alone takes 0.6 s.
    code = (
        "import sys; import cnnlab.pipeline.stage; from cnnlab.params import load_params; "
        "import cnnlab.workflows.download, cnnlab.workflows.preprocess, cnnlab.workflows.report; "
        f"load_params({str(ROOT / 'params.yaml')!r}); "
        "print(sorted(m for m in ('tensorflow', 'keras.src', 'jax', 'torch', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_backbone_names_read_without_keras_are_keras_applications() -> None:
    import keras

    from cnnlab.params import keras_applications

    constructors = {n for n in dir(keras.applications) if n[0].isupper() and callable(getattr(keras.applications, n))}
    assert set(keras_applications()) == constructors and {"MobileNet", "VGG16", "ResNet50"} <= constructors


def test_the_speed_budget_changes_optimizer_model_options_and_validation() -> None:
    params = parse_params(broken(lambda p: p.update(budget="speed")))
    f1, seed_recipe = params.recipe("F1"), parse_params(project_params()).recipe("F1")
    assert f1.model_options == {"batchnorm": True} and f1.validation == "test" and f1.batch_size == 512
    assert (f1.optimizer.schedule, f1.optimizer.warmup_epochs) == ("cosine", 1.0)  # a section, not a dict
    assert seed_recipe.optimizer.schedule == "constant" and seed_recipe.model_options == {}
    c1 = params.recipe("C1")
    assert c1.model_options == {"batchnorm": True, "dropout": [0.1, 0.1, 0.3]}  # merged over C1's own (none)
    assert params.recipe("M2").epochs == 12  # no speed recipe: the seed's own


def _with_id(section: str, new_id: str) -> dict:
    """The project's params with one more entry in `section`, under `new_id` (a copy of its first entry)."""
    raw = copy.deepcopy(project_params())
    if section == "datasets":
        raw["datasets"].append(new_id)
        raw["data"]["custom"] = {new_id: {"path": "images/mine", "image_size": [32, 32]}}
        return raw
    if section == "detect.jobs":
        raw["detect"]["jobs"][new_id] = copy.deepcopy(next(iter(raw["detect"]["jobs"].values())))
        return raw
    entries = raw["finetune"]["recipes"] if section == "finetune.recipes" else raw[section]
    entries[new_id] = copy.deepcopy(next(iter(entries.values())))
    return raw


SECTIONS = ["datasets", "experiments", "crossval", "ablation", "tune", "finetune.recipes", "detect.jobs"]


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize("bad", ["../../evil", "1st", "two words", "a/b", "-x", "x;rm", "_x"])
def test_an_id_that_could_be_read_as_a_path_or_a_command_is_refused(section: str, bad: str) -> None:
    with pytest.raises(ParamsError, match=re.escape(f"{bad!r} is not a valid id")):
        parse_params(_with_id(section, bad))


@pytest.mark.parametrize("section", SECTIONS)
def test_ids_of_letters_digits_dots_dashes_and_underscores_are_accepted(section: str) -> None:
    params = parse_params(_with_id(section, "My-run_2.b"))
    assert "My-run_2.b" in {
        "datasets": params.datasets, "experiments": params.experiments, "crossval": params.crossval,
        "ablation": params.ablation, "tune": params.tune, "finetune.recipes": params.finetune.recipes,
        "detect.jobs": params.detect.jobs,
    }[section]  # fmt: skip
