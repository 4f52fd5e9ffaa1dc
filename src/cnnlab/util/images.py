"""Opening an image file that may be hostile: its size is checked from the header, before any pixel is decoded."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from cnnlab.util.errors import UserError

MAX_MEGAPIXELS = 40.0  # the default of params' data.limits.max_megapixels


class ImageTooLarge(UserError, ValueError):
    """An image whose header promises more pixels than the limit (a decompression bomb, or just too big)."""


@contextmanager
def opened(source: Path | bytes, max_megapixels: float = MAX_MEGAPIXELS) -> Iterator[Image.Image]:
    """The image, opened but not decoded (`load()` or `convert()` decodes it), once its header's width x height
    is within `max_megapixels`; otherwise ImageTooLarge, before a pixel is decoded.

    Pillow's own bomb check is replaced by this one: it only warns below 179 megapixels, and above that raises
    an error that is not an OSError.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except Image.DecompressionBombError:
            image = None
    if image is None or image.width * image.height > max_megapixels * 1e6:
        if image is not None:
            image.close()
        size = "" if image is None else f" ({image.width}x{image.height})"
        raise ImageTooLarge(
            f"its header promises more than {max_megapixels:g} megapixels{size}, the limit "
            "(data.limits.max_megapixels); not decoded"
        )
    with image:
        yield image
