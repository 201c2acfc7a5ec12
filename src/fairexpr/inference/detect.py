"""Face detectors that run offline: dlib's HOG detector with 5-point landmarks (``fairexpr[faces]``; the default
when installed), OpenCV's Haar cascade (always available) and YuNet (``cv2.FaceDetectorYN``, a local ONNX file).

A detector takes an RGB ``uint8`` image ``[H, W, 3]`` and returns :class:`Face` records with an
axis-aligned box ``(x, y, w, h)`` in pixels, a score and, when the detector provides them, landmarks
``[K, 2]`` in the YuNet/ArcFace order (image-left eye, image-right eye, nose tip, image-left mouth
corner, image-right mouth corner). New detectors subclass :class:`FaceDetector` and are added to
:data:`DETECTORS`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..data.base import DataError


@dataclass
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h
    score: float = 1.0
    landmarks: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """The face's size in pixels: the shorter side of its box."""
        return int(min(self.box[2], self.box[3]))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"box": [int(v) for v in self.box], "score": float(self.score)}
        if self.landmarks is not None:
            d["landmarks"] = np.round(self.landmarks, 2).tolist()
        return d


class FaceDetector(ABC):
    """Interface: ``detect(rgb) -> list[Face]`` sorted left to right."""

    name: str = "base"

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Face]:
        ...

    @staticmethod
    def _check(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise DataError(f"detector input must be an RGB uint8 array [H, W, 3], got {image.dtype} {image.shape}")
        return image


class HaarDetector(FaceDetector):
    """Viola–Jones cascade shipped with OpenCV (``haarcascade_frontalface_default.xml``).

    ``min_size`` is the smallest face searched for (pixels); faces smaller than the CLI's ``--min-face``
    are still *reported* by the pipeline, so keep this low. Overlapping hits are merged by OpenCV's
    grouping (``min_neighbors``).
    """

    name = "haar"

    def __init__(self, cascade: str | Path | None = None, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_size: int = 20) -> None:
        path = Path(cascade) if cascade else Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        if not path.is_file():
            raise DataError(f"Haar cascade file {str(path)!r} not found")
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise DataError(f"{path}: not a loadable OpenCV cascade XML")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, int(min_size)

    def detect(self, image: np.ndarray) -> list[Face]:
        image = self._check(image)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # no histogram equalization: it hurts on real photos
        boxes, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        faces = [Face(tuple(int(v) for v in b), float(s)) for b, s in zip(np.asarray(boxes).reshape(-1, 4),
                                                                           np.asarray(weights).reshape(-1))]
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))


class YuNetDetector(FaceDetector):
    """OpenCV's YuNet CNN detector (``cv2.FaceDetectorYN``) from a *local* ONNX file the user names
    (e.g. ``face_detection_yunet_2023mar.onnx`` from the OpenCV model zoo); returns 5 landmarks."""

    name = "yunet"

    def __init__(self, model: str | Path, score_threshold: float = 0.7, nms_threshold: float = 0.3,
                 top_k: int = 500) -> None:
        path = Path(model) if model else None
        if path is None or not path.is_file():
            raise DataError(f"YuNet model file {str(model)!r} not found; pass --yunet-model PATH to a local "
                            "face_detection_yunet_*.onnx (nothing is downloaded)")
        try:
            self.net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, nms_threshold, top_k)
        except cv2.error as e:
            raise DataError(f"{path}: OpenCV cannot load it as a YuNet model ({str(e).strip().splitlines()[-1]})") from None

    def detect(self, image: np.ndarray) -> list[Face]:
        image = self._check(image)
        h, w = image.shape[:2]
        self.net.setInputSize((w, h))
        _, out = self.net.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return parse_yunet(out, (h, w))


def parse_yunet(out: np.ndarray | None, shape: tuple[int, int]) -> list[Face]:
    """YuNet rows ``[x, y, w, h, x_re, y_re, x_le, y_le, x_n, y_n, x_mr, y_mr, x_ml, y_ml, score]`` -> faces,
    boxes clipped to the image."""
    if out is None:
        return []
    h, w = shape
    faces = []
    for row in np.asarray(out, np.float32).reshape(-1, 15):
        x0, y0 = max(0.0, row[0]), max(0.0, row[1])
        x1, y1 = min(float(w), row[0] + row[2]), min(float(h), row[1] + row[3])
        if x1 <= x0 or y1 <= y0:
            continue
        box = (int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0)))
        faces.append(Face(box, float(row[14]), row[4:14].reshape(5, 2).astype(np.float32)))
    return sorted(faces, key=lambda f: (f.box[0], f.box[1]))


