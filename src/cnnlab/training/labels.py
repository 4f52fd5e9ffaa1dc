"""Class labels in the form a loss expects."""

from __future__ import annotations

import keras
import numpy as np


def encode_labels(labels: np.ndarray, loss: str, num_classes: int) -> np.ndarray:
    """Labels as the loss expects them: one-hot for categorical CE, floats for binary CE."""
    if loss == "categorical_crossentropy":
        return keras.utils.to_categorical(labels, num_classes).astype("float32")
    if loss == "binary_crossentropy":
        return labels.astype("float32")
    return labels
