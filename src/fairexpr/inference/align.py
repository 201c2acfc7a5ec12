"""Face alignment: a similarity transform onto a canonical template when landmarks exist, otherwise a
square crop around the detector box with a configurable margin.

Both paths produce the same framing: the template is expressed in *box coordinates* (fractions of a
frontal detector box, eyes at 38 % of its height) and mapped through the same margin, so a face
aligned by its eyes and a face cropped from its box look alike to the model.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..data.base import DataError
from .detect import Face

#: canonical landmark positions in unit box coordinates (image-left eye, image-right eye, nose tip,
#: image-left mouth corner, image-right mouth corner): the ArcFace 112x112 template rescaled so the
#: eyes sit at (0.31, 0.38) and (0.69, 0.38) of a frontal face box.
TEMPLATE_5PT = np.array([[0.3100, 0.3800], [0.6900, 0.3800], [0.5011, 0.5971], [0.3266, 0.8447],
                         [0.6788, 0.8428]], np.float32)


def template(n_points: int, out_size: tuple[int, int], margin: float) -> np.ndarray:
    """Template points in output pixels: ``p_out = (p_box + m) / (1 + 2m) * (W, H)``."""
    if n_points not in (2, 5):
        raise DataError(f"alignment needs 2 (eyes) or 5 landmarks, got {n_points}")
    h, w = out_size
    pts = (TEMPLATE_5PT[:n_points] + margin) / (1.0 + 2.0 * margin)
    return (pts * np.array([w, h], np.float32)).astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) ``M`` (2x3) with ``dst ≈ M [src; 1]``.

    Solved by OpenCV's ``estimateAffinePartial2D`` (4 degrees of freedom); exact for 2 points.
    """
    src, dst = np.asarray(src, np.float32).reshape(-1, 2), np.asarray(dst, np.float32).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise DataError(f"similarity transform needs >= 2 matching points, got {len(src)} and {len(dst)}")
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if m is None:
        raise DataError("landmarks are degenerate (coincident points); cannot align")
    return m


def box_transform(box: tuple[int, int, int, int], out_size: tuple[int, int], margin: float) -> np.ndarray:
    """Affine map of the square crop: side ``s = max(w, h) (1 + 2m)`` centred on the box, scaled to the output."""
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    oh, ow = out_size
    sx, sy = ow / side, oh / side
    return np.array([[sx, 0.0, ow / 2.0 - sx * cx], [0.0, sy, oh / 2.0 - sy * cy]], np.float32)


def align_face(image: np.ndarray, face: Face, out_size: tuple[int, int] | int = 112, margin: float = 0.1,
               use_landmarks: bool = True) -> np.ndarray:
    """Crop one face to ``out_size`` ``(H, W)``: eye/5-point similarity alignment when ``face.landmarks``
    exist (and ``use_landmarks``), else the margin square crop; pixels outside the image replicate the border."""
    if isinstance(out_size, int):
        out_size = (out_size, out_size)
    if margin < 0:
        raise DataError(f"crop margin must be >= 0, got {margin}")
    lm = face.landmarks
    if use_landmarks and lm is not None and len(lm) >= 2:
        n = 5 if len(lm) >= 5 else 2
        m = similarity_transform(np.asarray(lm)[:n], template(n, out_size, margin))
    else:
        m = box_transform(face.box, out_size, margin)
    return cv2.warpAffine(image, m, (out_size[1], out_size[0]), flags=cv2.INTER_AREA if _shrinks(m) else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def _shrinks(m: np.ndarray) -> bool:
    return float(np.hypot(m[0, 0], m[1, 0])) < 1.0
