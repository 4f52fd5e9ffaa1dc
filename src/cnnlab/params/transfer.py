"""`finetune`: transfer-learning recipes, a pretrained backbone with a new head."""

from __future__ import annotations

import importlib.machinery
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cnnlab.params.base import Budget, PositiveInt, Strict, check_run_list
from cnnlab.params.recipe import BudgetOverride, Experiment


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
    precision: Literal["float32"] | None = None  # see Transfer.precision


class Transfer(Experiment):
    """A pretrained backbone with a new head, trained one of three ways (`mode`).

    features: the frozen backbone's features are computed once, and the head alone trains on them (D3);
    end_to_end: the backbone sits inside the model, frozen but for its `trainable` layers, so augmentation works
        (D4 frozen; C7 with its last 4 layers open; the birds recipe with all of them);
    finetune: as end_to_end, then `unfreeze` layers train on for `fine_tune_epochs` at `fine_tune_learning_rate` (D5).
    """

    model: str = "transfer"
    precision: Literal["float32"] = "float32"  # a backbone trains as it was published
    mode: Literal["features", "end_to_end", "finetune"] = "end_to_end"
    backbone: Backbone
    head: Head = Head()
    unfreeze: Trainable = LastLayers(last=3)
    fine_tune_epochs: PositiveInt = 10
    fine_tune_learning_rate: float = Field(1e-5, gt=0)
    budgets: dict[Budget, TransferBudget] = {}  # type: ignore[assignment]  # narrows Experiment's

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


class Finetune(Strict):
    """Transfer-learning recipes; `dvc repro` runs a finetune and an evaluate stage for each id in `run`."""

    run: list[str] = []
    recipes: dict[str, Transfer] = {}

    @model_validator(mode="after")
    def _run_names_recipes(self) -> Finetune:
        check_run_list("finetune.run", "recipe", self.run, self.recipes)
        return self
