"""Helpers to build tiny fixture trees in the exact published layouts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, size: int = 8, color: bool = False, value: int | None = None, fmt: str | None = None) -> Path:
    """Write a small valid image (format from the extension unless ``fmt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    shape = (size, size, 3) if color else (size, size)
    arr = np.full(shape, value, np.uint8) if value is not None else rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture
def img():
    return write_image
