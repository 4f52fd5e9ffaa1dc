"""Classify image files with a trained model: the top classes and their probabilities."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnlab.util.errors import UserError


class PredictInputError(UserError, ValueError):
    """An input the model cannot classify: not an image, or not the size the model takes."""


@dataclass
class Prediction:
    path: Path
    probabilities: np.ndarray  # one per class

    def top(self, classes: list[str], k: int) -> list[tuple[str, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(classes[i], float(self.probabilities[i])) for i in order]


def load_model(path: Path) -> keras.Model:
    """A saved model of any stage, transfer models (with their backbone's own preprocessing layer) included."""
    from cnnlab.nets import backbones  # noqa: F401  (registers BackbonePreprocess for loading)

    return keras.models.load_model(path)


def model_card_path(model_path: Path) -> Path:
    """The JSON beside a saved model that names its classes (written by the train stage)."""
    return model_path.with_suffix(".meta.json")


def load_classes(model_path: Path, num_outputs: int) -> list[str]:
    card = model_card_path(model_path)
    if card.is_file():
        return list(json.loads(card.read_text())["classes"])
    return [str(i) for i in range(max(num_outputs, 2))]


def load_image(path: Path, input_shape: tuple[int, int, int], resize: bool = False) -> np.ndarray:
    """The image as the model takes it (pixel values as float32), or a PredictInputError that says why not."""
    height, width, channels = input_shape
    if not path.is_file():
        raise PredictInputError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            picture = img.convert("L" if channels == 1 else "RGB")
            if picture.size != (width, height):
                if not resize:
                    raise PredictInputError(
                        f"{path}: image is {picture.size[0]}x{picture.size[1]} but the model takes {width}x{height}; "
                        "resize it first, or pass --resize"
                    )
                picture = picture.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(picture, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise PredictInputError(f"{path}: not an image file that can be read ({exc})") from None
    return array[..., None] if channels == 1 else array


def predict(model: keras.Model, paths: list[Path], resize: bool = False) -> list[Prediction]:
    shape = tuple(model.input_shape[1:])
    images = np.stack([load_image(p, shape, resize) for p in paths])
    probabilities = model.predict(images, verbose=0)
    if probabilities.shape[-1] == 1:  # a sigmoid unit: P(class 1)
        probabilities = np.concatenate([1 - probabilities, probabilities], axis=-1)
    return [Prediction(p, probs) for p, probs in zip(paths, probabilities, strict=True)]
