"""MLflow Model Registry: every evaluated model is a version of `cnnlab-<id>`; the alias `champion` moves to it only
when it beats the current champion on the same test set by `margin` (issue 8)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

if TYPE_CHECKING:
    import keras
    import numpy as np

    from cnnlab.tracking.cards import ModelCard

CHAMPION = "champion"


def model_name(model_id: str) -> str:
    return f"cnnlab-{model_id}"


@dataclass(frozen=True)
class Decision:
    promoted: bool
    challenger: float  # the new model's test accuracy
    champion: float | None  # the current champion's, on the same test set; None when there is none
    margin: float

    @property
    def reason(self) -> str:
        if self.champion is None:
            return "no champion yet"
        verb = "beats" if self.promoted else "does not beat"
        return f"{self.challenger:.4f} {verb} the champion's {self.champion:.4f} by the margin {self.margin:g}"


def decide(challenger: float, champion: float | None, margin: float) -> Decision:
    """Promote when there is no champion, or when the challenger is better by more than `margin`."""
    promoted = champion is None or challenger > champion + margin
    return Decision(promoted, challenger, champion, margin)


def champion_version(client: mlflow.MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no such model, or no version has the alias yet
        return None


def score_tag(test_hash: str) -> str:
    """The version tag that keeps a model's test accuracy on the test set with this sha256."""
    return f"test_accuracy.{test_hash[:16]}"


def champion_score(client: mlflow.MlflowClient, name: str, champion: ModelVersion, test_hash: str,
                   rescore: Callable[[], float]) -> float:  # fmt: skip
    """The champion's test accuracy on this test set: read from its version when it was scored on the same data
    before, else `rescore()`d once and kept there (loading and predicting costs every evaluate seconds)."""
    key = score_tag(test_hash)
    if key in champion.tags:
        return float(champion.tags[key])
    score = rescore()
    client.set_model_version_tag(name, champion.version, key, f"{score:.6f}")
    return score


def record(client: mlflow.MlflowClient, name: str, version: str, decision: Decision, test_hash: str) -> None:
    """Tag the version with both scores and the decision; move the alias when it won."""
    tags = {"test_accuracy": f"{decision.challenger:.6f}", "promoted": str(decision.promoted).lower(),
            "decision": decision.reason, score_tag(test_hash): f"{decision.challenger:.6f}"}  # fmt: skip
    if decision.champion is not None:
        tags["champion_test_accuracy"] = f"{decision.champion:.6f}"
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)


def register_evaluated(model: keras.Model, model_id: str, test_images: np.ndarray, test_labels: np.ndarray,
                       test_hash: str, accuracy: float, margin: float,
                       card: ModelCard | None = None) -> tuple[str, Decision]:  # fmt: skip
    """Log the evaluated `model` (in the active run, with its `card` in its metadata) as a new version of
    cnnlab-<id>; it becomes champion only if it beats the current champion, scored on the same test set (the
    images with sha256 `test_hash`), by `margin`. The run gets the decision as metrics and tags; returns the new
    version and the decision."""
    from cnnlab.tracking.runs import log_keras_model
    from cnnlab.training.evaluation import predict_classes  # Keras: only when a model is registered, not for `retrain`

    client, name = mlflow.MlflowClient(), model_name(model_id)
    current = champion_version(client, name)
    champion = None
    if current is not None:
        uri = f"models:/{name}/{current.version}"

        def rescore() -> float:  # only when the champion has no score on this test set yet
            return float((predict_classes(mlflow.keras.load_model(uri), test_images) == test_labels).mean())

        champion = champion_score(client, name, current, test_hash, rescore)
    metadata = card.metadata() if card is not None else None
    info = log_keras_model(model, test_images[:4], registered_model_name=name, metadata=metadata)
    decision = decide(accuracy, champion, margin)
    version = str(info.registered_model_version)
    record(client, name, version, decision, test_hash)
    mlflow.log_metrics(
        {"promoted": float(decision.promoted), **({"champion_test_accuracy": champion} if champion is not None else {})}
    )
    mlflow.set_tags({"promotion": decision.reason, "registered_model": name, "registered_version": version})
    return version, decision
