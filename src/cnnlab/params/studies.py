"""`crossval` and `ablation`: studies that compare variants of one experiment over the same k folds."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from cnnlab.params.base import Budget, PositiveInt, Precision, Strict, WithBudgets, merged
from cnnlab.params.messages import describe
from cnnlab.params.recipe import Callbacks, Experiment

ARM_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # used in file names and MLflow run names


class Folds(Strict):
    """How a study cuts the training split into k folds (scikit-learn's KFold or StratifiedKFold)."""

    k: int = Field(5, ge=2, strict=True)
    shuffle: bool = False  # False: contiguous folds in file order, as the seed's KFold(5)
    stratify: bool = False


class RayTasks(Strict):
    """What each training of a study asks a Ray cluster for (`executor: ray`). The cluster's address is not a
    param: Ray reads it from `RAY_ADDRESS`, so moving to another cluster changes no DVC dependency."""

    num_cpus: float = Field(1, gt=0)
    # "auto": one GPU per training when the cluster has GPUs, none when it has not; 0.25 packs four on one GPU
    num_gpus: Annotated[float, Field(ge=0)] | Literal["auto"] = "auto"
    # A training cut off by a lost node (or a killed worker) is run again elsewhere, up to this many times
    max_retries: int = Field(3, ge=0, strict=True)


class StudyBudget(Strict):
    """What a budget changes in a study (unset keeps the study's value)."""

    dataset: str | None = None
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    precision: Precision | None = None
    train_samples: PositiveInt | None = None
    k: int | None = Field(None, ge=2, strict=True)


class Study(WithBudgets):
    """Every arm of a study is one experiment's recipe with the study's changes, trained and scored on the same folds.

    An arm never uses the experiment's callbacks: early stopping or best-epoch checkpoints watch the
    held-out fold, which would let it choose the model it then scores.
    """

    description: str = ""
    experiment: str  # the recipe the arms change (its model, optimizer, augmentation, ...)
    recipe: dict[str, Any] = {}  # changes for every arm (the seeds' C3/C4 train 10 epochs, not C1's 30)
    folds: Folds = Folds()
    budgets: dict[Budget, StudyBudget] = {}
    budget: Budget | None = None  # this study's own budget whatever the global `budget` says
    # Trainings at once with the local executor, in worker processes ("auto": k on a GPU, two on a CPU).
    # Scores do not depend on it, so a study interrupted with one setting resumes with another.
    parallel: PositiveInt | Literal["auto"] = "auto"
    # Where the trainings run: "local" (this process, or `parallel` worker processes) or "ray" (tasks on the Ray
    # cluster at $RAY_ADDRESS, or on a Ray started on this machine when it is unset). Neither changes a score.
    executor: Literal["local", "ray"] = "local"
    ray: RayTasks = RayTasks()

    def arm_changes(self) -> dict[str, dict[str, Any]]:
        """Arm name -> the recipe changes that make it."""
        raise NotImplementedError

    def base_changes(self, budget: str) -> dict[str, Any]:
        override = self.budgets.get(budget)  # type: ignore[call-overload]
        picked = {k: v for k, v in (override.model_dump() if override else {}).items() if v is not None}
        recipe_keys = ("dataset", "epochs", "batch_size", "precision")
        return merged(self.recipe, {k: v for k, v in picked.items() if k in recipe_keys})

    def folds_for(self, budget: str) -> Folds:
        override = self.budgets.get(budget)  # type: ignore[call-overload]
        return self.folds.model_copy(update={"k": override.k}) if override and override.k else self.folds

    def arms(self, experiment: Experiment, budget: str) -> dict[str, Experiment]:
        """Each arm's full recipe on `budget`; a ValueError names the arm whose changes do not make a valid recipe."""
        base = experiment.model_dump(mode="json", exclude={"budgets", "budget", "callbacks"})
        base = merged(base, self.base_changes(budget))
        recipes = {}
        for name, changes in self.arm_changes().items():
            try:
                recipes[name] = Experiment.model_validate(merged(base, changes))
            except ValidationError as exc:
                problems = "; ".join(describe(e, Experiment) for e in exc.errors())
                raise ValueError(f"arm {name!r} is not a valid recipe: {problems}") from None
            if recipes[name].callbacks != Callbacks():
                raise ValueError(f"arm {name!r} sets callbacks: they would watch, and so choose on, the held-out fold")
            if recipes[name].dataset != base["dataset"]:
                raise ValueError(f"arm {name!r} changes the data set: every arm must be scored on the same folds")
        return recipes


def _check_arm_names(names: list[str]) -> None:
    for name in names:
        if not ARM_NAME.match(name):
            raise ValueError(f"{name!r}: use letters, digits, '_', '-' or '.' only (it names files and MLflow runs)")


class CrossvalStudy(Study):
    """Named variants of one experiment compared over the same k folds (C3: dropout off against on)."""

    variants: dict[str, dict[str, Any]]  # variant name -> recipe changes

    @field_validator("variants")
    @classmethod
    def _two_or_more(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if len(value) < 2:
            raise ValueError(f"a comparison needs at least two variants, got {len(value)}")
        _check_arm_names(list(value))
        return value

    def arm_changes(self) -> dict[str, dict[str, Any]]:
        return dict(self.variants)


class AblationStudy(Study):
    """A full 2^n factorial design over on/off factors, every cell scored over the same k folds (C4).

    Cells are named by one digit per factor of `design`, in its order: [101] has the first and third on.
    """

    factors: dict[str, dict[str, Any]]  # factor -> the recipe changes that switch it on
    design: list[str]  # the factors in the design, in the order of the cell notation

    @model_validator(mode="after")
    def _design_uses_known_factors(self) -> AblationStudy:
        _check_arm_names(list(self.factors))
        unknown = [f for f in self.design if f not in self.factors]
        if unknown or not self.design or len(set(self.design)) != len(self.design):
            raise ValueError(
                f"design must list distinct factors from `factors` ({', '.join(self.factors)}), got {self.design}"
            )
        return self

    def cells(self) -> dict[str, list[str]]:
        """Cell name ('101') -> the factors switched on in it, all 2^n cells in binary order."""
        n = len(self.design)
        names = [format(i, f"0{n}b") for i in range(2**n)]
        return {name: [f for f, bit in zip(self.design, name, strict=True) if bit == "1"] for name in names}

    def arm_changes(self) -> dict[str, dict[str, Any]]:
        changes: dict[str, dict[str, Any]] = {}
        for cell, on in self.cells().items():
            recipe: dict[str, Any] = {}
            for factor in on:
                recipe = merged(recipe, self.factors[factor])
            changes[cell] = recipe
        return changes
