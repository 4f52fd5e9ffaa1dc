"""Classify image files with a trained model: the top classes and their probabilities."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnlab.util.errors import UserError
from cnnlab.util.images import ImageTooLarge, opened


class PredictInputError(UserError, ValueError):
    """An input the model cannot classify: not an image, or not the size the model takes."""


@dataclass
class Prediction:
    path: Path
    probabilities: np.ndarray  # one per class

    def top(self, classes: list[str], k: int) -> list[tuple[str, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(classes[i], float(self.probabilities[i])) for i in order]


class ModelFileError(UserError, ValueError):
    """A saved model that is refused (it would run code from the file), or a model card that does not fit it."""


def load_model(path: Path) -> keras.Model:
    """A saved model of any stage, transfer models (with their backbone's own preprocessing layer) included.

    In Keras' safe mode: a file whose layers would run Python code stored in it (a Lambda layer) is refused."""
    from cnnlab.nets import backbones  # noqa: F401  (registers BackbonePreprocess for loading)

    try:
        return keras.models.load_model(path, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" not in str(exc):
            raise
        raise ModelFileError(
            f"{path}: refused, it holds a Lambda layer whose Python code Keras would have to run from the file; "
            "load only models you trust, rebuilt without Lambda layers"
        ) from None


def model_card_path(model_path: Path) -> Path:
    """The JSON beside a saved model that names its classes (written by the train stage)."""
    return model_path.with_suffix(".meta.json")


def load_classes(model_path: Path, num_outputs: int) -> list[str]:
    """The class names of the model card beside the model (class numbers without one), as many as the model
    has classes (one sigmoid unit: two)."""
    wanted = max(num_outputs, 2)
    card = model_card_path(model_path)
    if not card.is_file():
        return [str(i) for i in range(wanted)]
    try:
        classes = json.loads(card.read_text())["classes"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ModelFileError(f"{card}: not a model card (JSON with a `classes` list); remove it or retrain") from None
    if not isinstance(classes, list) or len(classes) != wanted:
        count = len(classes) if isinstance(classes, list) else "no"
        raise ModelFileError(
            f"{card} names {count} classes but {model_path.name} has {wanted}: the card belongs to another model; "
            "retrain it, or remove the card to see class numbers"
        )
    return [str(name) for name in classes]


def load_image(path: Path, input_shape: tuple[int, int, int], resize: bool = False) -> np.ndarray:
    """The image as the model takes it (pixel values as float32), or a PredictInputError that says why not."""
    if not path.is_file():
        raise PredictInputError(f"{path}: no such file")
    return decode_image(path, str(path), input_shape, resize)


def decode_image(source: Path | bytes, name: str, input_shape: tuple[int, int, int], resize: bool) -> np.ndarray:
    """`load_image` of a file or of bytes received (an upload); `name` labels the errors."""
    height, width, channels = input_shape
    try:
        with opened(source) as img:  # a decompression bomb is refused from its header
            picture = img.convert("L" if channels == 1 else "RGB")
            if picture.size != (width, height):
                if not resize:
                    raise PredictInputError(
                        f"{name}: image is {picture.size[0]}x{picture.size[1]} but the model takes {width}x{height}; "
                        "resize it first, or pass --resize"
                    )
                picture = picture.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(picture, dtype=np.float32)
    except PredictInputError:
        raise
    except ImageTooLarge as exc:
        raise PredictInputError(f"{name}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PredictInputError(f"{name}: not an image file that can be read ({exc})") from None
    return array[..., None] if channels == 1 else array


def predict(model: keras.Model, paths: list[Path], resize: bool = False) -> list[Prediction]:
    shape = tuple(model.input_shape[1:])
    images = np.stack([load_image(p, shape, resize) for p in paths])
    probabilities = model.predict(images, verbose=0)
    if probabilities.shape[-1] == 1:  # a sigmoid unit: P(class 1)
        probabilities = np.concatenate([1 - probabilities, probabilities], axis=-1)
    return [Prediction(p, probs) for p, probs in zip(paths, probabilities, strict=True)]
