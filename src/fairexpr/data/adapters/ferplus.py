"""FER+ (Barsoum et al. 2016): FER2013 photos relabelled by 10 annotators each.

Layout produced by Microsoft's ``generate_training_data.py``::

    PATH/FER2013Train/fer0000000.png ... + label.csv
    PATH/FER2013Valid/...               + label.csv
    PATH/FER2013Test/...                + label.csv

``label.csv`` rows (no header): ``image, "(x, y, w, h)", neutral, happiness, surprise, sadness, anger,
disgust, fear, contempt, unknown, NF`` (10 vote counts; a variant without the box column is accepted).
Splits: ``train``, ``val``, ``test``.

Options
-------
``protocol="majority"`` (default) — the FERPlus reference rule (``microsoft/FERPlus`` ``src/ferplus.py``,
``_process_data`` + ``load_folders``):

1. outlier removal: every vote count ``v_i <= 1`` is set to 0 (a class named by a single annotator);
2. with ``S = sum_i v_i`` over all 10 columns and ``m = max_i v_i``, the image has a majority label
   ``argmax_i v_i`` iff ``m > S / 2``; otherwise it is excluded (``no majority``);
3. images whose majority is ``unknown`` or ``NF`` (not a face) are excluded;
4. with ``num_classes=7``, images whose majority is ``contempt`` are excluded.

``protocol="probability"`` — soft targets: after the same outlier removal, images where ``unknown`` or
``NF`` has strictly more votes than every emotion are excluded (the reference keeps an image only when
the argmax of its 10 columns is an emotion); the soft label is the vote distribution over the emotion
classes, ``p_k = v_k / sum_j v_j`` (contempt dropped before normalising when ``num_classes=7``), and the
hard label is ``argmax_k p_k`` (first canonical class on ties). The reference code's "probability"
reader additionally truncates the distribution to its top <= 3 emotions covering 75 % of the votes;
we keep the full distribution (Barsoum et al.'s cross-entropy/PLD target) — set ``outlier_votes=0``
to also keep single votes.

``num_classes``: 8 (default, with contempt) or 7. Every exclusion is recorded in the SkipReport with
its reason; the raw 10 votes stay in ``meta["votes"]`` (FERPlus column order).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..base import BadFilePolicy, DataError, Sample, ScanResult, register_adapter
from ._common import BadFiles, check_file, check_split, class_space, folder_sizes, no_options, require_dir

FMT = "ferplus"
SPLITS = ("train", "val", "test")
FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
#: vote columns of label.csv, in file order
VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
N_EMOTIONS = 8  # the first 8 vote columns are emotions


def majority_labels(votes: np.ndarray, outlier_votes: int = 1) -> np.ndarray:
    """FERPlus majority rule on a ``[N,10]`` vote array (FERPlus column order).

    ``v_i <- 0 if v_i <= outlier_votes``; label ``= argmax v`` if ``max v > sum v / 2`` else ``-1``.
    Returns FERPlus column indices (0..9, where 8 = unknown, 9 = NF) or -1 for "no majority".
    """
    v = np.where(votes <= outlier_votes, 0, votes).astype(np.float64)
    m = v.max(axis=1)
    lab = v.argmax(axis=1)
    return np.where(m > 0.5 * v.sum(axis=1), lab, -1)


def vote_distribution(votes: np.ndarray, classes: tuple[str, ...], outlier_votes: int = 1
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Soft labels over canonical ``classes`` from ``[N,10]`` votes, and a keep mask.

    Keep iff some emotion (restricted to ``classes``) has a vote after outlier removal and
    ``max(unknown, NF) <= max_k v_k`` over all 8 emotion columns (reference argmax-is-emotion rule).
    ``p_k = v_k / sum_{j in classes} v_j``.
    """
    v = np.where(votes <= outlier_votes, 0, votes).astype(np.float64)
    emo = v[:, :N_EMOTIONS]
    idx = [VOTE_COLUMNS.index(c) for c in classes]
    dist = v[:, idx]
    tot = dist.sum(axis=1)
    keep = (tot > 0) & (v[:, N_EMOTIONS:].max(axis=1) <= emo.max(axis=1))
    soft = np.divide(dist, tot[:, None], out=np.zeros_like(dist), where=tot[:, None] > 0)
    return soft.astype(np.float32), keep


