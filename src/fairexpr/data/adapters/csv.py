"""A CSV manifest: ``path,label[,subject][,sequence][,split]`` (header required).

``PATH`` is the ``.csv`` file (or a folder holding ``manifest.csv``); image paths are relative to the
CSV's folder (absolute paths are kept). ``label`` is a class name or alias (``happy``, ``anger``), a
canonical index (``0``-``7`` in ``anger, disgust, fear, happiness, sadness, surprise, neutral,
contempt``), or empty / ``-1`` for an unlabelled image. Without a ``split`` column every row is in
split ``all``. Extra columns are kept in ``meta``. This is also the format of the audit's cleaned
manifest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...labels import CANONICAL8
from ..base import BadFilePolicy, DataError, Sample, ScanResult, register_adapter
from ._common import BadFiles, canonical_or_none, check_file, check_split, no_options, space_for

FMT = "csv"
KNOWN = ("path", "label", "subject", "sequence", "split")


def _label(value: str) -> str | None | int:
    """Canonical name, ``-1`` for unlabelled, or ``None`` when unknown."""
    v = value.strip()
    if v in ("", "-1"):
        return -1
    if v.isdigit():
        i = int(v)
        return CANONICAL8[i] if i < len(CANONICAL8) else None
    return canonical_or_none(v)


@register_adapter(FMT, "CSV manifest path,label[,subject][,sequence][,split]; paths relative to the CSV")
def scan_csv(root: Path, split: str | None = None, *, on_bad_file: BadFilePolicy = "error",
             **options: Any) -> ScanResult:
    """CSV manifest (see module docstring)."""
    import pandas as pd

    no_options(FMT, options)
    csv_path = root / "manifest.csv" if root.is_dir() else root
    if not csv_path.is_file():
        raise DataError(f"{FMT}: {root} is a folder without manifest.csv; expected a CSV file path,label[,subject][,split]")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise DataError(f"{FMT}: {csv_path}: cannot parse as CSV ({type(e).__name__}: {e})") from None
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise DataError(f"{FMT}: {csv_path}: missing column(s) {', '.join(missing)}; expected header "
                        f"path,label[,subject][,sequence][,split] (found {', '.join(df.columns)})")
    has_split = "split" in df.columns
    splits = tuple(sorted({s.strip().lower() for s in df["split"]} - {""})) if has_split else ("all",)
    wanted = check_split(FMT, split, splits or ("all",))
    bad = BadFiles(FMT, on_bad_file)
    base = csv_path.parent
    extra = [c for c in df.columns if c not in KNOWN]
    rows: list[tuple[str, str | int, str, dict]] = []
    records = df.to_dict("records")
    for i, r in enumerate(records):
        where = f"{csv_path} line {i + 2}"
        sp = (r.get("split") or "").strip().lower() if has_split else "all"
        if has_split and not sp:
            bad.bad(where, "column 'split' is empty; expected a split name (train, val, test, ...)")
            continue
        if sp not in wanted:
            continue
        lab = _label(r["label"])
        if lab is None:
            bad.bad(where, f"column 'label' is {r['label']!r}; expected a class name/alias, an index 0-7, or empty")
            continue
        if not r["path"].strip():
            bad.bad(where, "column 'path' is empty; expected an image path relative to the CSV")
            continue
        p = Path(r["path"].strip())
        path = p if p.is_absolute() else base / p
        if not check_file(path, bad):
            continue
        rows.append((str(path), lab, sp, r))
    classes = space_for(str(x) for x in (_label(v) for v in df["label"]) if isinstance(x, str))
    samples = []
    for path, lab, sp, r in rows:
        samples.append(Sample(path=path, label=-1 if lab == -1 else classes.index(lab), split=sp,
                              subject=(r.get("subject") or "").strip() or None,
                              sequence=(r.get("sequence") or "").strip() or None,
                              meta={k: r[k] for k in extra}))
    if not samples:
        raise DataError(f"{FMT}: {csv_path}: no usable rows for split(s) {', '.join(wanted)}")
    return ScanResult(samples=samples, classes=classes, skipped=bad.report, splits=splits)
