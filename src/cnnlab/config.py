"""The params.yaml schema: every knob of the pipeline, checked before any work starts.

Validation fails fast with a message that names the key, what was found and the
allowed values, so a typo costs a second, not an hour of training.
"""

from __future__ import annotations

import importlib.machinery
import inspect
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cnnlab.datasets import DATASETS
from cnnlab.errors import UserError
from cnnlab.models import MODELS

# Strict: YAML `true` or "3" is not silently taken for an integer.
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
Budget = Literal["quick", "full", "speed"]
Loss = Literal["sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy"]
BUDGETS: tuple[str, ...] = ("quick", "full", "speed")
FILL_MODES = Literal["nearest", "constant", "reflect", "wrap"]


class ParamsError(UserError, ValueError):
    """params.yaml is missing, unreadable or holds a value the pipeline cannot run."""


class Strict(BaseModel):
    # A mistyped key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class WithBudgets(Strict):
    """A section with `budgets`: per budget, the keys it changes (unset keys keep the section's value)."""

    budgets: dict[Budget, Any] = {}

    def apply_budget(self, budget: str) -> Any:
        """A copy with `budget`'s changes applied (train_samples is not a key of the section: see below)."""
        override = self.budgets.get(budget)  # type: ignore[call-overload]
        if override is None:
            return self
        # Attributes, not model_dump(): a nested section (an optimizer) stays a model.
        values = {k: getattr(override, k) for k in type(override).model_fields if k != "train_samples"}
        return self.model_copy(update={k: v for k, v in values.items() if v is not None})

    def train_samples(self, budget: str) -> int | None:
        """How many training images `budget` keeps (a stratified subset), or None for all."""
        override = self.budgets.get(budget)  # type: ignore[call-overload]
        return override.train_samples if override else None


