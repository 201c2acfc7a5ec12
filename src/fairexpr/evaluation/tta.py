"""Test-time augmentation (TTA): predict on several views of each face and average.

Modes (``TTA_MODES``):

- ``none``  — the face as given (one forward pass).
- ``hflip`` — the face and its horizontal mirror (two passes). Expressions are left/right symmetric as classes,
  and every fairexpr recipe trains with random flips, so the mirror is an equally valid view.

With views ``v = 1..V`` and logits ``z_v`` the combined outputs are

    p   = (1/V) Σ_v softmax(z_v / T)        (probabilities: the mean of the views' probabilities)
    z   = (1/V) Σ_v z_v                      (logits, kept for calibration / analysis)
    emb = (1/V) Σ_v emb_v                    (embeddings)

Averaging probabilities (not logits) is what the FER literature reports as "flip TTA" and keeps ``p`` a
calibrated mixture; note ``softmax(z / T) != p`` in general. ``tta_views`` works on NumPy arrays and torch
tensors of shape ``[..., H, W]``; landmarks given as ``[B, 5, 2]`` fractions are mirrored with ``x -> 1 - x`` and
the left/right points swapped (``fairexpr.data.landmarks.FLIP_ORDER``).
"""
from __future__ import annotations

from typing import Any, Sequence

from ..config import TTA_MODES  # the valid modes are part of the config schema (train.eval_tta)


def check_tta(mode: Any, where: str = "tta") -> str:
    """Return ``mode`` if it is a known TTA mode; raise ``ValueError`` naming ``where`` otherwise."""
    if mode is None:
        return "none"
    if not isinstance(mode, str) or mode not in TTA_MODES:
        raise ValueError(f"{where} must be one of {'|'.join(TTA_MODES)}, got {mode!r}")
    return mode


def num_views(mode: str) -> int:
    return {"none": 1, "hflip": 2}[check_tta(mode)]


def _hflip(x: Any) -> Any:
    if hasattr(x, "flip"):  # torch.Tensor
        return x.flip(-1)
    import numpy as np

    return np.ascontiguousarray(np.asarray(x)[..., ::-1])


def _flip_landmarks(lm: Any) -> Any:
    from ..data.landmarks import FLIP_ORDER

    order = list(FLIP_ORDER)
    if hasattr(lm, "flip"):  # torch
        out = lm[:, order].clone()
        out[..., 0] = 1.0 - out[..., 0]
        return out
    import numpy as np

    out = np.array(np.asarray(lm)[:, order], copy=True)
    out[..., 0] = 1.0 - out[..., 0]
    return out


def tta_views(x: Any, mode: str, landmarks: Any = None) -> list[tuple[Any, Any]]:
    """The ``(images, landmarks)`` views of a batch for ``mode`` (the original first)."""
    mode = check_tta(mode)
    views = [(x, landmarks)]
    if mode == "hflip":
        views.append((_hflip(x), None if landmarks is None else _flip_landmarks(landmarks)))
    return views


def mean_views(values: Sequence[Any]) -> Any:
    """Element-wise mean of equally shaped arrays/tensors (the views' outputs)."""
    if len(values) == 0:
        raise ValueError("mean_views needs at least one view")
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total / len(values) if len(values) > 1 else total


__all__ = ["TTA_MODES", "check_tta", "mean_views", "num_views", "tta_views"]
