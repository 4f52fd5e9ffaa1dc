"""The params.yaml schema: every knob of the pipeline, checked before any work starts.

Validation fails fast with a message that names the key, what was found and the
allowed values, so a typo costs a second, not an hour of training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from cnnlab.datasets import DATASETS
from cnnlab.models import MODELS

Budget = Literal["quick", "full"]
BUDGETS: tuple[str, ...] = ("quick", "full")
FILL_MODES = Literal["nearest", "constant", "reflect", "wrap"]


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or holds a value the pipeline cannot run."""


class Strict(BaseModel):
    # A mistyped key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Optimizer(Strict):
    name: Literal["adam", "rmsprop", "sgd", "adamw", "nadam"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)


class EarlyStopping(Strict):
    monitor: str = "val_loss"
    patience: int = Field(2, ge=0)
    restore_best_weights: bool = True


class Callbacks(Strict):
    early_stopping: EarlyStopping | None = None
    # Keep the best epoch's weights (ModelCheckpoint(save_best_only=True)).
    checkpoint_best: bool = False
    checkpoint_monitor: str = "val_loss"


class Augmentation(Strict):
    """The seeds' ImageDataGenerator options, carried out by Keras preprocessing layers."""

    rotation_range: float = Field(0.0, ge=0, le=180)
    width_shift_range: float = Field(0.0, ge=0, lt=1)
    height_shift_range: float = Field(0.0, ge=0, lt=1)
    shear_range: float = Field(0.0, ge=0, lt=90)
    zoom_range: float = Field(0.0, ge=0, lt=1)
    horizontal_flip: bool = False
    vertical_flip: bool = False
    brightness_range: tuple[float, float] | None = None
    fill_mode: FILL_MODES = "nearest"

    @property
    def enabled(self) -> bool:
        return self != Augmentation()


class BudgetOverride(Strict):
    """What a budget changes in an experiment's recipe (unset keeps the recipe's value)."""

    epochs: PositiveInt | None = None
    train_samples: PositiveInt | None = None
    batch_size: PositiveInt | None = None


class Experiment(Strict):
    description: str = ""
    dataset: str
    model: str
    model_options: dict[str, Any] = {}
    # Fraction of the training split held out for validation (stratified, seeded),
    # or "test" to validate on the test set as several seeds do.
    validation: float | Literal["test"] = 0.2
    optimizer: Optimizer = Optimizer()
    loss: Literal["sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy"] = (
        "sparse_categorical_crossentropy"
    )
    batch_size: PositiveInt = 32
    epochs: PositiveInt = 10
    callbacks: Callbacks = Callbacks()
    augmentation: Augmentation = Augmentation()
    budgets: dict[Budget, BudgetOverride] = {}

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}; allowed: {', '.join(sorted(MODELS))}")
        return value

    @field_validator("validation")
    @classmethod
    def _fraction(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not 0 < value < 1:
            raise ValueError(f"validation fraction must be between 0 and 1 (exclusive), got {value}")
        return value

    def recipe(self, budget: str) -> Experiment:
        """The experiment with its budget's overrides applied."""
        override = self.budgets.get(budget)  # type: ignore[call-overload]
        if override is None:
            return self
        changes = {k: v for k, v in override.model_dump().items() if v is not None and k != "train_samples"}
        return self.model_copy(update=changes)

    def train_samples(self, budget: str) -> int | None:
        override = self.budgets.get(budget)  # type: ignore[call-overload]
        return override.train_samples if override else None


class CustomDataset(Strict):
    """A user's own images: a folder or zip of `<split>/<class>/*.jpg|png`."""

    path: Path
    image_size: tuple[PositiveInt, PositiveInt]
    channels: Literal[1, 3] = 3


class Data(Strict):
    # dataset name -> a local folder that already holds its files (tried first)
    paths: dict[str, Path] = {}
    # local mirror of the public files; the env var CNNLAB_DATA_MIRROR overrides it
    mirror: Path | None = None
    debian_dir: Path | None = Path("/usr/share/datasets/fashion-mnist")
    online: bool = True
    # dataset -> a base URL that serves the canonical files (a proxy or an internal copy)
    online_base: dict[str, str] = {}
    custom: dict[str, CustomDataset] = {}


class Tracking(Strict):
    experiment_name: str = "cnnlab"
    log_model: bool = True


class Params(Strict):
    experiment: str
    budget: Budget = "quick"
    seed: int = 42
    data: Data = Data()
    mlflow: Tracking = Tracking()
    experiments: dict[str, Experiment]

    @model_validator(mode="after")
    def _references_resolve(self) -> Params:
        if self.experiment not in self.experiments:
            raise ValueError(
                f"experiment: unknown experiment {self.experiment!r}; allowed: {', '.join(self.experiments)}"
            )
        known = set(DATASETS) | set(self.data.custom)
        for name, exp in self.experiments.items():
            if exp.dataset not in known:
                raise ValueError(
                    f"experiments.{name}.dataset: unknown data set {exp.dataset!r}; "
                    f"allowed: {', '.join(sorted(known))} (or declare it under data.custom)"
                )
        for name in self.data.paths:
            if name not in DATASETS:
                raise ValueError(f"data.paths.{name}: unknown data set; allowed: {', '.join(sorted(DATASETS))}")
        return self

    @property
    def current(self) -> Experiment:
        """The experiment named by `experiment`, on the chosen budget."""
        return self.experiments[self.experiment].recipe(self.budget)

    def datasets_needed(self) -> list[str]:
        """Only the data sets the configured experiment needs are fetched."""
        return [self.experiments[self.experiment].dataset]


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key (a typo?); remove it or use one of the documented keys"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}{shown}"


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in exc.errors())
        raise ParamsError(f"{source} is not valid:\n  {lines}") from None


def load_params(path: Path | str = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the project root or pass the path to params.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of keys, got {type(raw).__name__}")
    return parse_params(raw, str(path))