def _dlib_models() -> Path:
    """The model folder of the installed ``face_recognition_models`` package (located without importing it: its
    ``__init__`` needs ``pkg_resources``, which recent setuptools no longer ship)."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise DataError("the dlib detector needs the face_recognition_models package (CC0 model files): "
                        "pip install 'fairexpr[faces]'")
    return Path(spec.origin).parent / "models"


def dlib_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models") is not None


class DlibDetector(FaceDetector):
    """dlib's HOG + linear-SVM frontal face detector and its 5-point shape predictor
    (``shape_predictor_5_face_landmarks.dat`` from ``face_recognition_models``, CC0), offline, no GPU.

    ``landmarks`` are the two eye centres (each the mean of the predictor's two corners of that eye),
    image-left eye first, so faces are aligned by their eyes (:func:`fairexpr.inference.align.align_face`).
    ``upsample`` doubles the image that many times before the search: with 1 (default) faces from about 40 px
    are found. Measured on 50 real UTKFace faces padded onto a plain canvas and rotated in-plane (README):
    found 47 / 46 / 48 at 0° / 20° / 35° with no false boxes, where the Haar cascade found 48 / 11 / 1 with 6
    false boxes; about 2x the Haar cascade's time."""

    name = "dlib"

    def __init__(self, upsample: int = 1, threshold: float = 0.0) -> None:
        try:
            import dlib
        except ImportError:
            raise DataError("the dlib detector needs dlib (a prebuilt wheel: dlib-bin): pip install 'fairexpr[faces]'") from None
        f = _dlib_models() / "shape_predictor_5_face_landmarks.dat"
        if not f.is_file():
            raise DataError(f"{f}: dlib's 5-point landmark model is missing; reinstall face_recognition_models")
        self.hog = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(f))
        self.upsample, self.threshold = int(upsample), float(threshold)

    def detect(self, image: np.ndarray) -> list[Face]:
        image = np.ascontiguousarray(self._check(image))
        h, w = image.shape[:2]
        rects, scores, _ = self.hog.run(image, self.upsample, self.threshold)
        faces = []
        for r, sc in zip(rects, scores):
            x0, y0, x1, y1 = max(0, r.left()), max(0, r.top()), min(w, r.right() + 1), min(h, r.bottom() + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            sh = self.shape(image, r)
            p = np.array([[sh.part(i).x, sh.part(i).y] for i in range(5)], np.float32)
            eyes = np.stack([p[2:4].mean(0), p[0:2].mean(0)])  # points 2-3: image-left eye, 0-1: image-right eye
            if eyes[0, 0] > eyes[1, 0]:
                eyes = eyes[::-1].copy()
            faces.append(Face((int(x0), int(y0), int(x1 - x0), int(y1 - y0)), float(sc), eyes))
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))


DETECTORS: dict[str, Callable[..., FaceDetector]] = {"haar": HaarDetector, "yunet": YuNetDetector, "dlib": DlibDetector}
#: ``--detector`` choices: ``auto`` = dlib when it is installed (``fairexpr[faces]``), else the Haar cascade
DETECTOR_CHOICES = ("auto", "dlib", "haar", "yunet")


def resolve_detector_name(name: str) -> str:
    """``auto`` -> ``dlib`` when dlib and its model files are installed, else ``haar``."""
    if name == "auto":
        return "dlib" if dlib_available() else "haar"
    return name


def create_detector(name: str = "auto", **kwargs: Any) -> FaceDetector:
    """Build a detector by name (``auto``, ``dlib``, ``haar`` or ``yunet``; YuNet needs ``model=PATH``)."""
    name = resolve_detector_name(name)
    if name not in DETECTORS:
        raise DataError(f"unknown face detector {name!r}; available: auto, {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](**kwargs)