class Optimizer(Strict):
    name: Literal["adam", "rmsprop", "sgd", "adamw", "nadam"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    # "cosine": up from 0 in a straight line over `warmup_epochs`, then down to 0 along a half cosine by the end
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = Field(0, ge=0)


class EarlyStopping(Strict):
    monitor: str = "val_loss"
    patience: Annotated[int, Field(ge=0, strict=True)] = 2
    restore_best_weights: bool = True


class Callbacks(Strict):
    early_stopping: EarlyStopping | None = None
    # Keep the best epoch's weights (ModelCheckpoint(save_best_only=True)).
    checkpoint_best: bool = False
    checkpoint_monitor: str = "val_loss"


class Augmentation(Strict):
    """The seeds' ImageDataGenerator options, carried out in the training step (augment.py)."""

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
        """Whether any option changes the images (fill_mode alone does not)."""
        return self.model_copy(update={"fill_mode": "nearest"}) != Augmentation()

    @field_validator("brightness_range")
    @classmethod
    def _brightness(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 <= value[0] <= value[1]:
            raise ValueError(f"must be [low, high] with 0 <= low <= high (1 = unchanged), got {list(value)}")
        return value


def validation_fraction(value: float | str | None) -> float | str | None:
    if isinstance(value, float) and not 0 < value < 1:
        raise ValueError(f"validation fraction must be between 0 and 1 (exclusive), got {value}")
    return value


class BudgetOverride(Strict):
    """What a budget changes in an experiment's recipe (unset keeps the recipe's value)."""

    epochs: PositiveInt | None = None
    train_samples: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    steps_per_execution: PositiveInt | Literal["auto"] | None = None
    optimizer: Optimizer | None = None  # replaces the recipe's
    model_options: dict[str, Any] | None = None  # merged over the recipe's
    validation: Annotated[float | Literal["test"] | None, AfterValidator(validation_fraction)] = None


def default_loss(num_classes: int) -> Loss:
    """Sigmoid + binary cross-entropy for two classes, softmax + sparse categorical cross-entropy for more."""
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


class Experiment(WithBudgets):
    description: str = ""
    dataset: str
    model: str
    model_options: dict[str, Any] = {}
    # Fraction of the training split held out for validation (stratified, seeded),
    # or "test" to validate on the test set as several seeds do.
    validation: Annotated[float | Literal["test"], AfterValidator(validation_fraction)] = 0.2
    # False: a plain seeded random split, as `train_test_split(..., random_state=seed)` makes it
    stratify: bool = True
    optimizer: Optimizer = Optimizer()
    # None: chosen from the number of classes (sigmoid + binary CE for two, softmax + sparse CE for more)
    loss: Loss | None = None
    batch_size: PositiveInt = 32
    epochs: PositiveInt = 10
    # Training steps per compiled call (Keras' compile argument; under JAX the steps run as one XLA program).
    # "auto": 16 on a GPU, where launching a small model's step costs more than computing it; 1 on a CPU.
    steps_per_execution: PositiveInt | Literal["auto"] = "auto"
    callbacks: Callbacks = Callbacks()
    augmentation: Augmentation = Augmentation()
    budgets: dict[Budget, BudgetOverride] = {}
    # Run this experiment on its own budget whatever the global `budget` says
    # (`dvc exp run -S '++experiments.M2.budget=full'` re-runs M2 alone on the seed's recipe).
    budget: Budget | None = None

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}; allowed: {', '.join(sorted(MODELS))}")
        return value

    @model_validator(mode="after")
    def _options_fit_the_model(self) -> Experiment:
        accepted = list(inspect.signature(MODELS[self.model]).parameters)[2:]  # after input_shape, num_classes
        where = {"model_options": self.model_options}
        where |= {f"budgets.{b}.model_options": o.model_options or {} for b, o in self.budgets.items()}
        for key, options in where.items():
            unknown = sorted(set(options) - set(accepted))
            if unknown:
                raise ValueError(
                    f"{key}: model {self.model} has no option {', '.join(unknown)}; "
                    f"allowed: {', '.join(accepted) or '(none)'}"
                )
        return self

    @property
    def model_label(self) -> str:
        return self.model

    def loss_for(self, num_classes: int) -> str:
        """The loss to train with: the recipe's, else the one the number of classes calls for."""
        return self.loss if self.loss is not None else default_loss(num_classes)

    def recipe(self, budget: str) -> Experiment:
        """The experiment with its budget's overrides applied (its model options merged over the recipe's)."""
        recipe = self.apply_budget(budget)
        override = self.budgets.get(budget)
        if override is not None and override.model_options:
            recipe = recipe.model_copy(update={"model_options": {**self.model_options, **override.model_options}})
        return recipe


ARM_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # used in file names and MLflow run names


class Folds(Strict):
    """How a study cuts the training split into k folds (scikit-learn's KFold or StratifiedKFold)."""

    k: int = Field(5, ge=2, strict=True)
    shuffle: bool = False  # False: contiguous folds in file order, as the seed's KFold(5)
    stratify: bool = False


class StudyBudget(Strict):
    """What a budget changes in a study (unset keeps the study's value)."""

    dataset: str | None = None
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    train_samples: PositiveInt | None = None
    k: int | None = Field(None, ge=2, strict=True)


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied; nested mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


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
    # Folds of an arm trained at once, in worker processes ("auto": all of them on a GPU, one on a CPU).
    # Scores do not depend on it, so a study interrupted with one setting resumes with another.
    parallel: PositiveInt | Literal["auto"] = "auto"

    def arm_changes(self) -> dict[str, dict[str, Any]]:
        """Arm name -> the recipe changes that make it."""
        raise NotImplementedError

    def base_changes(self, budget: str) -> dict[str, Any]:
        override = self.budgets.get(budget)  # type: ignore[call-overload]
        picked = {k: v for k, v in (override.model_dump() if override else {}).items() if v is not None}
        return merged(self.recipe, {k: v for k, v in picked.items() if k in ("dataset", "epochs", "batch_size")})

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
                problems = "; ".join(_describe(e) for e in exc.errors())
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


class Range(Strict):
    """A numeric interval to search: integers for integer dimensions, floats otherwise."""

    min: float
    max: float
    step: float | None = None
    sampling: Literal["linear", "log", "reverse_log"] = "linear"

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min >= self.max:
            raise ValueError(f"min must be below max, got min {self.min}, max {self.max}")
        if self.sampling != "linear" and self.min <= 0:
            raise ValueError(f"{self.sampling} sampling needs min > 0, got {self.min}")
        return self


def _range_if_mapping(value: Any) -> Any:
    """A mapping is a Range: report its own problem, not every member of the union it failed."""
    if not isinstance(value, dict):
        return value
    try:
        return Range.model_validate(value)
    except ValidationError as exc:
        raise ValueError("; ".join(_describe(e) for e in exc.errors())) from None


# A dimension of the search space: a list of choices, a range, or one fixed value.
Dimension = Annotated[
    list[bool | int | float | str] | Range | bool | int | float | str, BeforeValidator(_range_if_mapping)
]
OPTIMIZERS = get_args(Optimizer.model_fields["name"].annotation)
# dimension -> (value type, check, what the check asks for)
DIMENSIONS: dict[str, tuple[type, Any, str]] = {
    "conv_blocks": (int, lambda v: 1 <= v <= 6, "an integer from 1 to 6"),
    "filters": (int, lambda v: v >= 1, "a positive integer (filters of each block)"),
    "convs_per_block": (int, lambda v: 1 <= v <= 4, "an integer from 1 to 4"),
    "kernel_size": (int, lambda v: v >= 1 and v % 2 == 1, "an odd positive integer"),
    "dense_units": (int, lambda v: v >= 1, "a positive integer"),
    "dropout": (float, lambda v: 0 <= v < 1, "a rate in [0, 1)"),
    "l2": (float, lambda v: v >= 0, "a factor >= 0"),
    "batchnorm": (bool, lambda v: True, "true or false"),
    "augmentation": (float, lambda v: 0 <= v <= 0.5, "a strength in [0, 0.5]"),
    "learning_rate": (float, lambda v: 0 < v < 1, "a rate in (0, 1)"),
    "optimizer": (str, lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
}


def dimension_values(dimension: Dimension) -> list[Any]:
    """The values a dimension can take that validation must check: the choices, the ends of a range, or the value."""
    if isinstance(dimension, Range):
        return [dimension.min, dimension.max]
    return list(dimension) if isinstance(dimension, list) else [dimension]


class SearchSpace(Strict):
    """What Keras Tuner searches over: the `CNN` model's options, augmentation strength and the optimizer.

    Each dimension is a list (Choice), a `{min, max, step, sampling}` range (Int or Float) or a single value
    (Fixed). `filters` is drawn once per conv block (filters_1, filters_2, ...). Augmentation strength s
    shifts and zooms by up to s and rotates by up to 100*s degrees (0 turns augmentation off).
    """

    conv_blocks: Dimension = [2, 3]
    filters: Dimension = [32, 64, 128]
    convs_per_block: Dimension = 1
    kernel_size: Dimension = [3, 5]
    dense_units: Dimension = [64, 128, 256]
    dropout: Dimension = Range(min=0.0, max=0.5, step=0.1)
    l2: Dimension = [0.0, 0.0001, 0.001]
    batchnorm: Dimension = [False, True]
    augmentation: Dimension = [0.0, 0.1]
    learning_rate: Dimension = Range(min=0.0001, max=0.01, sampling="log")
    optimizer: Dimension = "adam"

    @model_validator(mode="after")
    def _values_fit(self) -> SearchSpace:
        for name, (kind, check, wanted) in DIMENSIONS.items():
            dimension = getattr(self, name)
            if isinstance(dimension, list) and not dimension:
                raise ValueError(f"{name}: an empty list of choices; give at least one value")
            if isinstance(dimension, Range) and kind not in (int, float):
                raise ValueError(f"{name}: a range needs a numeric dimension; list the choices instead")
            for value in dimension_values(dimension):
                numeric_ok = kind is float and isinstance(value, int | float) and not isinstance(value, bool)
                integral_ok = kind is int and isinstance(value, int | float) and float(value).is_integer()
                typed = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
                if not (typed or numeric_ok or (integral_ok and not isinstance(value, bool))) or not check(value):
                    raise ValueError(f"{name}: {value!r} is not {wanted}")
        return self


class TuneBudget(Strict):
    """What a budget changes in a search (unset keeps the search's value)."""

    max_epochs: PositiveInt | None = None
    max_trials: PositiveInt | None = None
    executions_per_trial: PositiveInt | None = None
    factor: int | None = Field(None, ge=2, strict=True)
    hyperband_iterations: PositiveInt | None = None
    max_minutes: float | None = Field(None, gt=0)
    batch_size: PositiveInt | None = None
    train_samples: PositiveInt | None = None


class Tune(WithBudgets):
    """A Keras Tuner search for the best `CNN` on one data set (tune stage), then retrained and evaluated.

    Trials train on the training split less a held-out `validation` fraction and are scored on it; the test
    set is never seen until the evaluate stage scores the retrained best model.
    """

    description: str = ""
    dataset: str
    tuner: Literal["hyperband", "random", "bayesian"] = "hyperband"
    objective: Literal["val_accuracy", "val_loss", "accuracy", "loss"] = "val_accuracy"
    max_epochs: PositiveInt = 20  # Hyperband's largest budget; the epochs of every trial for random / bayesian
    factor: int = Field(3, ge=2, strict=True)  # Hyperband's reduction factor
    hyperband_iterations: PositiveInt = 1
    max_trials: PositiveInt = 30  # random / bayesian (Hyperband's count follows from max_epochs and factor)
    executions_per_trial: PositiveInt = 1
    max_minutes: float | None = Field(None, gt=0)  # stop starting trials after this long (the running one ends)
    batch_size: PositiveInt = 128
    validation: float = Field(0.1, gt=0, lt=1)
    horizontal_flip: bool = False  # with augmentation on; off for digits, where a flip changes the class
    max_params: PositiveInt | None = 1_000_000  # larger models are refused as failed trials before training
    max_retries_per_trial: Annotated[int, Field(ge=0, strict=True)] = 0
    max_consecutive_failed_trials: PositiveInt = 3
    top_n: PositiveInt = 10  # trials in the MLflow table of the best
    space: SearchSpace = SearchSpace()
    budgets: dict[Budget, TuneBudget] = {}
    budget: Budget | None = None  # this search's own budget whatever the global `budget` says


class FromLayer(Strict):
    """The backbone layer of this name and every layer after it."""

    from_layer: str


class LastLayers(Strict):
    """The backbone's last `last` layers (pooling and activation layers count, as in `conv_base.layers[-N:]`)."""

    last: PositiveInt


# Which backbone layers train: "none", "all", {from_layer: name} or {last: N}.
Trainable = Literal["none", "all"] | FromLayer | LastLayers


def keras_applications() -> list[str]:
    """The network constructors of `keras.applications`, sorted.

    Read from Keras' generated API file where it exists: importing Keras takes seconds, and the data stages
    validate params without needing Keras (a test checks the two agree).
    """
    spec = importlib.machinery.PathFinder.find_spec("keras")  # not sys.modules': its lazy Keras would load
    api = Path(spec.origin).parent / "applications" / "__init__.py" if spec and spec.origin else None
    if api is not None and api.is_file():
        return sorted(set(re.findall(r"\b([A-Z]\w*) as \1\b", api.read_text())))
    import keras

    return sorted(n for n in dir(keras.applications) if n[0].isupper() and callable(getattr(keras.applications, n)))


class Backbone(Strict):
    """A `keras.applications` network without its classifier, and the weights it starts from."""

    name: str  # the constructor: MobileNet, MobileNetV2, VGG16, ResNet50, EfficientNetB0, ...
    options: dict[str, Any] = {}  # more constructor arguments (MobileNet's alpha)
    # Images are resized to input_size x input_size inside the model; None keeps the prepared size.
    input_size: PositiveInt | None = None
    # "imagenet" (the weights mirror, Keras's cache, then Keras's own download), a weights file, or null (random)
    weights: str | None = "imagenet"
    trainable: Trainable = "none"  # during the first (or only) training phase

    @field_validator("name")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        known = keras_applications()
        if value not in known:
            raise ValueError(f"unknown backbone {value!r}; allowed (keras.applications): {', '.join(known)}")
        return value


class Head(Strict):
    """The classifier on the backbone's features: pooling, dense layers, dropout, then the output layer."""

    pooling: Literal["flatten", "avg", "max"] = "flatten"
    dense: list[PositiveInt] = [256]
    batchnorm: bool = False  # Dense → BatchNormalization → ReLU (C7), instead of Dense(relu)
    dropout: float = Field(0.5, ge=0, lt=1)


class TransferBudget(BudgetOverride):
    fine_tune_epochs: PositiveInt | None = None


class Transfer(Experiment):
    """A pretrained backbone with a new head, trained one of three ways (`mode`).

    features: the frozen backbone's features are computed once, and the head alone trains on them (D3);
    end_to_end: the backbone sits inside the model, frozen but for its `trainable` layers, so augmentation works
        (D4 frozen; C7 with its last 4 layers open; the birds recipe with all of them);
    finetune: as end_to_end, then `unfreeze` layers train on for `fine_tune_epochs` at `fine_tune_learning_rate` (D5).
    """

    model: str = "transfer"
    mode: Literal["features", "end_to_end", "finetune"] = "end_to_end"
    backbone: Backbone
    head: Head = Head()
    unfreeze: Trainable = LastLayers(last=3)
    fine_tune_epochs: PositiveInt = 10
    fine_tune_learning_rate: float = Field(1e-5, gt=0)
    budgets: dict[Budget, TransferBudget] = {}

    @property
    def model_label(self) -> str:
        return f"{self.backbone.name} ({self.mode})"

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value != "transfer":
            raise ValueError("a transfer recipe's model is its backbone and head; leave `model` out")
        return value

    @model_validator(mode="after")
    def _options_fit_the_model(self) -> Transfer:
        if self.model_options:
            raise ValueError("model_options: a transfer recipe sets `backbone` and `head` instead")
        if self.mode == "features" and self.augmentation.enabled:
            raise ValueError(
                "augmentation: mode features trains on features computed once, so images cannot be augmented; "
                "use mode end_to_end (the backbone inside the model) or remove the augmentation"
            )
        if self.mode == "features" and self.backbone.trainable != "none":
            raise ValueError("backbone.trainable: mode features keeps the backbone frozen; use mode end_to_end")
        return self


def check_run_list(where: str, kind: str, run: list[str], defined: dict[str, Any]) -> None:
    """A `run` list (the ids `dvc repro` runs) may only name ids its section defines."""
    unknown = [name for name in run if name not in defined]
    if unknown:
        raise ValueError(f"{where}: no {kind} {', '.join(unknown)}; allowed: {', '.join(defined)}")


class Finetune(Strict):
    """Transfer-learning recipes; `dvc repro` runs a finetune and an evaluate stage for each id in `run`."""

    run: list[str] = []
    recipes: dict[str, Transfer] = {}

    @model_validator(mode="after")
    def _run_names_recipes(self) -> Finetune:
        check_run_list("finetune.run", "recipe", self.run, self.recipes)
        return self


class DetectSettings(Strict):
    """How a YOLO model is run (seed 004, program 6-12's values by default)."""

    input_size: PositiveInt = 448  # the blob's width and height
    score_threshold: float = Field(0.5, ge=0, le=1)  # a box's best class score must exceed it
    nms_threshold: float = Field(0.4, ge=0, le=1)  # NMSBoxes drops a box overlapping a better one by more (IoU)
    scale: float = Field(1 / 256, gt=0)  # pixel values are multiplied by it

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"{value}: YOLO's strides need a multiple of 32 (416, 448, 608)")
        return value


class DetectJob(DetectSettings):
    """One object-detection run (`dvc repro detect@<id>`): a Darknet model's files and the images to look at."""

    description: str = ""
    cfg: Path
    weights: Path
    names: Path
    images: list[Path]  # image files or folders of them

    def settings(self) -> DetectSettings:
        return DetectSettings(**self.model_dump(include=set(DetectSettings.model_fields)))


class Detect(Strict):
    """Object detection with YOLO through OpenCV; `dvc repro` runs a detect stage for each id in `run`."""

    run: list[str] = []
    jobs: dict[str, DetectJob] = {}

    @model_validator(mode="after")
    def _run_names_jobs(self) -> Detect:
        check_run_list("detect.run", "job", self.run, self.jobs)
        return self


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
    # local mirror of pretrained weights (the files Keras would download); CNNLAB_WEIGHTS_MIRROR overrides it
    weights_mirror: Path | None = None
    debian_dir: Path | None = Path("/usr/share/datasets/fashion-mnist")
    online: bool = True
    # dataset -> a base URL that serves the canonical files (a proxy or an internal copy)
    online_base: dict[str, str] = {}
    custom: dict[str, CustomDataset] = {}


class Tracking(Strict):
    experiment_name: str = "cnnlab"
    log_model: bool = True
    register_model: bool = True  # the evaluate stage registers the evaluated model as cnnlab-<id> (needs log_model)
    promote_margin: float = Field(0.0, ge=0, lt=1)  # test accuracy by which a model must beat the champion


class Views(Strict):
    """What the explain stage shows of one trained model (layer names differ between models: see `cnnlab layers`)."""

    layers: list[str] = []  # feature maps and filter patterns of these layers; [] = the first and the last convolution
    feature_map_images: list[Annotated[int, Field(ge=0, strict=True)]] = [0]  # test images (indices) for feature maps
    max_maps: PositiveInt = 32  # feature maps drawn per layer
    filters: PositiveInt = 8  # filter patterns: the first N filters of each layer
    ascent_steps: PositiveInt = 30
    ascent_step_size: float = Field(10.0, gt=0)  # pixel levels per step, along the RMS-normalised gradient
    grad_cam_layer: str | None = None  # None: the last convolution's output (inside a backbone too)
    grad_cam_images: PositiveInt = 6  # this many correctly and this many wrongly classified test images
    augmentation_images: PositiveInt = 12  # the preview: the first N training images
    augmentation_draws: PositiveInt = 2  # and this many random augmented draws of each


class Explain(Views):
    """`explain`: the defaults for every model, and `models: {<id>: {<key>: value}}` for one model's own."""

    models: dict[str, dict[str, Any]] = {}

    def for_model(self, model_id: str) -> Views:
        own = self.models.get(model_id, {})
        try:
            return Views(**{**self.model_dump(exclude={"models"}), **own})
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(
                f"explain.models.{model_id}.{where}: {first['msg']} (the keys: {', '.join(Views.model_fields)})"
            ) from None


def _accuracy(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError("a floor is an accuracy from 0 to 1 (0.8 = 80%)")
    return value


# Strict: YAML `true` or "0.8" is not silently taken for a number.
Floor = Annotated[float, Field(strict=True), AfterValidator(_accuracy)]
FloorSection = Literal["experiments", "crossval", "ablation", "tune", "finetune"]


class QuickFloors(Strict):
    """The least accuracy a result on the quick budget must reach to show that its model learns.

    Each key is the params section whose ids its entries name: an id, or a pattern of ids (`F*`, fnmatch's
    syntax), mapped to a floor. An id matches one entry at most, and every entry matches some id.
    """

    experiments: dict[str, Floor] = {}  # test accuracy
    crossval: dict[str, Floor] = {}  # every arm's mean accuracy over its folds
    ablation: dict[str, Floor] = {}  # every cell's mean accuracy over its folds
    tune: dict[str, Floor] = {}  # the best trial's validation accuracy, and the retrained model's test accuracy
    finetune: dict[str, Floor] = {}  # test accuracy (finetune.recipes ids)

    def entries_for(self, section: FloorSection, target: str) -> list[str]:
        """The entries (ids or patterns) of `section` that name `target`."""
        return [key for key in getattr(self, section) if fnmatchcase(target, key)]

    def floor(self, section: FloorSection, target: str) -> float | None:
        """`target`'s floor, or None where no entry names it (validation leaves at most one that does)."""
        entries = self.entries_for(section, target)
        return getattr(self, section)[entries[0]] if entries else None


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
        found = {**self.crossval, **self.ablation}
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

    def dataset_of(self, target: str) -> str:
        """The data set an experiment, a search's model or a transfer recipe is trained and tested on."""
        if target in self.tune:
            return self.tune[target].dataset
        if target in self.finetune.recipes:
            return self.finetune.recipes[target].dataset
        return self.recipe(target).dataset

    def augmentation_of(self, target: str) -> Augmentation | None:
        """The augmentation a model trained with; a search's is one of its hyperparameters (None here)."""
        if target in self.tune:
            return None
        return (
            self.transfer(target).augmentation if target in self.finetune.recipes else self.recipe(target).augmentation
        )

    def loss_of(self, target: str, num_classes: int) -> str:
        if target in self.tune:  # the searched CNN's head follows the number of classes
            return default_loss(num_classes)
        if target in self.finetune.recipes:
            return self.finetune.recipes[target].loss_for(num_classes)
        return self.recipe(target).loss_for(num_classes)

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

    def train_samples(self, target: str) -> int | None:
        """How many training images `target` trains on, on its budget (None: all of them), for an experiment,
        a study, a search or a transfer recipe."""
        if target in self.crossval or target in self.ablation:
            return self.study(target).train_samples(self.study_budget(target))
        if target in self.tune:
            return self.tune[target].train_samples(self.search_budget(target))
        if target in self.finetune.recipes:
            return self.finetune.recipes[target].train_samples(self.transfer_budget(target))
        return self.experiment(target).train_samples(self.budget_of(target))

    def check_dataset(self, name: str) -> str:
        if name not in self.datasets:
            raise ParamsError(f"unknown data set {name!r}; the pipeline prepares: {', '.join(self.datasets)}")
        return name


def _model_at(location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema section that holds the key at `location` (walking through dict[str, Section] entries)."""
    model: Any = Params
    for part in location:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if annotation is None:
            return None
        if get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        candidates = [annotation, *get_args(annotation)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if not where:  # cross-key checks name their keys themselves
        return error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        section = _model_at(_schema_path(error["loc"][:-1]))
        allowed = f"; allowed keys: {', '.join(section.model_fields)}" if section else ""
        return f"{where}: unknown key (a typo?){allowed}"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}{shown}"


def _schema_path(location: tuple[Any, ...]) -> tuple[Any, ...]:
    """A validation error's location without the names of dict entries (experiment ids, data set names)."""
    path: list[Any] = []
    model: Any = Params
    for part in location:
        if model is None:
            break
        if part in getattr(model, "model_fields", {}):
            path.append(part)
            model = _model_at(tuple(path))
        # else: a dict key such as an experiment id; the section below it is the dict's value type
    return tuple(path)


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in exc.errors())
        raise ParamsError(f"{source} is not valid:\n  {lines}") from None


# libyaml's parser where PyYAML was built with it: a tenth of the pure-Python parser's time on params.yaml
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> Any:
    """A YAML file's data (safe types only); yaml.YAMLError when it is not valid YAML."""
    return yaml.load(path.read_text(), Loader=_SafeLoader)


def load_params(path: Path | str = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the project root or pass the path to params.yaml")
    try:
        raw = read_yaml(path)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of keys, got {type(raw).__name__}")
    return parse_params(raw, str(path))
