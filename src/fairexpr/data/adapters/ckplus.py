"""CK+ (Lucey et al. 2010), the common 48x48 crop release "CK+48".

Layout: ``PATH/<anger,contempt,disgust,fear,happy,sadness,surprise>/S<subject>_<seq>_<frame>.png``
(``PATH`` may also be the folder containing ``CK+48/``). Subject ``S010`` and sequence ``S010_004`` are
parsed from the name; frame number in ``meta["frame"]``. One split, ``all``: use subject-independent
k-fold (:func:`fairexpr.data.splits.subject_kfold`, split strings ``fold3of10``).

Option ``num_classes``: 8 (default, contempt kept) or 7 (contempt images excluded, each recorded in
the SkipReport).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..base import BadFilePolicy, DataError, Sample, ScanResult, register_adapter
from ._common import (BadFiles, canonical_or_none, check_split, class_folders, class_space, image_entries, no_options,
                      subdirs)

FMT = "ckplus"
NAME_RE = re.compile(r"^(S\d+)_(\d+)_(\d+)\.[A-Za-z]+$")


@register_adapter(FMT, "CK+48: <class>/S<subject>_<seq>_<frame>.png, subject and sequence parsed")
def scan_ckplus(root: Path, split: str | None = None, *, on_bad_file: BadFilePolicy = "error",
                num_classes: int | str = 8, **options: Any) -> ScanResult:
    """CK+48 class folders (see module docstring)."""
    no_options(FMT, options)
    classes = class_space(num_classes, FMT)
    check_split(FMT, split, ("all",))
    if (root / "CK+48").is_dir():
        root = root / "CK+48"
    if not root.is_dir() or not subdirs(root):
        raise DataError(f"{FMT}: {root} has no class folders; expected CK+48/<anger,contempt,disgust,fear,happy,"
                        f"sadness,surprise>/S<subject>_<seq>_<frame>.png")
    bad = BadFiles(FMT, on_bad_file)
    samples = []
    for cdir, canon in class_folders(root, bad, canonical_or_none,
                                     "anger, contempt, disgust, fear, happy, sadness, surprise (or neutral)"):
        for path, _ in image_entries(cdir, bad):
            name = Path(path).name
            m = NAME_RE.match(name)
            if m is None:
                bad.bad(path, "file name does not match S<subject>_<sequence>_<frame>.png (e.g. S010_004_00000017.png)")
                continue
            if canon not in classes:
                bad.exclude(path, f"class {canon!r} not in the {len(classes)}-class protocol")
                continue
            subj, seq, frame = m.groups()
            samples.append(Sample(path=path, label=classes.index(canon), split="all", subject=subj,
                                  sequence=f"{subj}_{seq}", meta={"frame": int(frame), "folder": cdir.name}))
    if not samples:
        raise DataError(f"{FMT}: no usable images under {root}")
    return ScanResult(samples=samples, classes=classes, skipped=bad.report, splits=("all",))
