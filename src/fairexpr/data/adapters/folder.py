"""Any class-folder tree: ``PATH/<split>/<class>/**/*.jpg`` or flat ``PATH/<class>/**/*.jpg``.

The layout is detected: when every sub-folder of ``PATH`` is a class name (a canonical alias such as
``happy``/``Angry``, or a ``class_map`` key) the tree is flat and its single split is ``all``;
otherwise each sub-folder is a split (lower-cased; ``valid``/``validation`` -> ``val``,
``training`` -> ``train``, ``testing`` -> ``test``) holding class folders.

Option ``class_map``: ``{"a": "anger"}`` or ``"a=anger,b=happiness"``, mapping folder names to canonical
classes (entries take precedence; other folders use the canonical aliases). The label space has 8
classes when some class folder (in any split) maps to contempt, else 7.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..base import BadFilePolicy, DataError, Sample, ScanResult, register_adapter
from ._common import (BadFiles, canonical_or_none, check_split, class_folders, image_entries, no_options,
                      parse_class_map, require_dir, space_for, subdirs)

FMT = "folder"
SPLIT_NAMES = {"valid": "val", "validation": "val", "training": "train", "testing": "test"}


@register_adapter(FMT, "any <split>/<class>/ or flat <class>/ image tree (option class_map)")
def scan_folder(root: Path, split: str | None = None, *, on_bad_file: BadFilePolicy = "error",
                class_map: Mapping[str, str] | str | None = None, **options: Any) -> ScanResult:
    """Generic class-folder tree (see module docstring)."""
    no_options(FMT, options)
    cmap = parse_class_map(class_map, FMT)
    require_dir(root, FMT, "<split>/<class>/*.jpg or <class>/*.jpg")

    def resolve(name: str) -> str | None:
        return cmap.get(name) or canonical_or_none(name)

    top_dirs = subdirs(root)
    if not top_dirs:
        raise DataError(f"{FMT}: {root} has no sub-folders; expected <split>/<class>/*.jpg or <class>/*.jpg")
    flat = all(resolve(d) is not None for d in top_dirs)
    if flat:
        split_dirs = {"all": root}
    else:
        split_dirs = {}
        for d in top_dirs:
            key = SPLIT_NAMES.get(d.lower(), d.lower())
            if key in split_dirs:
                raise DataError(f"{FMT}: {root} has two folders for split {key!r}")
            split_dirs[key] = root / d
    wanted = check_split(FMT, split, tuple(split_dirs))
    bad = BadFiles(FMT, on_bad_file)
    expected = "canonical class names or aliases (" + ", ".join(sorted({"angry", "disgust", "fear", "happy", "sad",
                                                                         "surprise", "neutral", "contempt"})) + ")" + (
        f" or class_map keys ({', '.join(cmap)})" if cmap else "")
    found: list[tuple[str, str, str]] = []  # (path, canonical, split)
    for sp in wanted:
        for cdir, canon in class_folders(split_dirs[sp], bad, resolve, expected):
            for path, _ in image_entries(cdir, bad, recursive=True):
                found.append((path, canon, sp))
    # the label space comes from the class folders of *all* splits, so train/test agree
    classes = space_for(resolve(d) or "" for top in split_dirs.values() for d in subdirs(top))
    samples = [Sample(path=p, label=classes.index(c), split=sp, meta={"folder": Path(p).parent.name})
               for p, c, sp in found]
    if not samples:
        raise DataError(f"{FMT}: no images under {root} for split(s) {', '.join(wanted)}")
    return ScanResult(samples=samples, classes=classes, skipped=bad.report, splits=tuple(split_dirs))
