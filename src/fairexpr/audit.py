"""Dataset audit: class counts and imbalance ratios, exact duplicates and train/test leakage, conflicting
labels, near-blank and unreadable images, image size/mode mix; a cleaned manifest and a count chart.

Every image is decoded once (in parallel worker processes for file-backed sets) and identified by the
*decoded-pixel hash* ``blake2b(mode | shape | uint8 pixel bytes)``, so a JPEG and a PNG of the same
pixels, or two copies under different names, are the same image; re-encoded (lossy) copies are not.

Imbalance ratio (DIFC, Sreenivas et al. 2022, Eq. 1), per split and class ``k``::

    IR_k = N_k / min_{j : N_j > 0} N_j

Classes with ``N_k = 0`` get ``IR_k = 0`` and are listed as empty (the minimum runs over the classes
present, so a class a dataset lacks, e.g. contempt in FER2013 or neutral in CK+, does not make every
ratio infinite). The split's imbalance ratio is ``max_k IR_k``.

Typical use::

    rep = audit("fer2013:/data/fer2013")
    rep.to_json("audit.json"); rep.plot("counts.png")
    rep.write_clean_manifest("clean.csv", drop="test_dups_in_train")   # usable as csv:clean.csv
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from ._io import atomic_write_bytes, atomic_write_text
from .data.base import BadFilePolicy, DataError, FERDataset, Sample, ScanResult, SkipReport, decode_image, scan

__all__ = ["AuditReport", "DROP_POLICIES", "audit", "imbalance_ratios", "pixel_hash"]

#: what :meth:`AuditReport.write_clean_manifest` can drop (unreadable images are always dropped)
DROP_POLICIES: dict[str, str] = {
    "none": "keep every readable image",
    "test_dups_in_train": "drop images of the other splits whose pixels also occur in the reference (train) split",
    "cross_split_dups": "drop images whose pixels occur in an earlier split (split order: train first)",
    "all_dups": "keep only the first copy of every duplicate group (within and across splits)",
    "conflicting": "drop every member of a duplicate group whose copies carry different labels",
    "near_blank": "drop near-blank images (pixel std below the threshold)",
}
_SERIAL_BELOW = 1500  # files; below this a process pool costs more than it saves
_CHUNK = 256


# ---------------------------------------------------------------------------------------------------------------------
# equations & hashing
# ---------------------------------------------------------------------------------------------------------------------


def imbalance_ratios(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """DIFC Eq. 1: ``IR_k = N_k / min_{j: N_j > 0} N_j``; ``IR_k = 0`` for an empty class; all zeros if all empty.

    >>> imbalance_ratios([436, 3995, 0]).round(3).tolist()
    [1.0, 9.163, 0.0]
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {n.shape}")
    if (n < 0).any():
        raise ValueError(f"counts must be >= 0, got {n.tolist()}")
    present = n > 0
    if not present.any():
        return np.zeros_like(n)
    return np.where(present, n / n[present].min(), 0.0)


_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _normalize(arr: np.ndarray) -> tuple[np.ndarray, str]:
    """Canonical decoded form: ``[H,W]`` (``L``) or ``[H,W,3]`` (``RGB``); RGB with three equal channels -> ``L``."""
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        raise DataError(f"pixel array has dtype {a.dtype}; expected uint8")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[:, :, :3]
        if np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 0], a[:, :, 2]):
            a = a[:, :, 0]
        else:
            return np.ascontiguousarray(a), "RGB"
    if a.ndim == 2:
        return np.ascontiguousarray(a), "L"
    raise DataError(f"pixel array has shape {a.shape}; expected [H,W] or [H,W,3]")


def pixel_hash(arr: np.ndarray) -> bytes:
    """16-byte blake2b of the decoded pixels ``mode | shape | bytes`` in canonical form (``L`` [H,W] or ``RGB``
    [H,W,3]; an RGB image whose three channels are equal hashes as its ``L`` form)."""
    a, mode = _normalize(arr)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{mode}{a.shape}".encode())
    h.update(a.tobytes())
    return h.digest()


