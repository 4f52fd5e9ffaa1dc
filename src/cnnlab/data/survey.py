"""A user's image folder or zip looked at from its file names and image headers, without decoding a pixel: its
layout, classes, the images per split and class, what would be skipped or converted and why, and what is wrong.

`cnnlab check` and `cnnlab add-data` show it before any stage runs; the preprocess stage decodes the same files
with `loaders.load_image_folder` and comes to the same counts, except for an image whose header is sound but
whose pixels are damaged."""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from cnnlab.data import loaders
from cnnlab.data.errors import DataFormatError
from cnnlab.data.layouts import CLASS_LAYOUT, SPLIT_ORDER, draw_splits
from cnnlab.params import CustomDataset, ImageLimits
from cnnlab.util.images import ImageTooLarge, opened


@dataclass
class Survey:
    name: str
    source: Path
    layout: str = ""
    classes: list[str] = field(default_factory=list)
    counts: dict[str, list[int]] = field(default_factory=dict)  # split -> images per class (in `classes` order)
    channels: int = 3
    skipped: list[dict[str, str]] = field(default_factory=list)  # file and reason, as meta.json lists them
    ignored: list[str] = field(default_factory=list)  # files that are not images
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)  # (height, width) of the usable images
    modes: Counter[str] = field(default_factory=Counter)  # Pillow modes of the usable images
    errors: list[str] = field(default_factory=list)  # what must be fixed before the pipeline can use it

    @property
    def usable(self) -> int:
        return sum(sum(per_class) for per_class in self.counts.values())

    def converted(self, channels: int | None = None) -> Counter[str]:
        """How many usable images are converted, and how ("greyscale to colour"), for a set of `channels`."""
        found: Counter[str] = Counter()
        for mode, n in self.modes.items():
            change = loaders.conversion(mode, channels or self.channels)
            if change:
                found[change] += n
        return found


def _headers(source: Path, names: list[str], limits: ImageLimits) -> Iterator[tuple[str, tuple[int, int]] | str]:
    """(mode, size) from each file's header, or why it would be skipped; the files of a zip are opened from it."""
    archive = zipfile.ZipFile(source) if source.is_file() else None
    try:
        for name in names:
            if archive is None:
                size, packed = (source / name).stat().st_size, None
            else:
                info = archive.getinfo(name)
                size, packed = info.file_size, info.compress_size
            over = loaders.over_limits(size, packed, limits)
            if over:
                yield over
                continue
            try:
                with opened(archive.read(name) if archive else source / name, limits.max_megapixels) as img:
                    yield img.mode, (img.height, img.width)
            except ImageTooLarge as exc:
                yield str(exc)
            except UnidentifiedImageError:
                yield "unreadable (not an image format Pillow knows)"
            except (OSError, SyntaxError, ValueError) as exc:
                yield f"unreadable ({type(exc).__name__}: {exc})"
    finally:
        if archive is not None:
            archive.close()


def survey(name: str, custom: CustomDataset, limits: ImageLimits) -> Survey:
    """What the pipeline would make of data set `name`'s folder or zip, from headers only."""
    found = Survey(name, custom.path, channels=custom.channels)
    if not custom.path.exists():
        found.errors.append(f"data.custom.{name}.path: {custom.path} does not exist; give the folder or zip's path")
        return found
    try:
        listing = loaders.listing(custom.path)
    except DataFormatError as exc:
        found.errors.append(str(exc))
        return found
    found.layout, found.ignored, found.skipped = listing.layout, listing.ignored, list(listing.refused)
    found.errors += listing.errors
    kept: list[tuple[str | None, str]] = []
    for (file, split, cls), header in zip(
        listing.images, _headers(custom.path, [n for n, _, _ in listing.images], limits), strict=True
    ):
        if isinstance(header, str):
            found.skipped.append({"file": file, "reason": header})
            continue
        mode, size = header
        found.modes[mode] += 1
        found.sizes[size] += 1
        kept.append((split, cls))
    if not found.errors:
        _count(found, kept, custom)
    return found


def _count(found: Survey, kept: list[tuple[str | None, str]], custom: CustomDataset) -> None:
    """The images per split and class, with the split drawn as preprocess draws it in a `<class>/*` folder."""
    found.classes = sorted({cls for _, cls in kept})
    if not kept:
        found.errors.append(f"{found.source}: no usable image; see what is skipped and why")
        return
    index = {c: i for i, c in enumerate(found.classes)}
    labels = np.array([index[cls] for _, cls in kept], dtype=np.int64)
    if found.layout == CLASS_LAYOUT:
        try:
            splits = list(draw_splits(labels, found.classes, custom.split, f"data.custom.{found.name}"))
        except DataFormatError as exc:
            found.errors.append(str(exc))
            return
    else:
        splits = [split or "" for split, _ in kept]
    for split in (s for s in SPLIT_ORDER if s in splits):
        chosen = labels[[i for i, s in enumerate(splits) if s == split]]
        found.counts[split] = np.bincount(chosen, minlength=len(found.classes)).tolist()
    missing = [s for s in ("train", "test") if s not in found.counts]
    if missing:
        found.errors.append(
            f"data.custom.{found.name}: no {' and no '.join(missing)} split in {found.source}; a folder of split "
            "folders needs train/ and test/ (val/ is optional), or drop the split folders and let "
            "data.custom.<name>.split draw them"
        )
    for cls, n in zip(found.classes, found.counts.get("train", []), strict=False):
        if n == 0:
            found.errors.append(
                f"data.custom.{found.name}: class {cls!r} has no training image; add some to train/{cls}/"
            )
