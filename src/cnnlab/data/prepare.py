"""Turn a data set's raw files into uint8 train / val / test arrays and a description of them."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.catalog.datasets import DATASETS
from cnnlab.data import loaders, petimages
from cnnlab.data.download import verify
from cnnlab.data.splits import Arrays, stratified_split
from cnnlab.params import CustomDataset, ImageLimits
from cnnlab.util.files import sha256_file, write_with


@dataclass
class Prepared:
    splits: dict[str, Arrays]
    classes: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)
    converted: list[dict[str, str]] = field(default_factory=list)  # greyscale made colour (or back), and which


def read_raw(
    dataset: str, raw_dir: Path, fmt: str, custom: CustomDataset | None = None, limits: ImageLimits | None = None
) -> Prepared:
    """Read the raw files of `dataset` (in format `fmt`) into train/test (and val if shipped) arrays; image files
    over `limits` are skipped."""
    if custom is not None:
        source = raw_dir
        if fmt == "image-zip":
            (source,) = sorted(raw_dir.glob("*.zip"))
        result = loaders.load_image_folder(
            source, custom.image_size, custom.channels, resize=True, limits=limits, split=custom.split
        )
        missing = {"train", "test"} - set(result.splits)
        if missing:
            raise loaders.DataFormatError(
                f"{dataset}: no {' and no '.join(sorted(missing))} split found; the images must be laid out as "
                "<split>/<class>/<image> with splits train and test (and optionally val), or as <class>/<image> "
                "without split folders (cut by data.custom.<name>.split)"
            )
        return Prepared(result.splits, result.classes, result.skipped, result.converted)
    spec = DATASETS[dataset]
    classes = list(spec.classes)
    for layout in (lay for lay in spec.layouts if lay.format == fmt):  # nothing is read before it is verified
        for name, accepted in layout.files.items():
            verify(raw_dir / name, accepted)
    if fmt == "idx-gz":
        return Prepared(loaders.load_idx_folder(raw_dir), classes)
    if fmt == "mnist-npz":
        return Prepared(loaders.load_mnist_npz(raw_dir / "mnist.npz"), classes)
    if fmt == "cifar-python":
        return Prepared(loaders.load_cifar_python(raw_dir / "cifar-10-python.tar.gz"), classes)
    if fmt in ("image-zip", petimages.CUT_FORMAT):
        if fmt == petimages.CUT_FORMAT:
            archive = verified_cut(raw_dir)
        else:
            (archive,) = [raw_dir / n for lay in spec.layouts if lay.format == fmt for n in lay.files]
        height, width, channels = spec.image_shape
        resize = spec.has_validation_split
        result = loaders.load_image_folder(archive, (height, width), channels, resize=resize, limits=limits)
        if result.classes != classes:
            raise loaders.DataFormatError(f"{archive}: class folders {result.classes} differ from {classes}")
        return Prepared(result.splits, classes, result.skipped, result.converted)
    raise loaders.DataFormatError(f"{dataset}: no reader for format {fmt!r}")


def verified_cut(raw_dir: Path) -> Path:
    """The cut the download stage made into `raw_dir`, checked against the sha256 it recorded then (in
    `<raw_dir>.source.json`): the catalogue pins the archive a cut comes from, not the cut, whose bytes depend
    on the JPEG encoder."""
    record = raw_dir.with_name(f"{raw_dir.name}.source.json")
    if not record.is_file():
        fix = f"run the download stage first (`dvc repro download@{raw_dir.name}`)"
        raise FileNotFoundError(f"{record} not found: {fix}")
    ((name, digest),) = json.loads(record.read_text())["files"].items()
    verify(raw_dir / name, frozenset({digest}), label=f"{raw_dir / name} (recorded in {record})")
    return raw_dir / name


def with_validation(prepared: Prepared, validation: float | str, seed: int, stratify: bool = True) -> Prepared:
    """Hold out a seeded (by default stratified) validation split unless the data ships one or the test set serves."""
    splits = dict(prepared.splits)
    if "val" not in splits and validation != "test":
        x, y = splits["train"]
        smallest = np.bincount(y).min()
        if stratify and (smallest * float(validation) < 1 or smallest * (1 - float(validation)) < 1):
            raise loaders.DataFormatError(
                f"cannot hold out a stratified {validation:.0%} validation split: a class has only {smallest} "
                "training image(s); add images, change `validation`, or set `validation: test`"
            )
        kept, held = stratified_split(y, float(validation), seed, stratify)
        splits["train"], splits["val"] = (x[kept], y[kept]), (x[held], y[held])
    return Prepared(splits, prepared.classes, prepared.skipped)


def compresses(images: np.ndarray, sample_bytes: int = 1 << 20, worth: float = 0.75) -> bool:
    """Whether zlib shrinks the images enough to be worth its time, judged on their first megabyte.

    MNIST's black backgrounds shrink to a quarter; photographs (CIFAR-10, cats vs dogs) by 8-20%, for
    seconds of compression on every preprocess and decompression on every load.
    """
    sample = images.tobytes()[:sample_bytes]
    return len(sample) > 0 and len(zlib.compress(sample, 1)) < worth * len(sample)


def save_split(path: Path, arrays: Arrays) -> str:
    x, y = arrays
    save = np.savez_compressed if compresses(x) else np.savez  # np.load reads both
    write_with(path, lambda tmp: save(tmp, x=x.astype(np.uint8), y=y.astype(np.int64)))
    return sha256_file(path)


def load_split(path: Path) -> Arrays:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the preprocess stage first (`dvc repro preprocess`)")
    with np.load(path) as f:
        return f["x"], f["y"]


def read_meta(folder: Path) -> dict[str, Any]:
    meta = folder / "meta.json"
    if not meta.is_file():
        raise FileNotFoundError(
            f"{meta} not found: run the preprocess stage first (`dvc repro preprocess@{folder.name}`)"
        )
    return json.loads(meta.read_text())


def load_prepared(folder: Path) -> Prepared:
    """The arrays the preprocess stage wrote for one data set."""
    meta = read_meta(folder)
    return Prepared({split: load_split(folder / f"{split}.npz") for split in meta["counts"]}, meta["classes"])


def training_splits(folder: Path, validation: float | str, seed: int, stratify: bool) -> tuple[Arrays, Arrays]:
    """An experiment's (train, validation) arrays: its own held-out split, the shipped one, or the test set."""
    prepared = with_validation(load_prepared(folder), validation, seed, stratify)
    return prepared.splits["train"], prepared.splits["test" if validation == "test" else "val"]


def describe(prepared: Prepared, dataset: str) -> dict[str, Any]:
    """The JSON that travels with the arrays: class names, shapes, counts and what was skipped."""
    any_split = next(iter(prepared.splits.values()))[0]
    return {
        "dataset": dataset,
        "classes": prepared.classes,
        "image_shape": list(any_split.shape[1:]),
        "counts": {s: len(y) for s, (_, y) in prepared.splits.items()},
        "class_counts": {
            s: np.bincount(y, minlength=len(prepared.classes)).tolist() for s, (_, y) in prepared.splits.items()
        },
        "skipped_count": len(prepared.skipped),
        "skipped": prepared.skipped,
        # Only where images were converted: the built-in sets' meta.json, and what depends on it, stay as they were.
        **({"converted_count": len(prepared.converted), "converted": prepared.converted} if prepared.converted else {}),
    }
