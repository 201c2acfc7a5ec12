"""Video input (OpenCV ``VideoCapture``): frame sampling, an expression timeline plot and share-of-time summary."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from .._io import atomic_write_bytes
from ..data.base import DataError
from .pipeline import FaceRecord


def video_info(path: str | Path) -> dict[str, float]:
    """``{"fps", "frames", "width", "height"}``; raises :class:`DataError` if OpenCV cannot open it."""
    cap = _open(path)
    try:
        return {"fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0), "frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
                "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}
    finally:
        cap.release()


def _open(path: str | Path) -> cv2.VideoCapture:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: video file not found")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: video file is empty (0 bytes)")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise DataError(f"{p}: OpenCV cannot open it as a video (corrupt file or unsupported codec)")
    return cap


def sample_step(fps: float, every_n: int | None = None, target_fps: float | None = None) -> int:
    """Frame step: ``every_n`` as given, or ``round(fps / target_fps)`` (at least 1); default every frame."""
    if every_n is not None and target_fps is not None:
        raise DataError("give either --every-n or --fps, not both")
    if every_n is not None:
        if every_n < 1:
            raise DataError(f"--every-n must be >= 1, got {every_n}")
        return int(every_n)
    if target_fps is not None:
        if target_fps <= 0:
            raise DataError(f"--fps must be > 0, got {target_fps}")
        return max(1, int(round((fps or target_fps) / target_fps)))
    return 1


def iter_frames(path: str | Path, every_n: int | None = None, fps: float | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(frame_index, time_seconds, rgb)`` for every sampled frame; a video that yields no frame at
    all raises :class:`DataError`. Time uses the container FPS (frame index / fps), or the decoder's
    timestamp when the FPS is unknown."""
    cap = _open(path)
    try:
        vfps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        step = sample_step(vfps, every_n, fps)
        i, got = 0, 0
        while True:
            if i % step == 0:
                ok, frame = cap.read()
                if not ok:
                    break
                t = i / vfps if vfps > 0 else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                got += 1
                yield i, float(t), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            elif not cap.grab():
                break
            i += 1
        if got == 0:
            raise DataError(f"{path}: video has no decodable frames")
    finally:
        cap.release()


def frame_labels(records: Sequence[FaceRecord]) -> list[tuple[int, float, str | None]]:
    """One label per sampled frame: the label of the largest predicted face, ``None`` without a face."""
    by_frame: dict[int, tuple[float, str | None, int]] = {}
    for r in records:
        if r.frame is None:
            continue
        t, lab, area = by_frame.get(r.frame, (r.time or 0.0, None, -1))
        if r.status == "ok" and r.box is not None and r.box[2] * r.box[3] > area:
            lab, area = r.label, r.box[2] * r.box[3]
        by_frame[r.frame] = (t, lab, area)
    return [(f, t, lab) for f, (t, lab, _) in sorted(by_frame.items())]


def summarize(records: Sequence[FaceRecord], classes: Sequence[str]) -> dict[str, object]:
    """Share of sampled frames per expression (largest face per frame); ``no_face`` share separately.

    ``share[c] = #frames labelled c / #sampled frames``; the shares plus ``no_face`` sum to 1.
    """
    fl = frame_labels(records)
    n = len(fl)
    counts = {c: 0 for c in classes}
    none = 0
    for _, _, lab in fl:
        if lab is None:
            none += 1
        else:
            counts[lab] += 1
    return {"frames": n, "share": {c: (counts[c] / n if n else 0.0) for c in classes},
            "no_face": none / n if n else 0.0,
            "dominant": max(classes, key=lambda c: counts[c]) if n and none < n else None}


def plot_timeline(records: Sequence[FaceRecord], classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Per-frame probability of each expression (largest face) over time, plus the argmax band; PNG."""
    from matplotlib.figure import Figure

    per_frame: dict[int, FaceRecord] = {}
    for r in records:
        if r.status == "ok" and r.frame is not None and r.box is not None:
            best = per_frame.get(r.frame)
            if best is None or r.box[2] * r.box[3] > best.box[2] * best.box[3]:
                per_frame[r.frame] = r
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot(111)
    frames = sorted(per_frame)
    if frames:
        t = np.array([per_frame[f].time or 0.0 for f in frames])
        for c in classes:
            ax.plot(t, [per_frame[f].probs[c] for f in frames], marker=".", lw=1.2, label=c)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title(title or "expression timeline (largest face per frame)")
    ax.legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
    return path
