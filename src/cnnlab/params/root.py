"""The whole of params.yaml: its top-level keys, and the checks that span sections (ids, data sets, floors)."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import get_args

from pydantic import model_validator

from cnnlab.catalog.datasets import DATASETS
from cnnlab.params.base import BUDGETS, Budget, ParamsError, Strict, check_ids
from cnnlab.params.recipe import Experiment
from cnnlab.params.search import Tune
from cnnlab.params.sections import Data, Detect, Explain, FloorSection, QuickFloors, Tracking
from cnnlab.params.studies import AblationStudy, CrossvalStudy
from cnnlab.params.targets import Target, resolve
from cnnlab.params.transfer import Finetune, Transfer


class Params(Strict):
    budget: Budget = "quick"
    seed: int = 42
    # The data sets the pipeline downloads and preprocesses (one DVC stage each).
    datasets: list[str]
    data: Data = Data()
    mlflow: Tracking = Tracking()
    experiments: dict[str, Experiment]
    # k-fold comparisons and factorial ablations of the experiments (one DVC stage each)
    crossval: dict[str, CrossvalStudy] = {}
    ablation: dict[str, AblationStudy] = {}
    # Keras Tuner searches (tune, retrain and evaluate stages per id)
    tune: dict[str, Tune] = {}
    # pretrained backbones with new heads (finetune and evaluate stages per id in finetune.run)
    finetune: Finetune = Finetune()
    # what the explain stages draw of each trained model: feature maps, filter patterns, Grad-CAM, augmentation
    explain: Explain = Explain()
    # YOLO object detection through OpenCV's DNN module (a detect stage per id in detect.run)
    detect: Detect = Detect()
    # the least accuracy each quick-budget result must reach; the report marks the ones below it
    quick_floors: QuickFloors = QuickFloors()

    @model_validator(mode="after")
    def _references_resolve(self) -> Params:
        self._check_ids()
        known = set(DATASETS) | set(self.data.custom)
        for name in self.datasets:
            if name not in known:
                raise ValueError(
                    f"datasets: unknown data set {name!r}; allowed: {', '.join(sorted(known))} "
                    "(or declare it under data.custom)"
                )
        for name, exp in self.experiments.items():
            if exp.dataset not in self.datasets:
                raise ValueError(
                    f"experiments.{name}.dataset: data set {exp.dataset!r} is not in `datasets` "
                    f"({', '.join(self.datasets)}); add it there so the pipeline prepares it"
                )
        for section, names in (("paths", self.data.paths), ("online_base", self.data.online_base)):
            for name in names:
                if name not in DATASETS:
                    raise ValueError(f"data.{section}.{name}: unknown data set; allowed: {', '.join(sorted(DATASETS))}")
        for name, exp in self.experiments.items():
            if exp.dataset in DATASETS and exp.loss is not None:
                binary_data, binary_loss = len(DATASETS[exp.dataset].classes) == 2, exp.loss == "binary_crossentropy"
                if binary_data != binary_loss:
                    raise ValueError(
                        f"experiments.{name}.loss: {exp.loss} does not fit {exp.dataset} "
                        f"({len(DATASETS[exp.dataset].classes)} classes); use "
                        f"{'binary_crossentropy' if binary_data else 'sparse_categorical_crossentropy'} "
                        "or leave loss out to have it chosen"
                    )
        self._check_studies()
        self._check_searches()
        self._check_transfers()
        self._check_explain()
        self._check_floors()
        return self

    def _check_ids(self) -> None:
        sections = {
            "datasets": self.datasets, "data.custom": self.data.custom, "experiments": self.experiments,
            "crossval": self.crossval, "ablation": self.ablation, "tune": self.tune,
            "finetune.recipes": self.finetune.recipes, "detect.jobs": self.detect.jobs,
        }  # fmt: skip
        for where, ids in sections.items():
            check_ids(where, ids)

    def ids_of(self, section: FloorSection) -> list[str]:
        """The ids a `quick_floors` section names: its params section's keys (finetune's recipes)."""
        return list(self.finetune.recipes if section == "finetune" else getattr(self, section))

    def _check_floors(self) -> None:
        for section in get_args(FloorSection):
            ids = self.ids_of(section)
            where = "finetune.recipes" if section == "finetune" else section
            for key in getattr(self.quick_floors, section):
                if not any(fnmatchcase(target, key) for target in ids):
                    raise ValueError(
                        f"quick_floors.{section}.{key}: names no id of `{where}`; the ids: {', '.join(ids) or '(none)'}"
                    )
            for target in ids:
                entries = self.quick_floors.entries_for(section, target)
                if len(entries) > 1:
                    raise ValueError(
                        f"quick_floors.{section}: {target} matches {' and '.join(entries)}; give each id one floor"
                    )

    def _check_explain(self) -> None:
        models = {*self.experiments, *self.tune, *self.finetune.recipes}
        for name in self.explain.models:
            if name not in models:
                raise ValueError(f"explain.models.{name}: no model has that id; allowed: {', '.join(sorted(models))}")
            self.explain.for_model(name)

    def _check_transfers(self) -> None:
        taken = {*self.experiments, *self.crossval, *self.ablation, *self.tune}
        for name in self.finetune.recipes:
            if name in taken:
                raise ValueError(f"finetune.recipes.{name}: the id is taken; ids share models/<id> and metrics/<id>/")
        for name in self.finetune.run:
            dataset = self.finetune.recipes[name].dataset
            if dataset not in self.datasets:
                raise ValueError(
                    f"finetune.recipes.{name}.dataset: data set {dataset!r} is not in `datasets` "
                    f"({', '.join(self.datasets)}); add it there so the pipeline prepares it"
                )

    def _check_searches(self) -> None:
        for name, search in self.tune.items():
            if name in self.experiments or name in self.crossval or name in self.ablation:
                raise ValueError(f"tune.{name}: the id is taken; search ids share models/<id> and metrics/<id>/")
            if search.dataset not in self.datasets:
                raise ValueError(
                    f"tune.{name}.dataset: data set {search.dataset!r} is not in `datasets` "
                    f"({', '.join(self.datasets)}); add it there so the pipeline prepares it"
                )

    def _check_studies(self) -> None:
        """Every arm of every study must be a valid recipe on every budget, before any training starts."""
        for section, studies in (("crossval", self.crossval), ("ablation", self.ablation)):
            for name, study in studies.items():
                where = f"{section}.{name}"
                if name in self.experiments or (section == "crossval" and name in self.ablation):
                    raise ValueError(f"{where}: the id is taken; study ids and experiment ids share metrics/<id>/")
                if study.experiment not in self.experiments:
                    raise ValueError(
                        f"{where}.experiment: unknown experiment {study.experiment!r}; "
                        f"allowed: {', '.join(self.experiments)}"
                    )
                for budget in BUDGETS:
                    dataset = study.base_changes(budget).get("dataset")
                    if dataset is not None and dataset not in self.datasets:
                        raise ValueError(
                            f"{where}.budgets.{budget}.dataset: {dataset!r} is not in `datasets` "
                            f"({', '.join(self.datasets)})"
                        )
                    try:
                        study.arms(self.experiments[study.experiment], budget)
                    except ValueError as exc:
                        raise ValueError(f"{where} ({budget} budget): {exc}") from None

    def study(self, study_id: str) -> CrossvalStudy | AblationStudy:
        found: dict[str, CrossvalStudy | AblationStudy] = {**self.crossval, **self.ablation}
        if study_id not in found:
            raise ParamsError(f"unknown study {study_id!r}; allowed: {', '.join(found) or '(none)'}")
        return found[study_id]

    def study_budget(self, study_id: str) -> Budget:
        return self.study(study_id).budget or self.budget

    def study_arms(self, study_id: str) -> dict[str, Experiment]:
        """Each arm's recipe on the study's budget."""
        study = self.study(study_id)
        return study.arms(self.experiments[study.experiment], self.study_budget(study_id))

    def search(self, tune_id: str) -> Tune:
        """Search `tune_id` on its budget."""
        if tune_id not in self.tune:
            raise ParamsError(f"unknown search {tune_id!r}; allowed: {', '.join(self.tune) or '(none)'}")
        return self.tune[tune_id].apply_budget(self.search_budget(tune_id))

    def search_budget(self, tune_id: str) -> Budget:
        return self.tune[tune_id].budget or self.budget

    def transfer(self, transfer_id: str) -> Transfer:
        """Transfer recipe `transfer_id` on its budget."""
        recipes = self.finetune.recipes
        if transfer_id not in recipes:
            raise ParamsError(f"unknown transfer recipe {transfer_id!r}; allowed: {', '.join(recipes) or '(none)'}")
        return recipes[transfer_id].recipe(self.transfer_budget(transfer_id))

    def transfer_budget(self, transfer_id: str) -> Budget:
        return self.finetune.recipes[transfer_id].budget or self.budget

    def experiment(self, exp_id: str) -> Experiment:
        if exp_id not in self.experiments:
            raise ParamsError(f"unknown experiment {exp_id!r}; allowed: {', '.join(self.experiments)}")
        return self.experiments[exp_id]

    def budget_of(self, exp_id: str) -> Budget:
        """The experiment's own budget if it sets one, else the global `budget`."""
        return self.experiment(exp_id).budget or self.budget

    def recipe(self, exp_id: str) -> Experiment:
        """Experiment `exp_id` on its budget."""
        return self.experiment(exp_id).recipe(self.budget_of(exp_id))

    def target(self, target_id: str) -> Target:
        """What `target_id` names: an experiment, study, search, transfer recipe, detect job or data set."""
        return resolve(self, target_id)

    def check_dataset(self, name: str) -> str:
        if name not in self.datasets:
            raise ParamsError(f"unknown data set {name!r}; the pipeline prepares: {', '.join(self.datasets)}")
        return name
