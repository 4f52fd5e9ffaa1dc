"""The two layouts of an image folder or zip, which one a listing has, and each image's split and class in it.

`<split>/<class>/<image>`: split folders (train, test, and optionally val or validation) of class folders.
`<class>/<image>`: class folders only; the images are cut into train, val and test by seeded, stratified
fractions (params' `data.custom.<name>.split`). Either may sit inside one top folder (a zip of a folder).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from cnnlab.data.errors import DataFormatError
from cnnlab.data.splits import stratified_split
from cnnlab.params import CustomSplit

SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "test": "test"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
SPLIT_LAYOUT = "<split>/<class>/<image>"
CLASS_LAYOUT = "<class>/<image>"
UNSAFE = "has an absolute path or '..' in it: refused, it could point outside the data set"
SPLIT_ORDER = ("train", "val", "test")
SHOWN = 3  # images named for each kind of layout problem


@dataclass
class Listing:
    """What a folder's or zip's file names say: its layout and (name, split, class) of every image, in name order;
    `split` is None in the `<class>/<image>` layout, where the split is drawn later."""

    layout: str
    images: list[tuple[str, str | None, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # not image files (by suffix), or macOS metadata: never read
    refused: list[dict[str, str]] = field(default_factory=list)  # entries refused unread, and why
    errors: list[str] = field(default_factory=list)  # why the names fit neither layout


def unsafe_name(name: str) -> bool:
    """Whether an archive entry's name is absolute or climbs out of the archive (`..`)."""
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in re.split(r"[\\/]", name)


def _is_image(parts: tuple[str, ...]) -> bool:
    junk = "__MACOSX" in parts or parts[-1].startswith("._")  # metadata a Mac puts in zips, not images
    return not junk and os.path.splitext(parts[-1])[1].lower() in IMAGE_SUFFIXES


def classify(names: list[str], where: str) -> Listing:
    """The layout of the files `names` (relative, '/'-separated) of `where`, and every image's split and class."""
    unsafe = {n for n in names if unsafe_name(n)}
    refused = [{"file": n, "reason": UNSAFE} for n in names if n in unsafe]
    # Each name is parsed once: a data set lists tens of thousands of files (CIFAR-10: 60,000).
    parts = {n: PurePosixPath(n).parts for n in sorted(names) if n not in unsafe}
    images: list[str] = []
    ignored: list[str] = []
    for name, name_parts in parts.items():
        (images if _is_image(name_parts) else ignored).append(name)
    parts = {n: parts[n] for n in images}
    if not images:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        return Listing("", [], ignored, refused, [f"{where}: no readable images found: no {suffixes} files"])
    in_splits = [n for n in images if len(parts[n]) >= 3 and parts[n][-3].lower() in SPLIT_NAMES]
    if len(in_splits) == len(images):
        found: list[tuple[str, str | None, str]] = [
            (n, SPLIT_NAMES[parts[n][-3].lower()], parts[n][-2]) for n in images
        ]
        return Listing(SPLIT_LAYOUT, found, ignored, refused)
    listing = Listing(CLASS_LAYOUT, [], ignored, refused)
    if in_splits:
        split_set = set(in_splits)
        other = next(n for n in images if n not in split_set)
        listing.errors.append(
            f"{where} mixes the two layouts: {in_splits[0]} is in a split folder, {other} is not; lay out every "
            f"image as {SPLIT_LAYOUT} (train/cat/1.png) or every one as {CLASS_LAYOUT} (cat/1.png)"
        )
        return listing
    top = _common_top(list(parts.values()))
    problems: dict[str, list[str]] = {}  # kind of problem -> its message for each image that has it
    for name in images:
        rest = parts[name][top:]
        if len(rest) == 1:
            problems.setdefault("loose", []).append(
                f"{where}: {name} is in no class folder; put each image in a "
                f"folder named after its class ({CLASS_LAYOUT}, e.g. cat/1.png)"
            )
        elif len(rest) > 2:
            problems.setdefault("deep", []).append(
                f"{where}: {name} is {len(rest) - 1} folders deep; use "
                f"{CLASS_LAYOUT} or {SPLIT_LAYOUT}, one class folder per class"
            )
        elif rest[0].lower() in SPLIT_NAMES:
            folder = "/".join(parts[name][: top + 1])
            problems.setdefault(folder, []).append(
                f"{where}: the folder {folder} is named like a split but holds images, not class folders; use "
                f"{SPLIT_LAYOUT} (train/cat/1.png), or rename the class"
            )
        else:
            listing.images.append((name, None, rest[0]))
    for messages in problems.values():  # a few examples of each problem, however many images have it
        listing.errors += messages[:SHOWN] + (
            [f"... and {len(messages) - SHOWN} more like it"] if len(messages) > SHOWN else []
        )
    return listing


def _common_top(parts: list[tuple[str, ...]]) -> int:
    """How many leading folders every image shares above its class folders (a zip's top folder)."""
    top = 0
    while (
        len({p[top] for p in parts}) == 1
        and all(len(p) > top + 1 for p in parts)
        and any(len(p) > top + 2 for p in parts)
    ):
        top += 1
    return top


def draw_splits(labels: np.ndarray, classes: list[str], split: CustomSplit, where: str) -> np.ndarray:
    """Each image's split ("train", "val" or "test") in a `<class>/<image>` data set: `split.test` and
    `split.validation` of every class (stratified), drawn with `split.seed`; same seed, same split."""
    fractions = [f for f in (split.test, split.validation) if f > 0]
    counts = np.bincount(labels, minlength=len(classes))
    smallest = int(np.argmin(counts))
    needed = int(np.ceil(1 / min(fractions))) if fractions else 1
    if len(classes) < 2:
        raise DataFormatError(f"{where}: one class only ({', '.join(classes)}); a classifier needs a folder per class, "
                              "two or more")  # fmt: skip
    if counts[smallest] < max(needed, 2):
        raise DataFormatError(
            f"{where}: cannot draw a stratified split of test {split.test:g} and validation {split.validation:g}: "
            f"class {classes[smallest]!r} has {counts[smallest]} image(s); every class needs at least "
            f"{max(needed, 2)} usable images (add images, or change the fractions under data.custom.<name>.split)"
        )
    names = np.full(len(labels), "train", dtype=object)
    try:
        rest, test = stratified_split(labels, split.test, split.seed)
        names[test] = "test"
        if split.validation > 0:
            _, val = stratified_split(labels[rest], split.validation / (1 - split.test), split.seed)
            names[rest[val]] = "val"
    except ValueError as exc:  # scikit-learn's own check: too few images for every class in every part
        raise DataFormatError(f"{where}: cannot draw the stratified split: {exc}; add images or change "
                              "data.custom.<name>.split") from None  # fmt: skip
    return names
