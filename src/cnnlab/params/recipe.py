"""`experiments`: one model's training recipe (optimizer, callbacks, augmentation, budgets)."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from cnnlab.catalog.networks import MODELS
from cnnlab.params.base import FILL_MODES, Budget, Loss, PositiveInt, Precision, Strict, WithBudgets

# How one training uses the machine's devices (training/distribution.py)
Distribution = Literal["auto", "none", "data_parallel"]


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
    precision: Precision | None = None
    distribution: Distribution | None = None
    distribution_scale_lr: bool | None = None
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
    # "float32" as the seeds train; "mixed_bfloat16" computes in bfloat16 with float32 weights; "auto": mixed
    # bfloat16 on a GPU or CPU with bfloat16 arithmetic, else float32. The saved model computes in float32.
    precision: Precision = "float32"
    # "data_parallel": one model on all of the machine's GPUs or TPUs (on all its CPU devices where it has none),
    # each step's batch_size images split evenly among them; "auto": data_parallel where more than one GPU or TPU
    # is visible (on as many of them as divide batch_size), else "none", one device as before.
    distribution: Distribution = "auto"
    # True: the learning rate times the number of replicas (unchanged otherwise, and on one device).
    distribution_scale_lr: bool = False
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

    def recipe(self, budget: Budget) -> Self:
        """The experiment with its budget's overrides applied (its model options merged over the recipe's)."""
        recipe = self.apply_budget(budget)
        override = self.budgets.get(budget)
        if override is not None and override.model_options:
            recipe = recipe.model_copy(update={"model_options": {**self.model_options, **override.model_options}})
        return recipe
