"""`tune`: Keras Tuner searches, their search space and budgets."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from cnnlab.params.base import Budget, PositiveInt, Strict, WithBudgets
from cnnlab.params.messages import describe
from cnnlab.params.recipe import Optimizer


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
        raise ValueError("; ".join(describe(e, Range) for e in exc.errors())) from None


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
