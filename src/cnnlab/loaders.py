"""Readers for the formats data sets come in: IDX, Keras' mnist.npz, CIFAR's python batches,
and folders or zips of `<split>/<class>/<image>` files.

Every reader returns uint8 images shaped (n, height, width, channels) and int64 labels.
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

Arrays = tuple[np.ndarray, np.ndarray]
SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "test": "test"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataFormatError(ValueError):
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


def load_cifar_python(path: Path) -> dict[str, Arrays]:
    """CIFAR-10's official `cifar-10-python.tar.gz` (pickled batches of 3x32x32 rows)."""

    def batch(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Arrays:
        fh = tar.extractfile(member)
        assert fh is not None
        # The archive's sha256 was verified before this point, so unpickling is safe.
        data = pickle.load(fh, encoding="bytes")
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


def _entries(source: Path) -> Iterator[tuple[str, tuple[str, str], bytes]]:
    """(name, (split, class), bytes) for every image file below `source` (a zip or a folder)."""

    def locate(parts: tuple[str, ...]) -> tuple[str, str] | None:
        # <anything>/<split>/<class>/<file>: the split is the third part from the end
        if len(parts) >= 3 and parts[-3].lower() in SPLIT_NAMES and Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES:
            return SPLIT_NAMES[parts[-3].lower()], parts[-2]
        return None

    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                where = None if info.is_dir() else locate(tuple(Path(info.filename).parts))
                if where:
                    yield info.filename, where, archive.read(info)
    elif source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            where = locate(path.relative_to(source).parts)
            if where:
                yield str(path.relative_to(source)), where, path.read_bytes()
    else:
        raise DataFormatError(f"{source}: neither a folder nor a zip of <split>/<class>/<image> files")


def _decode(data: bytes, size: tuple[int, int], channels: int, resize: bool) -> np.ndarray | str:
    """The image as a uint8 array, or the reason it cannot be used."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            colour = ("RGB", "RGBA", "P", "CMYK", "YCbCr")  # all convert losslessly enough to RGB
            if (channels == 3 and mode not in colour) or (channels == 1 and mode not in ("L", "1")):
                return f"has mode {mode}, expected {'RGB' if channels == 3 else 'greyscale'}"
            img = img.convert("RGB" if channels == 3 else "L")
            if img.size != (size[1], size[0]):
                if not resize:
                    return f"is {img.size[0]}x{img.size[1]}, expected {size[1]}x{size[0]}"
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    return array if channels == 3 else array[..., None]


def load_image_folder(
    source: Path, image_size: tuple[int, int], channels: int = 3, resize: bool = False
) -> ImageFolderResult:
    """Load `<split>/<class>/<image>` from a folder or a zip.

    Unreadable images and images of the wrong shape are skipped, and each is
    listed with its reason (never a crash half way, never silently).
    """
    images: dict[str, list[np.ndarray]] = {}
    names: dict[str, list[str]] = {}
    skipped = []
    for count, (name, (split, cls), data) in enumerate(_entries(Path(source)), start=1):
        if count % 10_000 == 0:
            log.info("  %s: %d images read", Path(source).name, count)
        decoded = _decode(data, image_size, channels, resize)
        if isinstance(decoded, str):
            skipped.append({"file": name, "reason": decoded})
            log.warning("skipped %s: %s", name, decoded)
            continue
        images.setdefault(split, []).append(decoded)
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
