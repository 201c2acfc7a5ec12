"""RAF-DB basic emotion subset (Li et al. 2017).

Layout::

    PATH/EmoLabel/list_patition_label.txt      # "train_00001.jpg 5" (sic: "patition")
    PATH/Image/aligned/train_00001_aligned.jpg # option aligned=True (default)
    PATH/Image/original/train_00001.jpg        # option aligned=False

Labels 1-7 = surprise, fear, disgust, happiness, sadness, anger, neutral. Splits ``train``/``test`` from
the name prefix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...labels import CANONICAL7
from ..base import BadFilePolicy, DataError, Sample, ScanResult, register_adapter
from ._common import (BadFiles, as_bool, check_file, check_split, folder_sizes, no_options, require_dir,
                      require_file)

FMT = "rafdb"
CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}
SPLITS = ("train", "test")


@register_adapter(FMT, "RAF-DB basic: EmoLabel/list_patition_label.txt + Image/aligned|original")
def scan_rafdb(root: Path, split: str | None = None, *, on_bad_file: BadFilePolicy = "error",
               aligned: bool | str = True, **options: Any) -> ScanResult:
    """RAF-DB basic (see module docstring)."""
    no_options(FMT, options)
    aligned = as_bool(aligned, FMT, "aligned")
    wanted = check_split(FMT, split, SPLITS)
    label_file = require_file(root / "EmoLabel" / "list_patition_label.txt", FMT,
                              "EmoLabel/list_patition_label.txt with lines like 'train_00001.jpg 5'")
    img_dir = require_dir(root / "Image" / ("aligned" if aligned else "original"), FMT,
                          "Image/aligned/<name>_aligned.jpg (or Image/original/<name> with aligned=False)")
    sizes = folder_sizes(img_dir)
    bad = BadFiles(FMT, on_bad_file)
    samples = []
    with open(label_file) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"{label_file} line {lineno}"
            if len(parts) != 2:
                bad.bad(where, f"expected '<name>.jpg <label 1-7>', got {line.strip()!r}")
                continue
            name, code = parts
            sp = name.split("_", 1)[0].lower()
            if sp not in SPLITS:
                bad.bad(where, f"image name {name!r} does not start with train_ or test_")
                continue
            try:
                canon = CODES[int(code)]
            except (ValueError, KeyError):
                bad.bad(where, f"label {code!r} is not an integer 1-7 (1=surprise 2=fear 3=disgust 4=happiness "
                               f"5=sadness 6=anger 7=neutral)")
                continue
            if sp not in wanted:
                continue
            stem, dot, ext = name.rpartition(".")
            fname = f"{stem}_aligned.{ext}" if aligned else name
            path = img_dir / fname
            if not check_file(path, bad, sizes):
                continue
            samples.append(Sample(path=str(path), label=CANONICAL7.index(canon), split=sp,
                                  meta={"usage": sp, "name": name, "code": int(code)}))
    if not samples:
        raise DataError(f"{FMT}: no usable images under {root} for split(s) {', '.join(wanted)}")
    return ScanResult(samples=samples, classes=CANONICAL7, skipped=bad.report, splits=SPLITS)
