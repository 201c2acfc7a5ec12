"""Unlabelled face images (e.g. a face-recognition set for Meta-Face2Exp): any folder, recursive.

Every image gets ``label = -1`` and split ``all``. UTKFace names ``<age>_<gender>_<race>_<date>.jpg.chip.jpg``
are parsed into ``meta`` (``age`` int, ``gender`` 0=male 1=female, ``race`` 0-4 = White, Black, Asian,
Indian, Others) when they match; ``subject`` is the parent folder name for identity-per-folder sets
(e.g. ``<identity>/*.jpg``), otherwise ``None``. Option ``num_classes`` (7 default, or 8) sets the label
space the unlabelled set is paired with.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..base import BadFilePolicy, DataError, Sample, ScanResult, register_adapter
from ._common import BadFiles, check_split, class_space, image_entries, no_options, require_dir

FMT = "faces"
UTK_RE = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.")


@register_adapter(FMT, "unlabelled face images: any folder (recursive), label -1; UTKFace names parsed")
def scan_faces(root: Path, split: str | None = None, *, on_bad_file: BadFilePolicy = "error",
               num_classes: int | str = 7, **options: Any) -> ScanResult:
    """Unlabelled faces (see module docstring)."""
    no_options(FMT, options)
    classes = class_space(num_classes, FMT)
    check_split(FMT, split, ("all",))
    require_dir(root, FMT, "a folder of face images")
    bad = BadFiles(FMT, on_bad_file)
    samples = []
    for path, _ in image_entries(root, bad, recursive=True):
        p = Path(path)
        meta: dict[str, Any] = {}
        m = UTK_RE.match(p.name)
        if m:
            meta = {"age": int(m.group(1)), "gender": int(m.group(2)), "race": int(m.group(3))}
        subject = p.parent.name if p.parent != root else None
        samples.append(Sample(path=path, label=-1, split="all", subject=subject, meta=meta))
    if not samples:
        raise DataError(f"{FMT}: no images under {root}")
    return ScanResult(samples=samples, classes=classes, skipped=bad.report, splits=("all",))
