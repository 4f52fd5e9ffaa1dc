"""A logged model's card: its class names, input image shape and data set, kept in the model's own MLflow metadata
(the MLmodel file), so `models:/cnnlab-F1@champion` is usable without the project's `models/<id>.meta.json`."""

from __future__ import annotations

from typing import Any, NamedTuple

import mlflow
from mlflow.exceptions import MlflowException

from cnnlab.tracking.uris import redact
from cnnlab.util.errors import UserError

# The card's keys in the model's metadata (`class_names` is also what the model's pyfunc answers with)
CARD_KEYS = ("class_names", "image_shape", "dataset")


class ModelCardError(UserError, ValueError):
    """A model URI that cannot be read, or a model logged without a card."""


class ModelCard(NamedTuple):
    class_names: list[str]
    image_shape: tuple[int, ...]  # one image's (height, width, channels), as the model takes it
    dataset: str

    def metadata(self) -> dict[str, Any]:
        """The `metadata` to log the model with (`log_keras_model(..., metadata=card.metadata())`)."""
        return {"class_names": list(self.class_names), "image_shape": list(self.image_shape), "dataset": self.dataset}


def model_card(model_uri: str) -> ModelCard:
    """The card of a logged model (`models:/cnnlab-F1@champion`, `models:/cnnlab-F1/3`, `runs:/<id>/model`), read
    from its metadata alone: the weights are not downloaded."""
    try:
        info = mlflow.models.get_model_info(model_uri)
    except (MlflowException, OSError) as exc:
        raise ModelCardError(
            f"{model_uri}: not found in the tracking store {redact(mlflow.get_tracking_uri())} ({exc}); evaluate a "
            "model first (`dvc repro evaluate@F1` registers cnnlab-F1), or set MLFLOW_TRACKING_URI to its store"
        ) from None
    card = info.metadata or {}
    if not all(key in card for key in CARD_KEYS):
        raise ModelCardError(
            f"{model_uri} has no class names in its metadata: log it again with `dvc repro` (the evaluate stage "
            "registers models with them), or predict with the model's .keras file"
        )
    return ModelCard(list(card["class_names"]), tuple(card["image_shape"]), str(card["dataset"]))
