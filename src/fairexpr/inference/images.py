"""Reading photos for inference: EXIF orientation applied, pixel-count limit checked before decoding."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..data.base import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
DEFAULT_MAX_PIXELS = 40_000_000


def decode_rgb(data: bytes | Path | str, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode bytes or a file into RGB ``uint8 [H, W, 3]``; raises :class:`DataError` naming ``name`` when
    the input is empty, not an image, or larger than ``max_pixels`` (checked from the header, before decoding)."""
    if isinstance(data, (str, Path)):
        name = str(data)
        p = Path(data)
        if not p.is_file():
            raise DataError(f"{name}: file not found")
        data = p.read_bytes()
    if not data:
        raise DataError(f"{name}: file is empty (0 bytes); expected an image")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        # PIL's own bomb limit sits above ours; name only the limit the user can change (--max-pixels)
        raise DataError(f"{name}: image has more pixels than the limit of {max_pixels}") from None
    except Exception as e:
        raise DataError(f"{name}: not a readable image ({type(e).__name__})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise DataError(f"{name}: image has {w}x{h} = {w * h} pixels, more pixels than the limit of {max_pixels}")
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:
        raise DataError(f"{name}: cannot decode as an image ({type(e).__name__}: {e})") from None