@register_adapter(FMT, "FER+: FER2013{Train,Valid,Test}/fer<7 digits>.png + label.csv with 10 vote columns")
def scan_ferplus(root: Path, split: str | None = None, *, on_bad_file: BadFilePolicy = "error",
                 protocol: str = "majority", num_classes: int | str = 8, outlier_votes: int | str = 1,
                 **options: Any) -> ScanResult:
    """FER+ with the majority or probability protocol (see module docstring)."""
    no_options(FMT, options)
    if protocol not in ("majority", "probability"):
        raise DataError(f"{FMT}: option protocol must be 'majority' or 'probability', got {protocol!r}")
    classes = class_space(num_classes, FMT)
    try:
        outlier_votes = int(outlier_votes)
    except ValueError:
        raise DataError(f"{FMT}: option outlier_votes must be an integer, got {outlier_votes!r}") from None
    wanted = check_split(FMT, split, SPLITS, {"valid": ("val",), "validation": ("val",)})
    bad = BadFiles(FMT, on_bad_file)
    samples: list[Sample] = []
    for sp in wanted:
        folder = require_dir(root / FOLDERS[sp], FMT, "FER2013Train/, FER2013Valid/, FER2013Test/ each with label.csv")
        label_csv = folder / "label.csv"
        if not label_csv.is_file():
            raise DataError(f"{FMT}: missing file {str(label_csv)!r}; expected label.csv (image, box, 10 votes)")
        names, boxes, votes = _read_label_csv(label_csv, bad)
        sizes = folder_sizes(folder)
        present = np.array([check_file(folder / n, bad, sizes) for n in names], dtype=bool)
        if protocol == "majority":
            maj = majority_labels(votes, outlier_votes)
            soft = None
        else:
            soft, keep = vote_distribution(votes, classes, outlier_votes)
        for i, name in enumerate(names):
            if not present[i]:
                continue
            path = str(folder / name)
            if protocol == "majority":
                col = int(maj[i])
                if col < 0:
                    bad.exclude(path, "ferplus majority: no class has more than half of the votes")
                    continue
                cname = VOTE_COLUMNS[col]
                if col >= N_EMOTIONS:
                    bad.exclude(path, f"ferplus majority: majority vote is {cname!r} (not an expression)")
                    continue
                if cname not in classes:
                    bad.exclude(path, f"ferplus majority: majority is {cname!r}, not in the {len(classes)}-class protocol")
                    continue
                label, sl = classes.index(cname), None
            else:
                if not keep[i]:
                    bad.exclude(path, "ferplus probability: unknown/NF votes dominate or no expression votes left")
                    continue
                sl = tuple(float(x) for x in soft[i])
                label = int(np.argmax(soft[i]))
            samples.append(Sample(path=path, label=label, split=sp, soft_label=sl,
                                  meta={"usage": USAGE[sp], "box": boxes[i], "votes": tuple(int(x) for x in votes[i])}))
    if not samples:
        raise DataError(f"{FMT}: no usable images under {root} for split(s) {', '.join(wanted)}")
    return ScanResult(samples=samples, classes=classes, skipped=bad.report, splits=SPLITS)


def _read_label_csv(path: Path, bad: BadFiles) -> tuple[list[str], list[tuple[int, ...] | None], np.ndarray]:
    names: list[str] = []
    boxes: list[tuple[int, ...] | None] = []
    votes: list[list[int]] = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            if lineno == 1 and row[0].strip().lower() in ("image", "image name", "name", "file"):
                continue  # optional header
            if len(row) == 12:
                box_s, vote_s = row[1], row[2:]
            elif len(row) == 11:
                box_s, vote_s = None, row[1:]
            else:
                bad.bad(f"{path} line {lineno}", f"has {len(row)} columns; expected 12 (image, box, 10 votes: "
                                                 f"{', '.join(VOTE_COLUMNS)})")
                continue
            try:
                v = [int(float(x)) for x in vote_s]
            except ValueError:
                bad.bad(f"{path} line {lineno}", f"vote columns must be integers, got {vote_s}")
                continue
            if min(v) < 0:
                bad.bad(f"{path} line {lineno}", f"negative vote count in {vote_s}")
                continue
            box = None
            if box_s is not None:
                try:
                    box = tuple(int(x) for x in box_s.strip().strip("()").split(","))
                except ValueError:
                    box = None
            names.append(row[0].strip())
            boxes.append(box)
            votes.append(v)
    if not names:
        raise DataError(f"{FMT}: {path} has no label rows; expected image, box, 10 votes per line")
    return names, boxes, np.asarray(votes, dtype=np.int64).reshape(-1, 10)
