"""A trained model behind a web page and a JSON API (`cnnlab serve`), and the model loading `cnnlab predict` shares.

A model is named as `cnnlab predict` names it (an experiment id, a .keras file) or by an MLflow model URI
(`models:/cnnlab-F1@champion`, `runs:/<run id>/model`), read from the project's store or the tracking server
`MLFLOW_TRACKING_URI` names. The page takes dropped images and shows each one's top classes as bars and its
Grad-CAM heatmap; `POST /api/predict` answers the same as JSON. Uploads are checked as `cnnlab predict` checks
files (not an image, a decompression bomb), and a request over the upload limit gets 413.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from PIL import Image

from cnnlab.explain.grad_cam import grad_cam, upsample
from cnnlab.nets.cut import last_map_layer
from cnnlab.nets.predict import PredictInputError, decode_image, load_classes, load_model
from cnnlab.tracking.cards import model_card
from cnnlab.tracking.classifier import ranked
from cnnlab.tracking.runs import tracking_uri

MODEL_URI_SCHEMES = ("models:/", "runs:/")
NO_GRAD_CAM = "Grad-CAM does not apply: this model has no convolution layer"
SHOWN_SIDE = 224  # heatmaps are drawn at least this wide, so that a 28x28 image can be seen


@dataclass(frozen=True)
class Served:
    model: keras.Model
    classes: list[str]
    name: str  # what the user named: an id, a file, a model URI

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.model.input_shape[1:])


def model_file(model: str) -> Path:
    """An experiment id (models/<id>.keras) or a .keras file, which must exist."""
    path = Path(model) if Path(model).suffix else Path("models") / f"{model}.keras"
    if not path.is_file():
        raise PredictInputError(f"{path}: no such model; train it with `dvc repro` or pass a .keras file")
    return path


def load_served(model: str, root: Path) -> Served:
    """The Keras model and its class names, from a file, an experiment id or an MLflow model URI."""
    if not model.startswith(MODEL_URI_SCHEMES):
        path = model_file(model)
        loaded = load_model(path)
        return Served(loaded, load_classes(path, loaded.output_shape[-1]), model)
    import mlflow

    from cnnlab.nets import backbones  # noqa: F401  (registers the transfer models' preprocessing layer)

    mlflow.set_tracking_uri(tracking_uri(root))
    card = model_card(model)  # a wrong URI, or a model without class names, fails before the weights download
    return Served(mlflow.keras.load_model(model), card.class_names, model)


def heatmap_png(model: keras.Model, image: np.ndarray) -> bytes:
    """The image with its Grad-CAM heatmap (of the last convolution) laid over it, as a PNG."""
    import matplotlib

    heat = upsample(grad_cam(model, last_map_layer(model), image[None]), image.shape[:2])[0]
    colours = matplotlib.colormaps["jet"](heat)[..., :3] * 255
    picture = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    blended = (0.55 * picture + 0.45 * colours).clip(0, 255).astype(np.uint8)
    scale = max(1, SHOWN_SIDE // max(image.shape[:2]))
    shown = Image.fromarray(blended).resize((image.shape[1] * scale, image.shape[0] * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    shown.save(out, format="PNG")
    return out.getvalue()


def has_grad_cam(model: keras.Model) -> bool:
    try:
        last_map_layer(model)
    except ValueError:
        return False
    return True


def answer(served: Served, uploads: list[tuple[str, bytes]], top: int) -> list[dict[str, Any]]:
    """One result per upload: its top classes and Grad-CAM heatmap, or the error that says why it was refused."""
    results: list[dict[str, Any]] = []
    images, kept = [], []
    for name, data in uploads:
        try:
            images.append(decode_image(data, name, served.input_shape, resize=True))
            kept.append(len(results))
            results.append({"file": name})
        except PredictInputError as exc:
            results.append({"file": name, "error": str(exc)})
    if not images:
        return results
    table = ranked(np.asarray(served.model.predict(np.stack(images), verbose=0)), served.classes)
    explainable = has_grad_cam(served.model)
    for place, image, row in zip(kept, images, table.itertuples(), strict=True):
        order = np.argsort(row.probabilities)[::-1][:top]
        results[place]["top"] = [{"class": served.classes[i], "probability": row.probabilities[i]} for i in order]
        if explainable:
            png = base64.b64encode(heatmap_png(served.model, image)).decode()
            results[place]["grad_cam"] = f"data:image/png;base64,{png}"
        else:
            results[place]["grad_cam_note"] = NO_GRAD_CAM
    return results