# ---------------------------------------------------------------------------------------------------------------------
# decoding (runs in worker processes)
# ---------------------------------------------------------------------------------------------------------------------

_Row = tuple  # (hash bytes | None, height, width, original mode, std, error | None)


def _inspect_array(arr: np.ndarray, mode: str) -> _Row:
    a, _ = _normalize(arr)
    return pixel_hash(a), a.shape[0], a.shape[1], mode, float(a.std()), None


def _inspect_file(path: str) -> _Row:
    try:
        with Image.open(path) as im:
            mode = im.mode
            im.load()
            if im.mode not in ("L", "RGB"):
                im = im.convert("L" if im.mode in _GREY_MODES else "RGB")
            arr = np.asarray(im)
        return _inspect_array(arr, mode)
    except Exception:  # noqa: BLE001 - re-decode through decode_image for its clear message
        try:
            decode_image(path)
            reason = "cannot decode as an image"
        except DataError as e:
            reason = str(e)
        except Exception as e:  # noqa: BLE001
            reason = f"{path}: {type(e).__name__}: {e}"
        return None, 0, 0, "", float("nan"), reason


def _inspect_chunk(paths: list[str]) -> list[_Row]:
    return [_inspect_file(p) for p in paths]


def _decode_all(samples: Sequence[Sample], workers: int, progress: bool) -> list[_Row]:
    from tqdm.auto import tqdm

    rows: list[_Row | None] = [None] * len(samples)
    file_idx: list[int] = []
    for i, s in enumerate(samples):
        if s.pixels is not None:
            try:
                rows[i] = _inspect_array(np.asarray(s.pixels), "L" if np.ndim(s.pixels) == 2 else "RGB")
            except DataError as e:
                rows[i] = (None, 0, 0, "", float("nan"), f"{s.path}: {e}")
        else:
            file_idx.append(i)
    paths = [str(samples[i].path) for i in file_idx]
    chunks = [paths[k:k + _CHUNK] for k in range(0, len(paths), _CHUNK)]
    bar = tqdm(total=len(paths), desc="audit: decoding", unit="img", disable=not progress or not paths,
               leave=False)
    out: list[_Row] = []
    if workers <= 1 or len(paths) < _SERIAL_BELOW:
        for ch in chunks:
            out.extend(_inspect_chunk(ch))
            bar.update(len(ch))
    else:
        method = "fork" if "fork" in mp.get_all_start_methods() else None
        with mp.get_context(method).Pool(workers) as pool:
            for res in pool.imap(_inspect_chunk, chunks):
                out.extend(res)
                bar.update(len(res))
    bar.close()
    for i, r in zip(file_idx, out):
        rows[i] = r
    return rows  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class AuditReport:
    """Result of :func:`audit`. ``table`` has one row per scanned sample (see :func:`audit`)."""

    dataset: str
    classes: tuple[str, ...]
    splits: tuple[str, ...]
    table: Any  # pandas.DataFrame
    near_blank_std: float
    reference_split: str | None
    skipped: SkipReport = field(default_factory=SkipReport)
    timing: dict[str, float] = field(default_factory=dict)

    # ---- derived views -------------------------------------------------------------------------------
    @property
    def readable(self) -> Any:
        return self.table[self.table["error"].isna()]

    def counts(self, split: str | None = None) -> np.ndarray:
        """Per-class counts of readable labelled images (all splits when ``split`` is None)."""
        t = self.readable
        if split is not None:
            t = t[t["split"] == split]
        lab = t["label"].to_numpy()
        return np.bincount(lab[lab >= 0], minlength=len(self.classes))

    @cached_property
    def _group_index(self) -> list[np.ndarray]:
        """Row indices of every hash group with more than one readable image (groups in first-seen order)."""
        t = self.table
        h = t["hash"].to_numpy()
        idx = np.flatnonzero(t["error"].isna().to_numpy())
        dup = idx[t["hash"].iloc[idx].duplicated(keep=False).to_numpy()]
        groups: dict[str, list[int]] = defaultdict(list)
        for i in dup.tolist():
            groups[h[i]].append(i)
        return [np.asarray(v) for v in groups.values()]

    def duplicate_groups(self) -> list[Any]:
        """Hash groups with more than one readable image, each as a DataFrame slice of ``table``."""
        return [self.table.iloc[g] for g in self._group_index]

    def leaked(self) -> Any:
        """Rows of the non-reference splits whose hash also occurs in the reference split."""
        t = self.readable
        if self.reference_split is None:
            return t.iloc[:0]
        ref = set(t.loc[t["split"] == self.reference_split, "hash"])
        return t[(t["split"] != self.reference_split) & t["hash"].isin(ref)]

    def near_blank(self) -> Any:
        t = self.readable
        return t[t["std"] < self.near_blank_std]

    def unreadable(self) -> Any:
        return self.table[self.table["error"].notna()]

    def _conflicting_index(self) -> list[np.ndarray]:
        lab = self.table["label"].to_numpy()
        return [g for g in self._group_index if len({int(x) for x in lab[g] if x >= 0}) > 1]

    def conflicting_groups(self) -> list[Any]:
        """Duplicate groups whose labelled copies carry more than one label."""
        return [self.table.iloc[g] for g in self._conflicting_index()]

    def identities(self) -> dict[str, Any]:
        """Who is in each split, where the adapter knows it (CK+: subject and sequence from the file names; a
        ``csv`` manifest's ``subject`` column): subjects and sequences per split, images per subject, and the
        **subjects shared between splits** — identity leakage, which pixel hashes cannot see (two photos of
        one person are different images). ``known`` is False when no sample carries a subject id; splits
        without ids are listed under ``splits_without_ids``."""
        t = self.readable
        has, has_seq = t["subject"].notna(), t["sequence"].notna()
        if not bool(has.any()):
            return {"known": False, "splits_without_ids": list(self.splits),
                    "note": "the adapter gives no subject ids for this dataset: identity leakage cannot be checked"}
        per_split: dict[str, Any] = {}
        subjects: dict[str, set[str]] = {}
        for sp in self.splits:
            ts = t[(t["split"] == sp) & has]
            if ts.empty:
                continue
            per = ts.groupby("subject").size().to_numpy()
            subjects[sp] = set(ts["subject"])
            seq = t[(t["split"] == sp) & has_seq]
            per_split[sp] = {
                "subjects": int(len(subjects[sp])),
                "sequences": int(seq["sequence"].nunique()) if len(seq) else None,
                "images_without_subject": int(((t["split"] == sp) & ~has).sum()),
                "images_per_subject": {"min": int(per.min()), "median": float(np.median(per)),
                                       "mean": round(float(per.mean()), 2), "max": int(per.max())},
            }
        names = list(subjects)
        overlap = {a: {b: int(len(subjects[a] & subjects[b])) for b in names if b != a} for a in names}
        shared = {f"{a}|{b}": sorted(subjects[a] & subjects[b]) for i, a in enumerate(names) for b in names[i + 1:]
                  if subjects[a] & subjects[b]}
        return {"known": True, "per_split": per_split,
                "splits_without_ids": [sp for sp in self.splits if sp not in subjects],
                "subject_overlap": overlap, "shared_subjects": shared,
                "n_subjects": int(t.loc[has, "subject"].nunique())}

    # ---- serialization ---------------------------------------------------------------------------------
    def _member(self, i: int) -> dict[str, Any]:
        t = self.table
        lab = int(t["label"].iat[i])
        return {"path": t["path"].iat[i], "split": t["split"].iat[i], "label": self.classes[lab] if lab >= 0 else None}

    def to_dict(self) -> dict[str, Any]:
        t = self.readable
        per_split: dict[str, Any] = {}
        for sp in self.splits:
            ts = t[t["split"] == sp]
            c = self.counts(sp)
            ir = imbalance_ratios(c)
            dup_mask = ts.duplicated("hash", keep=False)
            per_split[sp] = {
                "n": int(len(ts)),
                "counts": {k: int(v) for k, v in zip(self.classes, c)},
                "imbalance_ratio": {k: round(float(v), 4) for k, v in zip(self.classes, ir)},
                "max_imbalance_ratio": round(float(ir.max()), 4) if c.any() else None,
                "empty_classes": [k for k, v in zip(self.classes, c) if v == 0],
                "unlabelled": int((ts["label"] < 0).sum()),
                "unreadable": int(((self.table["split"] == sp) & self.table["error"].notna()).sum()),
                "near_blank": int((ts["std"] < self.near_blank_std).sum()),
                "unique_images": int(ts["hash"].nunique()),
                "images_in_duplicate_groups": int(dup_mask.sum()),
                "redundant_copies": int(len(ts) - ts["hash"].nunique()),
            }
        hashes_by_split = {sp: set(t.loc[t["split"] == sp, "hash"]) for sp in self.splits}
        cross = {a: {b: int(t.loc[t["split"] == b, "hash"].isin(hashes_by_split[a]).sum())
                     for b in self.splits if b != a} for a in self.splits}
        lab_all = self.table["label"].to_numpy()
        split_all = self.table["split"].to_numpy()
        hash_all = self.table["hash"].to_numpy()
        groups = []
        for g in self._group_index:
            labs = sorted({int(x) for x in lab_all[g] if x >= 0})
            groups.append({"hash": hash_all[g[0]], "size": int(len(g)),
                           "splits": [sp for sp in self.splits if sp in set(split_all[g])],
                           "conflicting": len(labs) > 1, "labels": [self.classes[k] for k in labs],
                           "members": [self._member(i) for i in g.tolist()]})
        # leakage: rows of the other splits whose hash occurs in the reference split
        ref_by_hash: dict[str, list[int]] = defaultdict(list)
        if self.reference_split is not None:
            for g in self._group_index:
                for i in g.tolist():
                    if split_all[i] == self.reference_split:
                        ref_by_hash[hash_all[i]].append(i)
        leakage = {}
        n_leak = 0
        for sp in self.splits:
            if sp == self.reference_split or self.reference_split is None:
                continue
            items = []
            for g in self._group_index:
                for i in g.tolist():
                    if split_all[i] == sp and hash_all[i] in ref_by_hash:
                        m = ref_by_hash[hash_all[i]]
                        items.append({**self._member(i), "in_reference": [self._member(j) for j in m],
                                      "label_conflict": any(lab_all[j] != lab_all[i] for j in m)})
            items.sort(key=lambda d: d["path"])
            n_leak += len(items)
            leakage[sp] = {"n": len(items), "n_label_conflicts": sum(d["label_conflict"] for d in items),
                           "items": items}
        nb = self.near_blank()
        unr = self.unreadable()
        return {
            "dataset": self.dataset,
            "classes": list(self.classes),
            "splits": list(self.splits),
            "n_images": int(len(self.table)),
            "n_readable": int(len(t)),
            "per_split": per_split,
            "imbalance_ratio_definition": "IR_k = N_k / min_{j: N_j>0} N_j (DIFC Eq. 1); 0 for empty classes",
            "duplicates": {
                "n_groups": len(groups),
                "n_images_in_groups": int(sum(g["size"] for g in groups)),
                "n_conflicting_groups": int(sum(g["conflicting"] for g in groups)),
                "n_cross_split_groups": int(sum(len(g["splits"]) > 1 for g in groups)),
                "cross_split": cross,
                "groups": groups,
            },
            "leakage": {"reference_split": self.reference_split, "n": n_leak, "by_split": leakage},
            "identities": self.identities(),
            "near_blank": {"threshold_std": self.near_blank_std, "n": int(len(nb)),
                           "items": [{**self._member(self.table.index.get_loc(i)), "std": round(float(v), 4)}
                                     for i, v in zip(nb.index, nb["std"])]},
            "unreadable": {"n": int(len(unr)),
                           "items": [{"path": r.path, "split": r.split, "reason": r.error} for r in unr.itertuples()]},
            "skipped_by_adapter": {"n": len(self.skipped),
                                   "items": [{"path": p, "reason": why} for p, why in self.skipped.items]},
            "image_sizes": {k: int(v) for k, v in Counter(f"{w}x{h}" for w, h in zip(t["width"], t["height"]))
                            .most_common()},
            "modes": {k: int(v) for k, v in Counter(t["mode"]).most_common()},
            "timing_s": {k: round(v, 3) for k, v in self.timing.items()},
        }

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 2) -> str:
        """The report as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    # ---- cleaned manifest ------------------------------------------------------------------------------
    def drop_mask(self, drop: str | Iterable[str] = "test_dups_in_train") -> tuple[np.ndarray, dict[str, int]]:
        """Boolean mask over ``table`` rows to drop, and how many rows each policy dropped (overlaps counted once
        per policy). Unreadable rows are always dropped. ``drop`` is a policy name, a comma-separated list, or a
        list of names from :data:`DROP_POLICIES`."""
        policies = [p.strip() for p in (drop.split(",") if isinstance(drop, str) else drop) if p.strip()]
        unknown = [p for p in policies if p not in DROP_POLICIES]
        if unknown:
            raise DataError(f"unknown drop policy {', '.join(unknown)}; expected one or more of "
                            f"{', '.join(DROP_POLICIES)} (comma-separated)")
        t = self.table
        ok = t["error"].isna().to_numpy()
        mask = ~ok
        why = {"unreadable": int(mask.sum())}
        order = {sp: i for i, sp in enumerate(self.splits)}
        for p in policies:
            if p == "none":
                continue
            if p == "test_dups_in_train":
                if self.reference_split is None:
                    m = np.zeros(len(t), bool)
                else:
                    ref = set(t.loc[ok & (t["split"] == self.reference_split).to_numpy(), "hash"])
                    m = ok & (t["split"] != self.reference_split).to_numpy() & t["hash"].isin(ref).to_numpy()
            elif p in ("cross_split_dups", "all_dups"):
                # keep order: reference split first, then the other splits in order, then table order
                rank = np.array([-1 if sp == self.reference_split else order.get(sp, len(order))
                                 for sp in t["split"]])
                m = np.zeros(len(t), bool)
                splits = t["split"].to_numpy()
                for g in self._group_index:
                    g = g[np.lexsort((g, rank[g]))]
                    if p == "all_dups":
                        m[g[1:]] = True
                    else:
                        m[g[splits[g] != splits[g[0]]]] = True
            elif p == "conflicting":
                m = np.zeros(len(t), bool)
                for g in self._conflicting_index():
                    m[g] = True
            else:  # near_blank
                m = ok & (t["std"] < self.near_blank_std).to_numpy()
            why[p] = int(m.sum())
            mask |= m
        return mask, why

    def write_clean_manifest(self, path: str | os.PathLike, drop: str | Iterable[str] = "test_dups_in_train"
                             ) -> dict[str, int]:
        """Write a ``csv`` manifest (``path,label,subject,split``; absolute paths, canonical class names, empty
        label = unlabelled) of the images kept after ``drop`` (see :data:`DROP_POLICIES`). Load it with
        ``csv:PATH``. Returns ``{"written": n, "dropped": n, <policy>: n, ...}``."""
        import pandas as pd

        t = self.table
        inline = t["path"].str.contains("://", regex=False) | t["inline"]
        if inline.any():
            raise DataError(f"{self.dataset}: a clean manifest lists image files, but {int(inline.sum())} samples have "
                            f"inline pixels (e.g. {t.loc[inline, 'path'].iloc[0]!r}); write the images to disk first "
                            f"(e.g. fairexpr.data.synthetic.write_folder) and audit that folder")
        mask, why = self.drop_mask(drop)
        kept = t[~mask]
        out = pd.DataFrame({
            "path": [os.path.abspath(p) for p in kept["path"]],
            "label": [self.classes[k] if k >= 0 else "" for k in kept["label"]],
            "subject": kept["subject"].fillna("").to_numpy(),
            "split": kept["split"].to_numpy(),
        })
        atomic_write_text(path, out.to_csv(index=False))
        return {"written": int(len(out)), "dropped": int(mask.sum()), **why}

    # ---- chart ---------------------------------------------------------------------------------------------
    def plot(self, path: str | os.PathLike, *, title: str | None = None, dpi: int = 150) -> Path:
        """Bar chart of per-class counts, one bar group per class with a bar per split, each bar annotated with
        its imbalance ratio ``N_k / min_j N_j`` of that split (like DIFC Fig. 1). Written as PNG."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        k, s = len(self.classes), max(1, len(self.splits))
        width = 0.8 / s
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * k * max(1, s / 2)), 4.2), layout="constrained")
        x = np.arange(k)
        ymax = 1
        for j, sp in enumerate(self.splits):
            c = self.counts(sp)
            ir = imbalance_ratios(c)
            pos = x - 0.4 + width * (j + 0.5)
            bars = ax.bar(pos, c, width, label=f"{sp} (n={int(c.sum()):,}, IR max {ir.max():.1f})")
            ymax = max(ymax, int(c.max()) if c.size else 1)
            for b, n, r in zip(bars, c, ir):
                ax.annotate(f"{r:.1f}" if n else "0", (b.get_x() + b.get_width() / 2, b.get_height()),
                            xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                            fontsize=7 if s > 2 else 8, rotation=90 if s > 2 else 0)
        ax.set_xticks(x, self.classes)
        ax.set_ylabel("images")
        ax.set_ylim(0, ymax * 1.22)
        ax.set_title(title or f"{self.dataset}: class counts (bar labels: imbalance ratio N_k / min_j N_j)",
                     fontsize=10)
        ax.legend(fontsize=8, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        out = Path(path)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        plt.close(fig)
        atomic_write_bytes(out, buf.getvalue())
        return out


# ---------------------------------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------------------------------


def _collect(spec_or_dataset: str | FERDataset | ScanResult, splits: Sequence[str] | None,
             on_bad_file: BadFilePolicy, options: dict[str, Any]) -> tuple[str, list[Sample], tuple[str, ...],
                                                                          tuple[str, ...], SkipReport]:
    if isinstance(spec_or_dataset, str):
        name = spec_or_dataset
        skipped = SkipReport()
        samples: list[Sample] = []
        classes: tuple[str, ...] | None = None
        declared: tuple[str, ...] = ()
        for sp in (list(splits) if splits else [None]):
            res = scan(spec_or_dataset, sp, on_bad_file=on_bad_file, **options)
            if classes is not None and res.classes != classes:
                raise DataError(f"{name}: splits disagree on the label space ({classes} vs {res.classes})")
            classes = res.classes
            declared = declared or tuple(res.splits)
            samples.extend(res.samples)
            skipped.items.extend(res.skipped.items)
        assert classes is not None
        return name, samples, classes, declared, skipped
    if isinstance(spec_or_dataset, FERDataset):
        ds = spec_or_dataset
        samples = [s for s in ds.samples if not splits or s.split in splits]
        return ds.name or "dataset", samples, ds.classes, (), ds.skipped
    if isinstance(spec_or_dataset, ScanResult):
        r = spec_or_dataset
        samples = [s for s in r.samples if not splits or s.split in splits]
        return "dataset", samples, r.classes, tuple(r.splits), r.skipped
    raise DataError(f"audit expects a FORMAT:PATH string, a FERDataset or a ScanResult, got "
                    f"{type(spec_or_dataset).__name__}")


def audit(spec_or_dataset: str | FERDataset | ScanResult, *, splits: Sequence[str] | None = None,
          on_bad_file: BadFilePolicy = "error", progress: bool = True, near_blank_std: float = 2.0,
          reference_split: str | None = None, workers: int | None = None,
          options: dict[str, Any] | None = None) -> AuditReport:
    """Audit a dataset (``"FORMAT:PATH"``, a :class:`FERDataset` or a :class:`ScanResult`).

    Args:
        splits: audit only these splits (default: all the adapter has).
        on_bad_file: ``'error'`` raises :class:`DataError` on the first unreadable image (naming it);
            ``'skip'`` records it in the report (counted and listed). Also passed to the adapter.
        near_blank_std: images whose pixel standard deviation (0..255 scale) is below this are near-blank.
        reference_split: the split leakage is measured against (default ``'train'`` if present, else the first).
        workers: decoding processes (default: all CPUs; small sets decode serially).
        options: adapter options for ``scan`` (e.g. ``{"class_map": ...}``).

    The report's ``table`` (pandas) has one row per sample: ``path, split, label, subject, sequence, inline, hash,
    height, width, mode, std, error``.
    """
    import pandas as pd

    if on_bad_file not in ("error", "skip"):
        raise DataError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
    if not near_blank_std >= 0:
        raise DataError(f"near_blank_std must be >= 0, got {near_blank_std}")
    t0 = time.perf_counter()
    name, samples, classes, declared, skipped = _collect(spec_or_dataset, splits, on_bad_file, options or {})
    t1 = time.perf_counter()
    if not samples:
        raise DataError(f"{name}: nothing to audit (no samples" + (f" in splits {list(splits)})" if splits else ")"))
    rows = _decode_all(samples, workers if workers is not None else (os.cpu_count() or 1), progress)
    t2 = time.perf_counter()
    errors = [r[5] for r in rows]
    if on_bad_file == "error":
        bad = [e for e in errors if e is not None]
        if bad:
            raise DataError(f"{bad[0]} ({len(bad)} unreadable image(s) in total; use on_bad_file='skip' / "
                            f"--on-bad-file skip to list them instead)")
    present = list(dict.fromkeys(s.split for s in samples))
    order = [sp for sp in declared if sp in present] + [sp for sp in present if sp not in declared]
    order.sort(key=lambda sp: sp != "train")  # train first (stable: the rest keep the adapter's order)
    table = pd.DataFrame({
        "path": [str(s.path) for s in samples],
        "split": [s.split for s in samples],
        "label": np.fromiter((s.label for s in samples), np.int64, len(samples)),
        "subject": [s.subject for s in samples],
        "sequence": [s.sequence for s in samples],
        "inline": np.fromiter((s.pixels is not None for s in samples), bool, len(samples)),
        "hash": [r[0].hex() if r[0] is not None else None for r in rows],
        "height": np.fromiter((r[1] for r in rows), np.int64, len(rows)),
        "width": np.fromiter((r[2] for r in rows), np.int64, len(rows)),
        "mode": [r[3] for r in rows],
        "std": np.fromiter((r[4] for r in rows), np.float64, len(rows)),
        "error": errors,
    })
    if reference_split is None:
        reference_split = "train" if "train" in order else (order[0] if len(order) > 1 else None)
    elif reference_split not in order:
        raise DataError(f"reference split {reference_split!r} is not among the audited splits {order}")
    t3 = time.perf_counter()
    return AuditReport(dataset=name, classes=tuple(classes), splits=tuple(order), table=table,
                       near_blank_std=float(near_blank_std), reference_split=reference_split, skipped=skipped,
                       timing={"scan": t1 - t0, "decode": t2 - t1, "tabulate": t3 - t2, "total": t3 - t0})
