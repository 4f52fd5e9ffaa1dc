"""Pretrained `keras.applications` backbones: their weights, their own input preprocessing, and which layers train.

ImageNet weights are looked for where a user would keep them before anything is
downloaded: the weights mirror (CNNLAB_WEIGHTS_MIRROR or data.weights_mirror),
then Keras's own cache (~/.keras/models), then Keras's own download. The file
name is the one Keras itself asks for, so every backbone works the same way.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
from keras.src.backend.config import keras_home
from keras.src.utils import file_utils  # the one place Keras fetches application weights

from cnnlab.params import Backbone, LastLayers, Trainable
from cnnlab.util.errors import UserError
from cnnlab.util.files import env_path

log = logging.getLogger("cnnlab.backbones")
WEIGHTS_MIRROR_ENV = "CNNLAB_WEIGHTS_MIRROR"


class WeightsUnavailableError(UserError, FileNotFoundError):
    """A backbone's pretrained weights are in none of the places they are looked for."""


@keras.saving.register_keras_serializable(package="cnnlab")
class BackbonePreprocess(keras.layers.Layer):
    """The backbone's own `preprocess_input` (scaling, channel order, mean), inside the model.

    The model then takes raw 0..255 pixels like every model of the zoo.
    """

    def __init__(self, backbone: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.backbone = backbone
        module = importlib.import_module(getattr(keras.applications, backbone).__module__)
        self._preprocess: Callable[[Any], Any] = module.preprocess_input

    def call(self, images: Any) -> Any:
        return self._preprocess(keras.ops.cast(images, "float32"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backbone": self.backbone}


@contextlib.contextmanager
def weights_lookup(mirror: Path | None, online: bool) -> Iterator[None]:
    """While building a backbone, answer Keras's request for a weights file from the mirror or the cache first."""
    keras_get_file = file_utils.get_file

    def get_file(fname: str | None = None, origin: str | None = None, **kwargs: Any) -> str:
        name = fname or Path(str(origin)).name
        cached = Path(kwargs.get("cache_dir") or keras_home()) / kwargs.get("cache_subdir", "datasets")
        looked = [p for p in (mirror / name if mirror else None, cached / name) if p is not None]
        if mirror is not None and (mirror / name).is_file():
            found = mirror / name
            if kwargs.get("file_hash") and not file_utils.validate_file(str(found), kwargs["file_hash"]):
                raise WeightsUnavailableError(f"{found} does not match the sha256 Keras expects: a damaged copy")
            log.info("weights: %s (mirror)", found)
            return str(found)
        if not online and not (cached / name).is_file():
            raise WeightsUnavailableError(_missing(name, origin, looked, "downloads are off (data.online: false)"))
        try:
            return keras_get_file(fname, origin, **kwargs)
        except Exception as exc:  # no network, a proxy, a full disk: say which file, from where, looked where
            raise WeightsUnavailableError(_missing(name, origin, looked, f"the download failed ({exc})")) from None

    file_utils.get_file = get_file
    try:
        yield
    finally:
        file_utils.get_file = keras_get_file


def _missing(name: str, origin: str | None, looked: Sequence[Path], why: str) -> str:
    return (
        f"pretrained weights {name} not found: looked in {', '.join(str(p) for p in looked)}; {why} "
        f"from {origin}. Put the file in the weights mirror ({WEIGHTS_MIRROR_ENV}), download it into Keras's cache, "
        "give a local file as backbone.weights, or set backbone.weights: null to start from random weights"
    )


def input_shape(spec: Backbone, image_shape: Sequence[int]) -> tuple[int, int, int]:
    """What the backbone sees: the images resized to its input size (if one is set), always 3 bands."""
    if image_shape[-1] != 3:
        raise ValueError(f"backbone {spec.name} takes colour images; this data set has {image_shape[-1]} channel(s)")
    height, width = (spec.input_size, spec.input_size) if spec.input_size else image_shape[:2]
    return height, width, 3


def build_backbone(spec: Backbone, image_shape: Sequence[int], mirror: Path | None, online: bool) -> keras.Model:
    """The backbone without its classifier, with its weights loaded; fails before any training if they are missing."""
    if spec.weights not in (None, "imagenet") and not Path(spec.weights).is_file():
        raise WeightsUnavailableError(f"backbone.weights: {spec.weights} not found (a weights file, imagenet or null)")
    shape = input_shape(spec, image_shape)
    with weights_lookup(env_path(WEIGHTS_MIRROR_ENV, mirror), online):
        model = getattr(keras.applications, spec.name)(
            include_top=False, weights=spec.weights, input_shape=shape, **spec.options
        )
    return model


def first_trainable(backbone: keras.Model, which: Trainable) -> int:
    """The index of the first backbone layer that trains under `which`; an unknown layer name is an error."""
    layers = backbone.layers
    if which == "all":
        return 0
    if which == "none":
        return len(layers)
    if isinstance(which, LastLayers):
        return max(len(layers) - which.last, 0)
    names = [layer.name for layer in layers]
    if which.from_layer not in names:
        raise ValueError(
            f"from_layer: {backbone.name} has no layer {which.from_layer!r}; "
            f"its last layers are {', '.join(names[-8:])}"
        )
    return names.index(which.from_layer)


def set_trainable(backbone: keras.Model, which: Trainable) -> int:
    """Freeze the backbone but for `which` layers; returns how many layers train."""
    first = first_trainable(backbone, which)
    backbone.trainable = first < len(backbone.layers)
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= first
    return len(backbone.layers) - first
