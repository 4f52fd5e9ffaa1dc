"""One resolver says what every id is: its kind, budget, recipe, data set, training subsample, producing stage and
MLflow tag."""

from __future__ import annotations

import pytest
import yaml

from cnnlab.params import AblationStudy, DetectJob, Experiment, Params, ParamsError, Transfer, Tune, parse_params
from helpers.project import ROOT

# id: (kind, data set, recipe type, producing stage, MLflow tag) in the project's params.yaml
EXPECTED = {
    "F1": ("experiment", "fashion_mnist", Experiment, "train@F1", "experiment_id"),
    "C4": ("study", "fashion_mnist", AblationStudy, None, "study"),
    "T1": ("search", "fashion_mnist", Tune, "retrain@T1", "search"),
    "D3": ("transfer", "cats_vs_dogs", Transfer, "finetune@D3", "transfer"),
    "mnist": ("dataset", "mnist", type(None), None, "dataset"),
}


def project_params(own_budget: str | None = None) -> Params:
    """The project's params; with `own_budget`, F1, C4, T1 and D3 each set it as their own budget."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    if own_budget:
        for section in (raw["experiments"]["F1"], raw["ablation"]["C4"], raw["tune"]["T1"],
                        raw["finetune"]["recipes"]["D3"]):  # fmt: skip
            section["budget"] = own_budget
    return parse_params(raw)


def test_every_kind_of_id_resolves_to_its_kind_data_set_recipe_producer_and_tag() -> None:
    params = project_params()
    for target_id, (kind, dataset, recipe, producer, tag) in EXPECTED.items():
        target = params.target(target_id)
        assert (target.kind, target.dataset, target.producer, target.tag) == (kind, dataset, producer, (tag, target_id))
        assert isinstance(target.recipe, recipe), target_id
        assert target.budget == "quick"
    job = params.target("yolov3")
    assert (job.kind, job.dataset, job.producer, job.tag) == ("detect_job", None, None, ("detect_job", "yolov3"))
    assert isinstance(job.recipe, DetectJob)


def test_a_target_has_its_own_budget_and_that_budgets_recipe_and_subsample() -> None:
    params = project_params(own_budget="full")
    quick = project_params()
    for target_id in ("F1", "C4", "T1", "D3"):
        assert params.target(target_id).budget == "full", target_id
    assert params.target("F1").recipe.epochs > quick.target("F1").recipe.epochs
    assert (quick.target("C4").train_samples, params.target("C4").train_samples) == (3000, None)
    assert (quick.target("T1").train_samples, params.target("T1").train_samples) == (3000, None)


def test_only_model_ids_have_a_model_data_set_and_an_unknown_id_names_the_known_ones() -> None:
    params = project_params()
    assert params.target("D3").model_dataset == "cats_vs_dogs"
    with pytest.raises(ParamsError, match="C4 is a study, not a model"):
        _ = params.target("C4").model_dataset
    with pytest.raises(ParamsError, match=r"unknown id 'F9'.*the ids: F0, F1"):
        params.target("F9")


def test_losses_and_augmentation_follow_the_kind() -> None:
    params = project_params()
    assert params.target("T1").augmentation is None  # a search's augmentation is a hyperparameter
    assert params.target("T1").loss_for(2) == "binary_crossentropy"
    assert params.target("F1").loss_for(10) == params.recipe("F1").loss_for(10)
