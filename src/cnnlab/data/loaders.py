"""Readers for the formats data sets come in: IDX, Keras' mnist.npz, CIFAR's python batches,
and folders or zips of `<split>/<class>/<image>` or `<class>/<image>` files (see `layouts`).

Every reader returns uint8 images shaped (n, height, width, channels) and int64 labels.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import logging
import multiprocessing
import os
import pickle
import tarfile
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike
from PIL import Image, UnidentifiedImageError

from cnnlab.data.errors import DataFormatError
from cnnlab.data.layouts import CLASS_LAYOUT, IMAGE_SUFFIXES, SPLIT_NAMES, Listing, classify, draw_splits
from cnnlab.data.splits import Arrays
from cnnlab.params import CustomSplit, ImageLimits
from cnnlab.util.images import ImageTooLarge, opened

log = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "SPLIT_NAMES", "DataFormatError"]  # still importable from here
DECODE_CHUNK = 2_000  # images per task of the decoding processes
_IDX_DTYPES: dict[int, DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path: Path | str) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed): magic, dimensions, then the data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataFormatError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFormatError(f"{path}: header promises {dims} ({expected} bytes) but {len(raw) - header} follow")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def load_idx_folder(folder: Path) -> dict[str, Arrays]:
    """The four MNIST-style IDX files of a folder as train and test arrays."""

    def pair(prefix: str) -> Arrays:
        images = load_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = load_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        if len(images) != len(labels):
            raise DataFormatError(f"{folder}: {len(images)} {prefix} images but {len(labels)} labels")
        return images[..., None].astype(np.uint8), labels.astype(np.int64)

    return {"train": pair("train"), "test": pair("t10k")}


def load_mnist_npz(path: Path) -> dict[str, Arrays]:
    with np.load(path) as f:
        return {
            "train": (f["x_train"][..., None].astype(np.uint8), f["y_train"].astype(np.int64)),
            "test": (f["x_test"][..., None].astype(np.uint8), f["y_test"].astype(np.int64)),
        }


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data and NumPy arrays, and nothing else: a pickle that names any other callable (the way
    a pickle runs code) is a DataFormatError instead."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise DataFormatError(f"the pickle names {module}.{name}: not data, refused")
        return super().find_class(module, name)


def load_cifar_python(path: Path) -> dict[str, Arrays]:
    """CIFAR-10's official `cifar-10-python.tar.gz` (pickled batches of 3x32x32 rows), read with an unpickler
    that builds data and arrays only (the archive's sha256 is checked first, in prepare.read_raw)."""

    def batch(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Arrays:
        fh = tar.extractfile(member)
        assert fh is not None
        data = ArraysOnlyUnpickler(fh, encoding="bytes").load()
        images = np.asarray(data[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, np.asarray(data[b"labels"], dtype=np.int64)

    with tarfile.open(path, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        train = [batch(tar, members[f"data_batch_{i}"]) for i in range(1, 6)]
        test = batch(tar, members["test_batch"])
    return {"train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])), "test": test}


@dataclass
class ImageFolderResult:
    splits: dict[str, Arrays]
    classes: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)
    converted: list[dict[str, str]] = field(default_factory=list)  # file, and "greyscale to colour" or back
    layout: str = ""


SYMLINK = "is a symbolic link: refused, it could point outside the data set"


def folder_files(source: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The regular files below `source` (relative names, sorted), and the symbolic links refused there (never
    followed, whether to a file or a folder)."""
    names, refused = [], []
    for folder, dirs, files in os.walk(source):  # os.walk does not descend into linked folders
        here = Path(folder)
        for name in sorted([*dirs, *files]):
            if (here / name).is_symlink():
                refused.append({"file": str((here / name).relative_to(source)), "reason": SYMLINK})
        names += [str((here / name).relative_to(source)) for name in files if not (here / name).is_symlink()]
    return sorted(names), sorted(refused, key=lambda entry: entry["file"])


def listing(source: Path) -> Listing:
    """The layout of a zip or folder and (name, split, class) of every image file below it, sorted by name; the
    entries refused without being read (symbolic links, absolute or `..` names) are in `refused`."""
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            names = sorted(info.filename for info in archive.infolist() if not info.is_dir())
        refused: list[dict[str, str]] = []
    elif source.is_dir():
        names, refused = folder_files(source)
    else:
        raise DataFormatError(f"{source}: neither a folder nor a zip of <split>/<class>/<image> or <class>/<image>")
    found = classify(names, str(source))
    found.refused = sorted([*refused, *found.refused], key=lambda entry: entry["file"])
    return found


def over_limits(size: int, packed: int | None, limits: ImageLimits) -> str | None:
    """Why a file of `size` bytes (`packed` in its zip) is not read, or None if it is within the limits."""
    if size > limits.max_member_mib * 2**20:
        return f"is {size / 2**20:.1f} MiB, over the limit of {limits.max_member_mib:g} (data.limits.max_member_mib)"
    if packed is not None and size / max(packed, 1) > limits.max_compression_ratio:
        return (
            f"compresses {size / max(packed, 1):.0f}:1, over the limit of {limits.max_compression_ratio:g}:1 "
            "(data.limits.max_compression_ratio)"
        )
    return None


def _read(source: Path, names: list[str], limits: ImageLimits) -> Iterator[bytes | str]:
    """The bytes of the files `names` (from `_listing`) of a zip or a folder, in order; for a file over the
    limits, the reason instead, and the file is not read (a zip member's declared size is all zipfile reads)."""
    if source.is_dir():
        for name in names:
            path = source / name
            yield over_limits(path.stat().st_size, None, limits) or path.read_bytes()
        return
    with zipfile.ZipFile(source) as archive:
        for name in names:
            info = archive.getinfo(name)
            yield over_limits(info.file_size, info.compress_size, limits) or archive.read(info)


GREYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "F")
Decoded = tuple[np.ndarray, str | None] | str  # (the image, how its colours were converted) or why it is skipped


def conversion(mode: str, channels: int) -> str | None:
    """How an image of Pillow `mode` is converted for a data set of `channels` (None: it fits as it is)."""
    grey = mode in GREYSCALE_MODES
    if channels == 3 and grey:
        return "greyscale to colour"
    return "colour to greyscale" if channels == 1 and not grey else None


def _decode(data: bytes | str, size: tuple[int, int], channels: int, resize: bool, megapixels: float) -> Decoded:
    """The image as a uint8 array and its colour conversion, or the reason it cannot be used (`data` itself when
    it is one already)."""
    if isinstance(data, str):
        return data
    try:
        with opened(data, megapixels) as img:
            img.load()
            converted = conversion(img.mode, channels)
            picture = img.convert("RGB" if channels == 3 else "L")
            if picture.size != (size[1], size[0]):
                if not resize:
                    return f"is {picture.size[0]}x{picture.size[1]}, expected {size[1]}x{size[0]}"
                picture = picture.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(picture, dtype=np.uint8)
    except ImageTooLarge as exc:
        return str(exc)
    except UnidentifiedImageError:  # its message names a memory address: meta.json must not change run to run
        return "unreadable (not an image format Pillow knows)"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    return (array if channels == 3 else array[..., None]), converted


def _decode_all(
    files: list[bytes | str], size: tuple[int, int], channels: int, resize: bool, megapixels: float
) -> list[Decoded]:
    return [_decode(data, size, channels, resize, megapixels) for data in files]


def _decoded(
    source: Path,
    names: list[str],
    size: tuple[int, int],
    channels: int,
    resize: bool,
    workers: int,
    limits: ImageLimits,
) -> Iterator[Decoded]:
    """Each file of `names` decoded, in order: in chunks over `workers` processes where there is enough to share.

    This process reads the files (a zip's directory is parsed once) and the workers decode them.
    """
    files = _read(source, names, limits)
    chunks = (list(itertools.islice(files, DECODE_CHUNK)) for _ in range(0, len(names), DECODE_CHUNK))
    decode = functools.partial(
        _decode_all, size=size, channels=channels, resize=resize, megapixels=limits.max_megapixels
    )
    if min(workers, -(-len(names) // DECODE_CHUNK)) <= 1:
        yield from (image for chunk in chunks for image in decode(chunk))
        return
    # fork: the workers need nothing but this module, and a data stage has no threads that fork could break
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for done, chunk in enumerate(pool.map(decode, chunks), start=1):
            if done % max(1, 10_000 // DECODE_CHUNK) == 0:
                log.info("  %s: %d of %d images read", source.name, done * DECODE_CHUNK, len(names))
            yield from chunk


def load_image_folder(
    source: Path,
    image_size: tuple[int, int],
    channels: int = 3,
    resize: bool = False,
    workers: int | None = None,
    limits: ImageLimits | None = None,
    split: CustomSplit | None = None,
) -> ImageFolderResult:
    """Load `<split>/<class>/<image>` or `<class>/<image>` from a folder or a zip, decoding on `workers` processes
    (default: every core); a `<class>/<image>` folder is split by `split` (stratified, seeded).

    Unreadable images, images of the wrong shape, files over `limits` and symbolic links are skipped, and each
    is listed with its reason (never a crash half way, never silently); greyscale images of a colour set are
    converted to colour (and back for a greyscale set), and each is listed.
    """
    source, limits = Path(source), limits or ImageLimits()
    found = listing(source)
    if found.errors:
        more = f" (and {len(found.errors) - 3} more: `cnnlab check` lists them)" if len(found.errors) > 3 else ""
        raise DataFormatError("; ".join(found.errors[:3]) + more)
    if found.layout == CLASS_LAYOUT and split is None:
        raise DataFormatError(f"{source}: a folder of {CLASS_LAYOUT} needs split fractions (data.custom.<name>.split)")
    skipped = list(found.refused)
    for refused in skipped:
        log.warning("skipped %s: %s", refused["file"], refused["reason"])
    images: list[np.ndarray] = []
    kept: list[tuple[str, str | None, str]] = []
    converted: list[dict[str, str]] = []
    workers = workers or os.cpu_count() or 1
    decoded = _decoded(source, [n for n, _, _ in found.images], image_size, channels, resize, workers, limits)
    for entry, image in zip(found.images, decoded, strict=True):
        if isinstance(image, str):
            skipped.append({"file": entry[0], "reason": image})
            log.warning("skipped %s: %s", entry[0], image)
            continue
        images.append(image[0])
        kept.append(entry)
        if image[1]:
            converted.append({"file": entry[0], "conversion": image[1]})
    if not images:
        raise DataFormatError(f"{source}: no readable images found under <split>/<class>/ or <class>/")
    classes = sorted({cls for _, _, cls in kept})
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[cls] for _, _, cls in kept], dtype=np.int64)
    if found.layout == CLASS_LAYOUT:
        assert split is not None
        where = list(draw_splits(labels, classes, split, str(source)))
    else:
        where = [s for _, s, _ in kept]
    rows = {name: [i for i, s in enumerate(where) if s == name] for name in dict.fromkeys(where)}
    splits = {name: (np.stack([images[i] for i in r]), labels[r]) for name, r in rows.items()}
    if skipped:
        log.warning("%d image(s) skipped in %s", len(skipped), source)
    for kind in sorted({c["conversion"] for c in converted}):
        log.info("%d image(s) converted %s in %s", sum(c["conversion"] == kind for c in converted), kind, source)
    return ImageFolderResult(splits, classes, skipped, converted, found.layout)
