"""A data set of your own as a user would bring it: a zip of `<class>/<image>` folders of drawn shapes."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def shape_png(kind: str, rng: np.random.Generator, size: int = 32, grey: bool = False) -> bytes:
    """A red disc or a blue square of random size and place on a dark background."""
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 60, 3)))
    x, y = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
    r = int(rng.integers(size // 6, size // 4))
    low, high = (int(v) for v in rng.integers(0, 90, 2))
    if kind == "disc":
        ImageDraw.Draw(image).ellipse([x - r, y - r, x + r, y + r], fill=(int(rng.integers(170, 256)), low, high))
    else:
        ImageDraw.Draw(image).rectangle([x - r, y - r, x + r, y + r], fill=(low, high, int(rng.integers(170, 256))))
    buffer = io.BytesIO()
    (image.convert("L") if grey else image).save(buffer, format="PNG")
    return buffer.getvalue()


def shapes_zip(path: Path, per_class: int = 40, grey: int = 2, extra: dict[str, bytes] | None = None) -> Path:
    """`shapes/disc/*.png` and `shapes/square/*.png`, the first `grey` of each class greyscale, one corrupt file
    and a note that is not an image; `extra` entries are added as they are."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        for kind in ("disc", "square"):
            for i in range(per_class):
                archive.writestr(f"shapes/{kind}/{i:03d}.png", shape_png(kind, rng, grey=i < grey))
        archive.writestr("shapes/square/corrupt.png", b"\x89PNG\r\n\x1a\n but not really")
        archive.writestr("shapes/README.txt", b"discs and squares")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path
