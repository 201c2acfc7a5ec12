"""JAFFE (Lyons et al. 1998), the original flat release.

Layout: ``PATH/KA.AN1.39.tiff`` — subject ``KA``, expression code ``AN|DI|FE|HA|NE|SA|SU`` followed by
the take number (``1``), and the image id (``39``). One split, ``all`` (use subject k-fold).
Other files in the folder (README, .txt) are reported as bad files; hidden files are ignored.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ...labels import CANONICAL7
from ..base import BadFilePolicy, DataError, Sample, ScanResult, register_adapter
from ._common import BadFiles, check_split, image_entries, no_options, require_dir

FMT = "jaffe"
CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral", "SA": "sadness",
         "SU": "surprise"}
NAME_RE = re.compile(r"^([A-Za-z]{2})\.([A-Za-z]{2})(\d+)\.(\d+)\.tiff?$", re.IGNORECASE)


@register_adapter(FMT, "JAFFE: flat KA.AN1.39.tiff files (subject.code+take.id)")
def scan_jaffe(root: Path, split: str | None = None, *, on_bad_file: BadFilePolicy = "error",
               **options: Any) -> ScanResult:
    """JAFFE flat folder (see module docstring)."""
    no_options(FMT, options)
    check_split(FMT, split, ("all",))
    require_dir(root, FMT, "a flat folder of KA.AN1.39.tiff files")
    bad = BadFiles(FMT, on_bad_file)
    samples = []
    for path, _ in image_entries(root, bad, recursive=True):
        name = Path(path).name
        m = NAME_RE.match(name)
        if m is None:
            bad.bad(path, "file name does not match <subject>.<code><take>.<id>.tiff (e.g. KA.AN1.39.tiff)")
            continue
        subj, code, take, ident = m.groups()
        code = code.upper()
        if code not in CODES:
            bad.bad(path, f"unknown expression code {code!r}; expected one of {', '.join(CODES)}")
            continue
        samples.append(Sample(path=path, label=CANONICAL7.index(CODES[code]), split="all", subject=subj.upper(),
                              meta={"code": code, "take": int(take), "id": int(ident)}))
    if not samples:
        raise DataError(f"{FMT}: no JAFFE images under {root}; expected files like KA.AN1.39.tiff")
    return ScanResult(samples=samples, classes=CANONICAL7, skipped=bad.report, splits=("all",))
