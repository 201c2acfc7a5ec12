"""Model preprocessing read from the checkpoint sidecar (never re-specified by hand) — numpy only.

The sidecar's ``preprocess`` block ``{input_size: [H, W], in_chans, mean, std}`` fully determines how a
face crop becomes the network input. This module deliberately imports neither torch nor torchvision so
that the onnxruntime path stays torch-free.

Channels and resizing follow the training decoder (:func:`fairexpr.data.cache._decode`) exactly: Pillow's
``convert("L")`` / ``convert("RGB")`` first, then ``Image.resize(..., BILINEAR)`` (antialiased when shrinking),
so a face crop gives the network the same pixels at inference as the same image file gave it in training
(tested bit-exactly).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from ..data.base import DataError


@dataclass(frozen=True)
class Preprocess:
    """Resize -> channels -> scale to [0, 1] -> ``(x - mean) / std``, output ``float32 [C, H, W]``."""

    input_size: tuple[int, int]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_sidecar(cls, block: Mapping[str, Any], where: str = "sidecar") -> "Preprocess":
        """Validate and build from a sidecar ``preprocess`` block (``where`` names the source in errors)."""
        if not isinstance(block, Mapping):
            raise DataError(f"{where}: 'preprocess' must be a mapping with input_size, in_chans, mean, std")
        missing = [k for k in ("input_size", "in_chans", "mean", "std") if k not in block]
        if missing:
            raise DataError(f"{where}: 'preprocess' is missing {missing}; expected input_size, in_chans, mean, std")
        size = block["input_size"]
        if isinstance(size, int):
            size = (size, size)
        if len(size) != 2 or min(int(s) for s in size) < 1:
            raise DataError(f"{where}: preprocess.input_size must be [H, W] of positive ints, got {size!r}")
        c = int(block["in_chans"])
        if c not in (1, 3):
            raise DataError(f"{where}: preprocess.in_chans must be 1 or 3, got {c}")
        mean, std = _per_channel(block["mean"], c, "mean", where), _per_channel(block["std"], c, "std", where)
        if any(s <= 0 for s in std):
            raise DataError(f"{where}: preprocess.std must be positive, got {std}")
        return cls((int(size[0]), int(size[1])), c, mean, std)

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "in_chans": self.in_chans, "mean": list(self.mean),
                "std": list(self.std)}

    def __call__(self, face: np.ndarray) -> np.ndarray:
        """One face crop (``uint8`` HxW gray or HxWx3 RGB) -> normalized ``float32 [C, H, W]``."""
        face = np.asarray(face)
        if face.ndim == 3 and face.shape[2] == 1:
            face = face[:, :, 0]
        if face.ndim not in (2, 3) or (face.ndim == 3 and face.shape[2] != 3) or face.size == 0:
            raise DataError(f"face crop must be HxW or HxWx3 uint8, got shape {face.shape}")
        h, w = self.input_size
        mode = "L" if self.in_chans == 1 else "RGB"
        if face.shape[:2] != (h, w) or (face.ndim == 2) != (mode == "L"):
            im = Image.fromarray(np.ascontiguousarray(face, dtype=np.uint8))
            if im.mode != mode:
                im = im.convert(mode)  # ITU-R 601 luma for grey models, as the training decoder
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            face = np.asarray(im)
        x = face.astype(np.float32) / 255.0
        x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    def batch(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Stack preprocessed faces into ``float32 [B, C, H, W]``."""
        c, (h, w) = self.in_chans, self.input_size
        if not faces:
            return np.zeros((0, c, h, w), np.float32)
        return np.stack([self(f) for f in faces])


def _per_channel(v: Any, c: int, name: str, where: str) -> tuple[float, ...]:
    vals = [float(v)] if isinstance(v, (int, float)) else [float(t) for t in v]
    if len(vals) == 1:
        vals = vals * c
    if len(vals) != c:
        raise DataError(f"{where}: preprocess.{name} has {len(vals)} values for in_chans={c}")
    return tuple(vals)
