"""Helpers shared by the inference tests (a module with a unique name: several test folders have a
conftest.py, so `from conftest import ...` is ambiguous when the whole suite runs)."""
from __future__ import annotations

import cv2
import numpy as np

def composite(faces: list[np.ndarray], sizes: list[int], canvas=(560, 1100), gap: int = 60) -> tuple[np.ndarray, list]:
    """Paste faces (resized to ``sizes``) left to right on a light canvas; returns image + pasted boxes."""
    h, w = canvas
    img = np.full((h, w, 3), 235, np.uint8)
    boxes, x = [], gap
    for f, s in zip(faces, sizes):
        y = (h - s) // 2
        img[y:y + s, x:x + s] = cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA)
        boxes.append((x, y, s, s))
        x += s + gap
    assert x - gap <= w, "canvas too small"
    return img, boxes



def center_inside(box, ref) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return ref[0] <= cx <= ref[0] + ref[2] and ref[1] <= cy <= ref[1] + ref[3]

