"""Photo/video -> faces -> aligned crops -> predictor, with batching across faces and explicit statuses.

Every input produces records; nothing is dropped silently:

* ``status="ok"``: a face with its label, probabilities and confidence,
* ``status="too_small"``: a detected face below ``min_face`` pixels (box reported, no prediction),
* ``status="no_face"``: an image/frame where the detector found nothing (one record, no box).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np

from ..data.base import DataError
from .align import align_face
from .detect import Face, FaceDetector, create_detector
from .predictor import Predictor


@dataclass
class FaceRecord:
    source: str
    frame: int | None = None
    time: float | None = None
    face: int | None = None
    status: str = "ok"
    box: tuple[int, int, int, int] | None = None
    label: str | None = None
    probs: dict[str, float] | None = None
    confidence: float | None = None
    reliable: bool | None = None
    detector_score: float | None = None
    crop: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "frame": self.frame, "time": None if self.time is None else round(self.time, 4),
                "face": self.face, "status": self.status, "box": None if self.box is None else list(self.box),
                "label": self.label, "probabilities": self.probs, "confidence": self.confidence,
                "reliable": self.reliable, "detector_score": self.detector_score}

    def to_row(self, classes: Sequence[str]) -> dict[str, Any]:
        """Flat CSV row: box as x, y, w, h and one ``p_<class>`` column per class."""
        b = self.box or (None, None, None, None)
        row = {"source": self.source, "frame": self.frame, "time": None if self.time is None else round(self.time, 4),
               "face": self.face, "status": self.status, "x": b[0], "y": b[1], "w": b[2], "h": b[3], "label": self.label}
        for c in classes:
            row[f"p_{c}"] = None if self.probs is None else self.probs[c]
        row["confidence"], row["reliable"] = self.confidence, self.reliable
        return row


class FacePipeline:
    """Detect (or take whole crops), align, preprocess and predict in batches.

    ``crops=True`` treats every image as one already-cropped face (FER2013/CK+ style inputs).
    ``threshold`` sets the ``reliable`` flag: ``confidence >= threshold``.
    """

    def __init__(self, predictor: Predictor, detector: FaceDetector | str | None = "haar", *, crops: bool = False,
                 min_face: int = 24, margin: float = 0.1, threshold: float = 0.5, batch_size: int = 32,
                 keep_crops: bool = False) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise DataError(f"confidence threshold must be in [0, 1], got {threshold}")
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        self.predictor = predictor
        self.crops = crops
        self.detector = None if crops else (create_detector(detector) if isinstance(detector, str) or detector is None
                                            else detector)
        self.min_face, self.margin, self.threshold, self.batch_size = int(min_face), margin, threshold, batch_size
        self.keep_crops = keep_crops
        self.classes = tuple(predictor.classes)
        self.crop_size = tuple(predictor.preprocess.input_size)  # align straight to the model's input size

    def faces_in(self, image: np.ndarray, source: str, frame: int | None = None,
                 time: float | None = None) -> tuple[list[FaceRecord], list[np.ndarray]]:
        """Detection + alignment of one image: records (predictions pending) and crops for the ``ok`` ones."""
        if self.crops:
            h, w = image.shape[:2]
            return [FaceRecord(source, frame, time, 0, "ok", (0, 0, w, h))], [image]
        faces: list[Face] = self.detector.detect(image)
        if not faces:
            return [FaceRecord(source, frame, time, None, "no_face")], []
        recs, crops = [], []
        for i, f in enumerate(faces):
            if f.size < self.min_face:
                recs.append(FaceRecord(source, frame, time, i, "too_small", f.box, detector_score=f.score))
                continue
            recs.append(FaceRecord(source, frame, time, i, "ok", f.box, detector_score=f.score))
            crops.append(align_face(image, f, self.crop_size, self.margin))
        return recs, crops

    def _fill(self, pending: list[tuple[FaceRecord, np.ndarray]]) -> None:
        pred = self.predictor.predict_faces([c for _, c in pending])
        for j, (rec, crop) in enumerate(pending):
            p = pred.probs[j]
            rec.probs = {c: float(round(v, 6)) for c, v in zip(self.classes, p)}
            rec.label = self.classes[int(pred.labels[j])]
            rec.confidence = float(round(pred.confidence[j], 6))
            rec.reliable = bool(pred.confidence[j] >= self.threshold)
            if self.keep_crops:
                rec.crop = crop

    def run(self, items: Iterable[tuple[np.ndarray, str, int | None, float | None]]
            ) -> Iterator[tuple[np.ndarray, list[FaceRecord]]]:
        """``(image, source, frame, time)`` items -> ``(image, records)`` per item, in order, predicting in
        batches across items; an item is yielded once all its faces are predicted."""
        waiting: list[tuple[np.ndarray, list[FaceRecord]]] = []
        pending: list[tuple[FaceRecord, np.ndarray]] = []
        for image, source, frame, time in items:
            recs, crops = self.faces_in(image, source, frame, time)
            pending.extend(zip([r for r in recs if r.status == "ok"], crops))
            waiting.append((image, recs))
            if len(pending) >= self.batch_size:
                self._fill(pending)
                pending = []
                yield from waiting
                waiting = []
        if pending:
            self._fill(pending)
        yield from waiting

    def predict_image(self, image: np.ndarray, source: str = "image") -> list[FaceRecord]:
        """All records (ok / too_small / no_face) of one RGB image."""
        return next(iter(self.run([(image, source, None, None)])))[1]


def annotate(image: np.ndarray, records: Sequence[FaceRecord]) -> np.ndarray:
    """Draw boxes with ``label confidence`` (green: reliable, orange: unreliable, grey: too small) on a copy."""
    out = np.ascontiguousarray(image.copy())
    scale = max(0.4, min(out.shape[:2]) / 600)
    for r in records:
        if r.box is None:
            continue
        x, y, w, h = r.box
        if r.status == "ok":
            color = (40, 200, 40) if r.reliable else (255, 140, 0)
            text = f"{r.label} {r.confidence:.2f}"
        else:
            color, text = (150, 150, 150), r.status
        th = max(1, int(round(2 * scale)))
        cv2.rectangle(out, (x, y), (x + w, y + h), color, th)
        (tw, tht), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, th)
        ty = y - 4 if y - tht - base - 4 > 0 else y + h + tht + 4
        cv2.rectangle(out, (x, ty - tht - base), (x + tw + 4, ty + base), color, -1)
        cv2.putText(out, text, (x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), th, cv2.LINE_AA)
    return out
