"""The sections that set no training recipe: `data`, `mlflow`, `explain`, `detect` and `quick_floors`."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from cnnlab.params.base import PositiveInt, Strict, check_run_list


class CustomSplit(Strict):
    """How a folder of `<class>/<image>` (no split folders) is cut: these fractions of every class (stratified),
    drawn with `seed`. A folder of `<split>/<class>/<image>` keeps its own splits and ignores this."""

    test: float = Field(0.2, gt=0, lt=1)
    validation: float = Field(0.1, ge=0, lt=1)  # 0: each experiment holds out its own `validation` of train
    seed: int = 42  # the split's random_state (`cnnlab add-data` writes params' `seed` here)

    @model_validator(mode="after")
    def _leaves_training_images(self) -> CustomSplit:
        if self.test + self.validation >= 1:
            raise ValueError(f"test + validation is {self.test + self.validation:g}: their sum must be below 1")
        return self


class CustomDataset(Strict):
    """A user's own images: a folder or zip of `<split>/<class>/<image>` or `<class>/<image>` (.jpg, .png, ...).

    Images are resized to `image_size`; a greyscale image in a colour set (channels 3) is converted to colour,
    and a colour one in a greyscale set (channels 1) to greyscale, and counted."""

    path: Path
    image_size: tuple[PositiveInt, PositiveInt]
    channels: Literal[1, 3] = 3
    split: CustomSplit = CustomSplit()


class ImageLimits(Strict):
    """What an image file may cost before it is read: larger ones are skipped, counted and listed in meta.json."""

    max_megapixels: float = Field(40.0, gt=0)  # width x height from the header, checked before decoding
    max_member_mib: float = Field(64.0, gt=0)  # a file's size (a zip member's declared size), checked before reading
    max_compression_ratio: float = Field(100.0, gt=1)  # a zip member's size over its compressed size


class Data(Strict):
    # dataset name -> a local folder that already holds its files (tried first)
    paths: dict[str, Path] = {}
    # local mirror of the public files; the env var CNNLAB_DATA_MIRROR overrides it
    mirror: Path | None = None
    # local mirror of pretrained weights (the files Keras would download); CNNLAB_WEIGHTS_MIRROR overrides it
    weights_mirror: Path | None = None
    debian_dir: Path | None = Path("/usr/share/datasets/fashion-mnist")
    online: bool = True
    # dataset -> a base URL that serves the canonical files (a proxy or an internal copy)
    online_base: dict[str, str] = {}
    custom: dict[str, CustomDataset] = {}
    limits: ImageLimits = ImageLimits()  # for image folders and zips: your own data sets and cats vs dogs


class Tracking(Strict):
    experiment_name: str = "cnnlab"
    log_model: bool = True
    register_model: bool = True  # the evaluate stage registers the evaluated model as cnnlab-<id> (needs log_model)
    promote_margin: float = Field(0.0, ge=0, lt=1)  # test accuracy by which a model must beat the champion


class Views(Strict):
    """What the explain stage shows of one trained model (layer names differ between models: see `cnnlab layers`)."""

    layers: list[str] = []  # feature maps and filter patterns of these layers; [] = the first and the last convolution
    feature_map_images: list[Annotated[int, Field(ge=0, strict=True)]] = [0]  # test images (indices) for feature maps
    max_maps: PositiveInt = 32  # feature maps drawn per layer
    filters: PositiveInt = 8  # filter patterns: the first N filters of each layer
    ascent_steps: PositiveInt = 30
    ascent_step_size: float = Field(10.0, gt=0)  # pixel levels per step, along the RMS-normalised gradient
    grad_cam_layer: str | None = None  # None: the last convolution's output (inside a backbone too)
    grad_cam_images: PositiveInt = 6  # this many correctly and this many wrongly classified test images
    augmentation_images: PositiveInt = 12  # the preview: the first N training images
    augmentation_draws: PositiveInt = 2  # and this many random augmented draws of each


class Explain(Views):
    """`explain`: the defaults for every model, and `models: {<id>: {<key>: value}}` for one model's own."""

    models: dict[str, dict[str, Any]] = {}

    def for_model(self, model_id: str) -> Views:
        own = self.models.get(model_id, {})
        try:
            return Views(**{**self.model_dump(exclude={"models"}), **own})
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(
                f"explain.models.{model_id}.{where}: {first['msg']} (the keys: {', '.join(Views.model_fields)})"
            ) from None


class DetectSettings(Strict):
    """How a YOLO model is run (seed 004, program 6-12's values by default)."""

    input_size: int = Field(448, ge=32, le=2048)  # the blob's width and height
    score_threshold: float = Field(0.5, ge=0, le=1)  # a box's best class score must exceed it
    nms_threshold: float = Field(0.4, ge=0, le=1)  # NMSBoxes drops a box overlapping a better one by more (IoU)
    scale: float = Field(1 / 256, gt=0)  # pixel values are multiplied by it

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"{value}: YOLO's strides need a multiple of 32 (416, 448, 608)")
        return value


class DetectJob(DetectSettings):
    """One object-detection run (`dvc repro detect@<id>`): a Darknet model's files and the images to look at."""

    description: str = ""
    cfg: Path
    weights: Path
    names: Path
    images: list[Path]  # image files or folders of them

    def settings(self) -> DetectSettings:
        return DetectSettings(**self.model_dump(include=set(DetectSettings.model_fields)))


class Detect(Strict):
    """Object detection with YOLO through OpenCV; `dvc repro` runs a detect stage for each id in `run`."""

    run: list[str] = []
    jobs: dict[str, DetectJob] = {}

    @model_validator(mode="after")
    def _run_names_jobs(self) -> Detect:
        check_run_list("detect.run", "job", self.run, self.jobs)
        return self


def _accuracy(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError("a floor is an accuracy from 0 to 1 (0.8 = 80%)")
    return value


# Strict: YAML `true` or "0.8" is not silently taken for a number.
Floor = Annotated[float, Field(strict=True), AfterValidator(_accuracy)]
FloorSection = Literal["experiments", "crossval", "ablation", "tune", "finetune"]


class QuickFloors(Strict):
    """The least accuracy a result on the quick budget must reach to show that its model learns.

    Each key is the params section whose ids its entries name: an id, or a pattern of ids (`F*`, fnmatch's
    syntax), mapped to a floor. An id matches one entry at most, and every entry matches some id.
    """

    experiments: dict[str, Floor] = {}  # test accuracy
    crossval: dict[str, Floor] = {}  # every arm's mean accuracy over its folds
    ablation: dict[str, Floor] = {}  # every cell's mean accuracy over its folds
    tune: dict[str, Floor] = {}  # the best trial's validation accuracy, and the retrained model's test accuracy
    finetune: dict[str, Floor] = {}  # test accuracy (finetune.recipes ids)

    def entries_for(self, section: FloorSection, target: str) -> list[str]:
        """The entries (ids or patterns) of `section` that name `target`."""
        return [key for key in getattr(self, section) if fnmatchcase(target, key)]

    def floor(self, section: FloorSection, target: str) -> float | None:
        """`target`'s floor, or None where no entry names it (validation leaves at most one that does)."""
        entries = self.entries_for(section, target)
        return getattr(self, section)[entries[0]] if entries else None
