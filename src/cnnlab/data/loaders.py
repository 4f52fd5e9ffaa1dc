"""Readers for the formats data sets come in: IDX, Keras' mnist.npz, CIFAR's python batches,
and folders or zips of `<split>/<class>/<image>` files.

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

from cnnlab.data.splits import Arrays
from cnnlab.params import ImageLimits
from cnnlab.util.errors import UserError
from cnnlab.util.images import ImageTooLarge, opened

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "test": "test"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
DECODE_CHUNK = 2_000  # images per task of the decoding processes
_IDX_DTYPES: dict[int, DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataFormatError(UserError, ValueError):
    """A file does not hold what its format promises."""


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


def _listing(source: Path) -> tuple[list[tuple[str, str, str]], list[dict[str, str]]]:
    """(name, split, class) of every image file below `source` (a zip or a folder), sorted by name, and the
    entries refused without being read (symbolic links)."""

    def locate(parts: tuple[str, ...]) -> tuple[str, str] | None:
        # <anything>/<split>/<class>/<file>: the split is the third part from the end
        if len(parts) >= 3 and parts[-3].lower() in SPLIT_NAMES and Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES:
            return SPLIT_NAMES[parts[-3].lower()], parts[-2]
        return None

    refused: list[dict[str, str]] = []
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            names = sorted(info.filename for info in archive.infolist() if not info.is_dir())
    elif source.is_dir():
        names, refused = folder_files(source)
    else:
        raise DataFormatError(f"{source}: neither a folder nor a zip of <split>/<class>/<image> files")
    found = ((name, locate(Path(name).parts)) for name in names)
    return [(name, *where) for name, where in found if where], refused


def _over_limits(size: int, packed: int | None, limits: ImageLimits) -> str | None:
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
            yield _over_limits(path.stat().st_size, None, limits) or path.read_bytes()
        return
    with zipfile.ZipFile(source) as archive:
        for name in names:
            info = archive.getinfo(name)
            yield _over_limits(info.file_size, info.compress_size, limits) or archive.read(info)


def _decode(
    data: bytes | str, size: tuple[int, int], channels: int, resize: bool, megapixels: float
) -> np.ndarray | str:
    """The image as a uint8 array, or the reason it cannot be used (`data` itself when it is one already)."""
    if isinstance(data, str):
        return data
    try:
        with opened(data, megapixels) as img:
            img.load()
            mode = img.mode
            colour = ("RGB", "RGBA", "P", "CMYK", "YCbCr")  # all convert losslessly enough to RGB
            if (channels == 3 and mode not in colour) or (channels == 1 and mode not in ("L", "1")):
                return f"has mode {mode}, expected {'RGB' if channels == 3 else 'greyscale'}"
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
    return array if channels == 3 else array[..., None]


def _decode_all(
    files: list[bytes | str], size: tuple[int, int], channels: int, resize: bool, megapixels: float
) -> list[np.ndarray | str]:
    return [_decode(data, size, channels, resize, megapixels) for data in files]


def _decoded(
    source: Path,
    names: list[str],
    size: tuple[int, int],
    channels: int,
    resize: bool,
    workers: int,
    limits: ImageLimits,
) -> Iterator[np.ndarray | str]:
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
) -> ImageFolderResult:
    """Load `<split>/<class>/<image>` from a folder or a zip, decoding on `workers` processes (default: every core).

    Unreadable images, images of the wrong shape, files over `limits` and symbolic links are skipped, and each
    is listed with its reason (never a crash half way, never silently).
    """
    source, limits = Path(source), limits or ImageLimits()
    listing, skipped = _listing(source)
    for entry in skipped:
        log.warning("skipped %s: %s", entry["file"], entry["reason"])
    images: dict[str, list[np.ndarray]] = {}
    names: dict[str, list[str]] = {}
    workers = workers or os.cpu_count() or 1
    decoded = _decoded(source, [n for n, _, _ in listing], image_size, channels, resize, workers, limits)
    for (name, split, cls), image in zip(listing, decoded, strict=True):
        if isinstance(image, str):
            skipped.append({"file": name, "reason": image})
            log.warning("skipped %s: %s", name, image)
            continue
        images.setdefault(split, []).append(image)
        names.setdefault(split, []).append(cls)
    if not images:
        raise DataFormatError(f"{source}: no readable images found under <split>/<class>/ (splits: train, val, test)")
    classes = sorted({c for cs in names.values() for c in cs})
    index = {c: i for i, c in enumerate(classes)}
    splits = {
        split: (np.stack(images[split]), np.array([index[c] for c in names[split]], dtype=np.int64)) for split in images
    }
    if skipped:
        log.warning("%d image(s) skipped in %s", len(skipped), source)
    return ImageFolderResult(splits, classes, skipped)
