"""Test-time augmentation (TTA): predict on several views of each face and average.

Modes (``TTA_MODES``):

- ``none``  — the face as given (one forward pass).
- ``hflip`` — the face and its horizontal mirror (two passes). Expressions are left/right symmetric as classes,
  and every fairexpr recipe trains with random flips, so the mirror is an equally valid view.
- ``crops`` — the face, and five crops covering ``CROP_FRACTION`` (95 %) of each side (centre and the four
  corners) resized back to the input size, each view also mirrored: twelve passes (the FER2013 papers' "ten-crop"
  plus the whole face). Every recipe trains on random resized crops of 75–100 % of the area, so these are
  in-distribution views. The fraction and the view set were chosen on FER2013 PublicTest among 14 candidates
  (crops of 85 / 90 / 95 %, with and without the whole face; ``benchmarks/tta_views.py``,
  ``benchmarks/results/tta_views_default.md``); six times the cost of ``hflip``.

With views ``v = 1..V`` and logits ``z_v`` the combined outputs are

    p   = (1/V) Σ_v softmax(z_v / T)        (probabilities: the mean of the views' probabilities)
    z   = (1/V) Σ_v z_v                      (logits, kept for calibration / analysis)
    emb = (1/V) Σ_v emb_v                    (embeddings)

Averaging probabilities (not logits) is what the FER literature reports as "flip TTA" and keeps ``p`` a
calibrated mixture; note ``softmax(z / T) != p`` in general. ``tta_views`` works on NumPy arrays and torch
tensors of shape ``[..., H, W]``; landmarks given as ``[B, 5, 2]`` fractions are mirrored with ``x -> 1 - x`` and
the left/right points swapped (``fairexpr.data.landmarks.FLIP_ORDER``); a crop maps them with
``(p - corner) / crop side``.

The crops are resampled bilinearly with ``align_corners=False`` (what ``torch.nn.functional.interpolate`` does), as
two small matrix products ``R_h @ crop @ R_w.T`` so that NumPy arrays (the ONNX predictor) and torch tensors get the
same pixels without a round trip between them.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

from ..config import TTA_MODES  # the valid modes are part of the config schema (train.eval_tta)


def check_tta(mode: Any, where: str = "tta") -> str:
    """Return ``mode`` if it is a known TTA mode; raise ``ValueError`` naming ``where`` otherwise."""
    if mode is None:
        return "none"
    if not isinstance(mode, str) or mode not in TTA_MODES:
        raise ValueError(f"{where} must be one of {'|'.join(TTA_MODES)}, got {mode!r}")
    return mode


#: the side fraction of the ``crops`` mode's five crops (chosen on FER2013 PublicTest, see the module docstring)
CROP_FRACTION = 0.95
#: the crop positions of the ``crops`` mode, in view order
CROP_POSITIONS = ("centre", "top-left", "top-right", "bottom-left", "bottom-right")


def num_views(mode: str) -> int:
    return {"none": 1, "hflip": 2, "crops": 2 * (1 + len(CROP_POSITIONS))}[check_tta(mode)]


def tta_label(mode: str) -> str:
    """A short human label of a mode for tables and CLI output ("" for none)."""
    return {"none": "", "hflip": "flip TTA", "crops": f"crop TTA, {num_views('crops')} views"}[check_tta(mode)]


#: ``--tta auto`` (the CLI's default for predict / eval / serve): the mode the model itself recommends
AUTO = "auto"


def recommended_tta(sidecar: Any, where: str = "checkpoint") -> str:
    """The TTA mode a model's sidecar recommends (``{"inference": {"tta": MODE}}``; ``"none"`` when it names none).

    A packaged model sets it to the mode its published figures were measured with (the shipped default: ``crops``,
    the mode in which it meets issue 14's bar), so ``fairexpr predict photo.jpg`` gives what the model card reports.
    A run trained by the user has no such key: ``none``. Raises ``ValueError`` naming ``where`` when it is malformed."""
    inf = sidecar.get("inference") if hasattr(sidecar, "get") else None
    if inf is None:
        return "none"
    if not hasattr(inf, "get"):
        raise ValueError(f"{where}: inference must be a mapping like {{'tta': 'crops'}}, got {inf!r}")
    return check_tta(inf.get("tta", "none"), f"{where}: inference.tta")


def check_requested(requested: Any, where: str = "checkpoint") -> str:
    """A requested mode: one of ``TTA_MODES`` or ``"auto"`` (``None`` = ``"none"``); ``ValueError`` naming ``where``
    otherwise. Lets a caller refuse a bad request before it loads anything."""
    if requested is None:
        return "none"
    if requested != AUTO and requested not in TTA_MODES:
        raise ValueError(f"{where}: tta must be one of {AUTO}|{'|'.join(TTA_MODES)}, got {requested!r}")
    return requested


def resolve_tta(requested: Any, sidecar: Any, where: str = "checkpoint") -> str:
    """``requested`` if it is a mode, the sidecar's :func:`recommended_tta` if it is ``"auto"``."""
    requested = check_requested(requested, where)
    return recommended_tta(sidecar, where) if requested == AUTO else requested


@lru_cache(maxsize=64)
def resize_matrix(c: int, n: int) -> Any:
    """``[n, c]`` NumPy matrix of bilinear weights (``align_corners=False``, source coordinates clamped to the
    edges) taking ``c`` samples to ``n``: ``R_h @ img @ R_w.T`` is ``F.interpolate(img, (n_h, n_w), mode="bilinear")``.
    Cached (a predictor asks for the same few sizes on every batch), so the array is read-only."""
    import numpy as np

    if c < 1 or n < 1:
        raise ValueError(f"resize_matrix needs positive sizes, got {c} -> {n}")
    r = np.zeros((n, c), np.float64)
    for i in range(n):
        src = max((i + 0.5) * c / n - 0.5, 0.0)
        i0 = min(int(np.floor(src)), c - 1)
        i1 = min(i0 + 1, c - 1)
        w = src - i0
        r[i, i0] += 1.0 - w
        r[i, i1] += w
    r.setflags(write=False)
    return r


def crop_box(h: int, w: int, frac: float, pos: str) -> tuple[int, int, int, int]:
    """``(y0, x0, ch, cw)``: the crop covering ``frac`` of each side of an ``h x w`` image at ``pos`` (one of
    ``CROP_POSITIONS``; the centre offset rounds down)."""
    ch, cw = int(round(frac * h)), int(round(frac * w))
    if not (0 < ch <= h and 0 < cw <= w):
        raise ValueError(f"crop fraction {frac} gives a {ch}x{cw} crop of a {h}x{w} image")
    oy, ox = h - ch, w - cw
    corners = {"centre": (oy // 2, ox // 2), "top-left": (0, 0), "top-right": (0, ox), "bottom-left": (oy, 0),
               "bottom-right": (oy, ox)}
    if pos not in corners:
        raise ValueError(f"crop position must be one of {', '.join(CROP_POSITIONS)}, got {pos!r}")
    y0, x0 = corners[pos]
    return y0, x0, ch, cw


def crop_resize(x: Any, frac: float, pos: str) -> Any:
    """The ``frac`` crop at ``pos`` of images ``[..., H, W]`` (NumPy or torch), resized back to ``H x W``."""
    h, w = x.shape[-2:]
    y0, x0, ch, cw = crop_box(h, w, frac, pos)
    rh, rw = resize_matrix(ch, h), resize_matrix(cw, w)
    if hasattr(x, "flip"):  # torch.Tensor
        import torch

        rh_t = torch.tensor(rh, dtype=x.dtype, device=x.device)  # a copy: the cached matrix is read-only
        rw_t = torch.tensor(rw, dtype=x.dtype, device=x.device)
        return (rh_t @ x[..., y0:y0 + ch, x0:x0 + cw] @ rw_t.T).contiguous()
    import numpy as np

    a = np.asarray(x)
    return np.ascontiguousarray((rh @ a[..., y0:y0 + ch, x0:x0 + cw] @ rw.T).astype(a.dtype, copy=False))


def crop_landmarks(lm: Any, h: int, w: int, frac: float, pos: str) -> Any:
    """Landmarks ``[B, 5, 2]`` as (x, y) fractions of the image -> the same points as fractions of the crop."""
    y0, x0, ch, cw = crop_box(h, w, frac, pos)
    if hasattr(lm, "flip"):  # torch
        import torch

        off = torch.tensor([x0 / w, y0 / h], dtype=lm.dtype, device=lm.device)
        scale = torch.tensor([w / cw, h / ch], dtype=lm.dtype, device=lm.device)
        return (lm - off) * scale
    import numpy as np

    a = np.asarray(lm)
    return ((a - np.array([x0 / w, y0 / h])) * np.array([w / cw, h / ch])).astype(a.dtype, copy=False)


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
    if mode == "crops":
        h, w = x.shape[-2:]
        views += [(crop_resize(x, CROP_FRACTION, pos),
                   None if landmarks is None else crop_landmarks(landmarks, h, w, CROP_FRACTION, pos))
                  for pos in CROP_POSITIONS]
    if mode in ("hflip", "crops"):
        views += [(_hflip(v), None if lm is None else _flip_landmarks(lm)) for v, lm in list(views)]
    return views


def mean_views(values: Sequence[Any]) -> Any:
    """Element-wise mean of equally shaped arrays/tensors (the views' outputs)."""
    if len(values) == 0:
        raise ValueError("mean_views needs at least one view")
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total / len(values) if len(values) > 1 else total


__all__ = ["AUTO", "CROP_FRACTION", "CROP_POSITIONS", "TTA_MODES", "check_tta", "crop_box", "crop_landmarks", "crop_resize",
           "check_requested", "mean_views", "num_views", "recommended_tta", "resize_matrix", "resolve_tta", "tta_label", "tta_views"]
