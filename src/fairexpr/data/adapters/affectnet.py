"""AffectNet (Mollahosseini et al. 2017), manually annotated part.

Layout::

    PATH/training.csv, PATH/validation.csv
        subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal
    PATH/Manually_Annotated_Images/<subDirectory_filePath>

``expression`` 0-7 = neutral, happy, sad, surprise, fear, disgust, anger, contempt; 8 = none,
9 = uncertain, 10 = non-face are excluded (each recorded in the SkipReport). Splits ``train``
(training.csv) and ``val`` (validation.csv). Option ``num_classes`` 8 (default) or 7 (contempt excluded).
``meta`` keeps ``box`` = (x, y, w, h), ``landmarks`` = float32 array [68, 2] (or ``None`` when absent),
``valence`` and ``arousal``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..base import BadFilePolicy, DataError, Sample, ScanResult, register_adapter
from ._common import BadFiles, check_file, check_split, class_space, no_options, require_dir

FMT = "affectnet"
CODES = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
EXCLUDED = {8: "none", 9: "uncertain", 10: "non-face"}
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
           "expression", "valence", "arousal")
FILES = {"train": "training.csv", "val": "validation.csv"}


def parse_landmarks(s: str) -> np.ndarray | None:
    """``"x1;y1;x2;y2;..."`` -> float32 ``[n, 2]``; ``None`` for an empty/malformed field."""
    try:
        v = np.array([float(x) for x in str(s).replace(",", ";").split(";") if x.strip()], dtype=np.float32)
    except ValueError:
        return None
    if v.size == 0 or v.size % 2:
        return None
    return v.reshape(-1, 2)


@register_adapter(FMT, "AffectNet manual annotations: training.csv/validation.csv + Manually_Annotated_Images/")
def scan_affectnet(root: Path, split: str | None = None, *, on_bad_file: BadFilePolicy = "error",
                   num_classes: int | str = 8, **options: Any) -> ScanResult:
    """AffectNet manually annotated CSVs (see module docstring)."""
    import pandas as pd

    no_options(FMT, options)
    classes = class_space(num_classes, FMT)
    wanted = check_split(FMT, split, ("train", "val"), {"validation": ("val",)})
    img_root = require_dir(root / "Manually_Annotated_Images", FMT, "Manually_Annotated_Images/<subDirectory>/<file>")
    bad = BadFiles(FMT, on_bad_file)
    sizes_cache: dict[str, dict[str, int]] = {}
    samples = []
    for sp in wanted:
        csv_path = root / FILES[sp]
        if not csv_path.is_file():
            raise DataError(f"{FMT}: missing file {str(csv_path)!r}; expected {FILES[sp]} with columns {', '.join(COLUMNS)}")
        try:
            df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        except Exception as e:
            raise DataError(f"{FMT}: {csv_path}: cannot parse as CSV ({type(e).__name__}: {e})") from None
        df.columns = [c.strip() for c in df.columns]
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"{FMT}: {csv_path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
        rel = df["subDirectory_filePath"].to_numpy()
        expr = df["expression"].to_numpy()
        box_cols = df[["face_x", "face_y", "face_width", "face_height"]].to_numpy()
        lms = df["facial_landmarks"].to_numpy()
        val = df["valence"].to_numpy()
        aro = df["arousal"].to_numpy()
        for i in range(len(df)):
            where = f"{csv_path} line {i + 2}"
            try:
                code = int(float(expr[i]))
            except ValueError:
                code = -1
            if code in EXCLUDED:
                bad.exclude(str(img_root / rel[i]), f"affectnet expression {code} ({EXCLUDED[code]}) is not an emotion")
                continue
            if not 0 <= code < len(CODES):
                bad.bad(where, f"column 'expression' is {expr[i]!r}; expected 0-10 (0-7 emotions, 8-10 excluded)")
                continue
            path = img_root / rel[i]
            d = str(path.parent)
            if d not in sizes_cache:
                try:
                    sizes_cache[d] = {e.name: e.stat().st_size for e in os.scandir(d) if e.is_file()}
                except OSError:
                    sizes_cache[d] = {}
            if not check_file(path, bad, sizes_cache[d]):
                continue
            canon = CODES[code]
            if canon not in classes:
                bad.exclude(str(path), f"class {canon!r} not in the {len(classes)}-class protocol")
                continue
            try:
                box = tuple(int(float(x)) for x in box_cols[i])
            except ValueError:
                box = None
            meta = {"usage": FILES[sp], "box": box, "landmarks": parse_landmarks(lms[i]),
                    "valence": _float(val[i]), "arousal": _float(aro[i]), "expression": code}
            samples.append(Sample(path=str(path), label=classes.index(canon), split=sp, meta=meta))
    if not samples:
        raise DataError(f"{FMT}: no usable images under {root} for split(s) {', '.join(wanted)}")
    return ScanResult(samples=samples, classes=classes, skipped=bad.report, splits=("train", "val"))


def _float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None
