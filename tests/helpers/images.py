"""Small image files and folder trees for the loaders and for a user's own data set."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import yaml
from PIL import Image

from helpers.project import ROOT


def png(color: tuple[int, ...] | int, mode: str = "RGB", size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_cmyk() -> bytes:
    """A CMYK JPEG, as some real photo collections (cats vs dogs) contain: usable as RGB."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()


def image_tree() -> dict[str, bytes]:
    """Two classes in train and test, plus one corrupt file and one greyscale image."""
    return {
        "train/cat/a.png": png((255, 0, 0)),
        "train/cat/b.png": png((250, 0, 0)),
        "train/dog/c.png": png((0, 0, 255)),
        "train/dog/grey.png": png(128, mode="L"),
        "train/dog/broken.jpg": b"this is not a jpeg",
        "test/cat/d.png": png((255, 0, 0)),
        "test/dog/e.png": png((0, 0, 255)),
        "test/dog/big.png": png((0, 0, 255), size=(16, 16)),
        "test/cat/cmyk.jpg": jpeg_cmyk(),
    }


def own_data_params(source: Path) -> dict:
    """The project's params with a data set `pets` of the user's own images at `source`, and an experiment on it."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["custom"] = {"pets": {"path": str(source), "image_size": [8, 8], "channels": 3}}
    raw["datasets"].append("pets")
    raw["experiments"]["OWN"] = {"dataset": "pets", "model": "F1", "validation": 0.5, "epochs": 1}
    return raw


def own_tree() -> dict[str, bytes]:
    """image_tree() plus enough training images for a stratified validation split."""
    extra = {
        f"train/{cls}/extra{i}.png": data
        for cls, data in [("cat", png((200, 0, 0))), ("dog", png((0, 0, 200)))]
        for i in range(3)
    }
    return {**image_tree(), **extra}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A greyscale PNG's signature and IHDR chunk (8-bit, no interlace)."""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG of a few dozen bytes whose header claims width x height pixels (900 megapixels by default)."""
    return png_header(width, height) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def black_png(path: Path, width: int, height: int) -> Path:
    """A real, valid black greyscale PNG of width x height, written without ever holding its pixels in memory."""
    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # the filter byte, then the pixels
    with open(path, "wb") as out:
        out.write(png_header(width, height))
        data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
        out.write(_chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path
