"""Cats vs dogs from Microsoft's copy of the Kaggle archive (`PetImages/{Cat,Dog}/<N>.jpg`), cut into the
mirror's layout.

The cut is deterministic: the first 1,000 / 500 / 500 readable images of each class, in numeric file order, go
to train / validation / test, resized to 200x200 and stored as quality-75 JPEGs under
`cats_vs_dogs/<split>/<class>/`, as the mirror's copies are, so preprocess reads the cut as it reads the
mirror's zip. The archive holds empty and corrupt files: they are skipped and listed. Its members are read one
at a time from the zip, never extracted.
"""

from __future__ import annotations

import io
import itertools
import logging
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cnnlab.util.errors import UserError
from cnnlab.util.files import atomic_path
from cnnlab.util.images import ImageTooLarge, opened

log = logging.getLogger(__name__)

ARCHIVE_FORMAT = "petimages-zip"  # the catalogue's format of the archive
CUT_FORMAT = "petimages-cut"  # the format recorded for the raw folder that holds the cut
CLASSES = {"Cat": "cats", "Dog": "dogs"}  # archive folder -> class folder of the mirror's layout
SPLITS = {"train": 1000, "validation": 500, "test": 500}  # images per class, in this order
IMAGE_SIZE = (200, 200)  # width, height of the mirror's copies
JPEG_QUALITY = 75  # the mirror's copies' (Pillow's default)
COLOUR_MODES = ("RGB", "RGBA", "P", "CMYK", "YCbCr")
GREY_MODES = ("L", "LA", "1")  # converted to RGB, and counted
_MEMBER = re.compile(r"^PetImages[\\/](Cat|Dog)[\\/](\d+)\.jpg$", re.IGNORECASE)
_STAMP = (1980, 1, 1, 0, 0, 0)  # one time in every entry: the same images make the same zip bytes


class PetImagesError(UserError, ValueError):
    """The archive does not hold what a cut needs."""


@dataclass
class Cut:
    """What a cut holds and what it left out."""

    splits: dict[str, int]  # images per class in each split
    image_size: tuple[int, int]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}: read, not usable
    greyscale: list[str] = field(default_factory=list)  # files converted from greyscale to RGB

    def summary(self) -> dict[str, object]:
        return {
            "images_per_class": self.splits,
            "image_size": list(self.image_size),
            "skipped": len(self.skipped),
            "greyscale_converted": len(self.greyscale),
        }


def numbered_members(archive: zipfile.ZipFile) -> dict[str, list[tuple[int, zipfile.ZipInfo]]]:
    """The `PetImages/<Cat|Dog>/<N>.jpg` members of each class folder, by number (other files are not images of
    the data set: Thumbs.db)."""
    members: dict[str, list[tuple[int, zipfile.ZipInfo]]] = {folder: [] for folder in CLASSES}
    for info in archive.infolist():
        match = _MEMBER.match(info.filename)
        if match and not info.is_dir():
            members[match.group(1).capitalize()].append((int(match.group(2)), info))
    return {folder: sorted(found, key=lambda pair: pair[0]) for folder, found in members.items()}


def rgb_image(data: bytes) -> tuple[Image.Image, str] | str:
    """The image decoded whole and made RGB, with its original mode; or why it cannot be used."""
    if not data:
        return "empty file"
    try:
        with opened(data) as img:
            img.load()  # decodes every pixel: a truncated file fails here, not later
            if img.mode not in COLOUR_MODES + GREY_MODES:
                return f"has mode {img.mode}, not convertible to RGB"
            return img.convert("RGB"), img.mode
    except ImageTooLarge as exc:
        return str(exc)
    except UnidentifiedImageError:  # its message names a memory address: the record must not change run to run
        return "unreadable (not an image format Pillow knows)"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"


def _readable(
    archive: zipfile.ZipFile, members: list[tuple[int, zipfile.ZipInfo]], cut: Cut
) -> Iterator[tuple[int, Image.Image]]:
    """(number, RGB image) of each usable member in order; the others are listed in `cut.skipped`."""
    for number, info in members:
        found = rgb_image(archive.read(info))
        if isinstance(found, str):
            cut.skipped.append({"file": info.filename, "reason": found})
            log.warning("skipped %s: %s", info.filename, found)
            continue
        picture, mode = found
        if mode in GREY_MODES:
            cut.greyscale.append(info.filename)
        yield number, picture


def _store(out: zipfile.ZipFile, name: str, picture: Image.Image, size: tuple[int, int]) -> None:
    encoded = io.BytesIO()
    picture.resize(size, Image.Resampling.BILINEAR).save(encoded, "JPEG", quality=JPEG_QUALITY)
    entry = zipfile.ZipInfo(name, date_time=_STAMP)
    entry.external_attr = 0o644 << 16
    out.writestr(entry, encoded.getvalue(), compress_type=zipfile.ZIP_STORED)  # JPEG does not deflate


def make_cut(
    archive: Path, target: Path, splits: dict[str, int] | None = None, size: tuple[int, int] = IMAGE_SIZE
) -> Cut:
    """Write the cut of the PetImages zip `archive` to the zip `target` (atomically: nothing is left on error)."""
    cut = Cut(dict(splits or SPLITS), size)
    wanted = sum(cut.splits.values())
    with zipfile.ZipFile(archive) as source, atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w") as out:
        for folder, members in numbered_members(source).items():
            cls = CLASSES[folder]
            chosen = itertools.islice(_readable(source, members, cut), wanted)
            labels = (split for split, n in cut.splits.items() for _ in range(n))
            written = 0
            for (number, picture), split in zip(chosen, labels, strict=False):
                _store(out, f"cats_vs_dogs/{split}/{cls}/{cls[:-1]}.{number:05d}.jpg", picture, size)
                written += 1
            if written < wanted:
                raise PetImagesError(
                    f"{archive}: PetImages/{folder}/ holds {written} readable images, the cut needs {wanted} "
                    f"({', '.join(f'{n} {s}' for s, n in cut.splits.items())}): the archive is not the expected one"
                )
    log.info(
        "cut %s per class from %s: %d file(s) skipped, %d greyscale image(s) made RGB",
        "/".join(str(n) for n in cut.splits.values()),
        archive.name,
        len(cut.skipped),
        len(cut.greyscale),
    )
    return cut
