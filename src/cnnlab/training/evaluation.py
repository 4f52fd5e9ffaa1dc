"""Test-set evaluation: loss, accuracy, per-class precision / recall / F1, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from cnnlab.training.labels import encode_labels


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predicted: np.ndarray
    confusion: np.ndarray
    per_class: dict[str, dict[str, float]]

    def metrics(self) -> dict[str, Any]:
        """The flat numbers for `dvc metrics show` and MLflow."""
        macro = {k: self.per_class["macro avg"][k] for k in ("precision", "recall", "f1-score")}
        return {
            "test_loss": self.loss,
            "test_accuracy": self.accuracy,
            **{f"test_macro_{k.replace('-score', '')}": v for k, v in macro.items()},
        }


def classes_of(probabilities: np.ndarray) -> np.ndarray:
    """The predicted class of each row of class probabilities (one sigmoid unit: class 1 above 0.5)."""
    if probabilities.shape[-1] == 1:
        return (probabilities[:, 0] > 0.5).astype(np.int64)
    return probabilities.argmax(axis=-1).astype(np.int64)


def predict_classes(model: keras.Model, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    return classes_of(model.predict(images, batch_size=batch_size, verbose=0))


def mean_loss(model: keras.Model, probabilities: np.ndarray, labels: np.ndarray, loss: str) -> float:
    """The loss `model.evaluate` reports, from predictions already made: the mean of `loss` over the images plus
    the model's weight penalties (L2)."""
    targets = encode_labels(labels, loss, max(probabilities.shape[-1], 2))
    if probabilities.shape[-1] == 1:  # one sigmoid unit: the labels as a column, as Keras' compiled loss reshapes
        targets = targets.reshape(-1, 1)
    per_image = keras.ops.convert_to_numpy(keras.losses.get(loss)(targets, probabilities))
    penalty = sum(float(keras.ops.convert_to_numpy(term)) for term in model.losses)
    return float(np.mean(per_image, dtype=np.float64)) + penalty


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray, classes: list[str], loss: str) -> Evaluation:
    # One pass over the test set: the loss comes from the same predictions as the classes. The 8-bit images go in
    # as they are: a Keras model casts its inputs to its input's dtype one batch at a time.
    probabilities = model.predict(images, batch_size=512, verbose=0)
    predicted = classes_of(probabilities)
    report = classification_report(
        labels, predicted, labels=range(len(classes)), target_names=classes, output_dict=True, zero_division=0
    )
    return Evaluation(
        loss=mean_loss(model, probabilities, labels, loss),
        accuracy=float((predicted == labels).mean()),
        predicted=predicted,
        confusion=confusion_matrix(labels, predicted, labels=range(len(classes))),
        per_class={k: v for k, v in report.items() if isinstance(v, dict)},
    )
