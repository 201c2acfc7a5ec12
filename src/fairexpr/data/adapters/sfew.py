"""SFEW 2.0 (Dhall et al. 2011/2015), aligned faces.

Layout: ``PATH/Train|Val/<Angry,Disgust,Fear,Happy,Neutral,Sad,Surprise>/*.png``; splits ``train``, ``val``
(the unlabelled ``Test`` folder of the challenge is not read).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...labels import CANONICAL7
from ..base import BadFilePolicy, DataError, Sample, ScanResult, register_adapter
from ._common import BadFiles, canonical_or_none, check_split, class_folders, image_entries, no_options

FMT = "sfew"
FOLDERS = {"train": ("Train", "train"), "val": ("Val", "val", "Valid", "Validation")}


def _resolve(name: str) -> str | None:
    c = canonical_or_none(name)
    return c if c in CANONICAL7 else None


@register_adapter(FMT, "SFEW 2.0: Train|Val/<Angry,...,Surprise>/*.png")
def scan_sfew(root: Path, split: str | None = None, *, on_bad_file: BadFilePolicy = "error",
              **options: Any) -> ScanResult:
    """SFEW 2.0 class folders (see module docstring)."""
    no_options(FMT, options)
    wanted = check_split(FMT, split, ("train", "val"))
    bad = BadFiles(FMT, on_bad_file)
    samples = []
    for sp in wanted:
        top = next((root / n for n in FOLDERS[sp] if (root / n).is_dir()), None)
        if top is None:
            raise DataError(f"{FMT}: missing folder {str(root / FOLDERS[sp][0])!r}; expected "
                            f"Train/ and Val/ each with <Angry,Disgust,Fear,Happy,Neutral,Sad,Surprise>/*.png")
        for cdir, canon in class_folders(top, bad, _resolve, "Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise"):
            for path, _ in image_entries(cdir, bad):
                samples.append(Sample(path=path, label=CANONICAL7.index(canon), split=sp,
                                      meta={"usage": top.name, "folder": cdir.name}))
    if not samples:
        raise DataError(f"{FMT}: no images under {root} for split(s) {', '.join(wanted)}")
    return ScanResult(samples=samples, classes=CANONICAL7, skipped=bad.report, splits=("train", "val"))
