"""Five-point facial landmarks carried with a dataset (for the AGRA/DIFC local head, ``models.agra``).

None of the distributed FER layouts ships landmarks, so they come from a sidecar CSV named in the data role's
options, e.g. ``data.train_options: {landmarks: fer2013_landmarks.csv}`` (any detector's output: MTCNN,
RetinaFace, dlib reduced to five points). Format (header required)::

    path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5
    train/angry/Training_10118481.jpg,0.33,0.41,0.66,0.41,0.50,0.58,0.36,0.78,0.63,0.78

* ``path``: the image's path relative to the dataset root given in the spec (or absolute);
* five (x, y) pairs as **fractions of the image width / height** (0..1; they survive the resize to
  ``data.image_size``), in the order :data:`POINTS` — image-left eye, image-right eye, nose tip, image-left
  mouth corner, image-right mouth corner ("image-left" = smaller x).

Every image of the split must have a row (a missing one is an error listing the first few, never a silently
dropped sample); rows for images the split does not hold are ignored (one file can serve several splits).

Under augmentation the points follow the same affine as the pixels (:func:`augment_landmarks`); a horizontal
flip mirrors them and swaps the left/right pairs so the order keeps meaning image-left first.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .augment import AugmentConfig, apply_params_points
from .base import DataError

POINTS = ("image_left_eye", "image_right_eye", "nose", "image_left_mouth", "image_right_mouth")
#: index permutation applied after a horizontal flip
FLIP_ORDER = (1, 0, 2, 4, 3)
COLUMNS = ("path",) + tuple(f"{a}{i}" for i in range(1, 6) for a in ("x", "y"))


def read_landmark_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{path key: float32 [5, 2]}`` from a landmark CSV (module docstring); every problem names the row."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"landmarks: {p} does not exist (expected a CSV with columns {', '.join(COLUMNS)})")
    out: dict[str, np.ndarray] = {}
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"landmarks: {p}: header lacks {', '.join(missing)} (expected {','.join(COLUMNS)})")
        for line, row in enumerate(reader, start=2):
            key = (row["path"] or "").strip()
            if not key:
                raise DataError(f"landmarks: {p}:{line}: empty path")
            try:
                vals = np.array([float(row[c]) for c in COLUMNS[1:]], dtype=np.float32).reshape(5, 2)
            except (TypeError, ValueError):
                raise DataError(f"landmarks: {p}:{line}: coordinates must be numbers, got "
                                f"{[row[c] for c in COLUMNS[1:]]}") from None
            if not np.isfinite(vals).all() or (vals < 0).any() or (vals > 1).any():
                raise DataError(f"landmarks: {p}:{line}: coordinates must be fractions of the image width/height in "
                                f"[0, 1] (divide pixel coordinates by the image size), got {vals.ravel().tolist()}")
            if key in out:
                raise DataError(f"landmarks: {p}:{line}: duplicate row for {key!r}")
            out[key] = vals
    if not out:
        raise DataError(f"landmarks: {p}: no rows")
    return out


def landmarks_for(sample_paths: Sequence[str], table: dict[str, np.ndarray], root: str | os.PathLike | None,
                  source: str) -> np.ndarray:
    """``float32 [N, 5, 2]`` for the samples, looked up by path relative to ``root`` (then as given)."""
    out = np.empty((len(sample_paths), 5, 2), dtype=np.float32)
    missing: list[str] = []
    rootp = Path(root).resolve() if root else None
    for i, sp in enumerate(sample_paths):
        keys = []
        if rootp is not None:
            try:
                keys.append(Path(sp).resolve().relative_to(rootp).as_posix())
            except ValueError:
                pass
        keys += [str(sp), Path(sp).as_posix()]
        hit = next((table[k] for k in keys if k in table), None)
        if hit is None:
            missing.append(keys[0])
        else:
            out[i] = hit
    if missing:
        raise DataError(f"landmarks: {source} has no row for {len(missing)} of {len(sample_paths)} images "
                        f"(first: {missing[:3]}); keys are paths relative to {rootp or 'the dataset root'}")
    return out


def flip_order(points: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """Swap the left/right pairs of the flipped samples so index 0 stays the image-left eye."""
    perm = torch.as_tensor(FLIP_ORDER, device=points.device)
    return torch.where(flipped.to(points.device).view(-1, 1, 1), points[:, perm], points)


def augment_landmarks(points: torch.Tensor, params: dict[str, torch.Tensor], cfg: AugmentConfig, h: int,
                      w: int) -> torch.Tensor:
    """Landmarks ``[B, 5, 2]`` of the augmented images (same parameters as the pixels), re-ordered after flips."""
    moved = apply_params_points(points, params, cfg, h, w)
    return flip_order(moved, params["flip"]) if cfg.hflip else moved


def split_root(spec: str) -> str | None:
    """The dataset directory of a ``FORMAT:PATH`` spec (for relative landmark keys)."""
    _, _, path = spec.partition(":")
    if not path:
        return None
    p = Path(os.path.expandvars(path))
    return str(p if p.is_dir() else p.parent)


def attach_options(options: dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """Split the ``landmarks`` entry off a data role's adapter options."""
    opts = dict(options or {})
    return opts, opts.pop("landmarks", None)


__all__ = ["COLUMNS", "FLIP_ORDER", "POINTS", "attach_options", "augment_landmarks", "flip_order",
           "landmarks_for", "read_landmark_file", "split_root"]
