"""Splits and label protocols: holdout, subject k-fold, few-label subsets, label noise, label-space alignment.

All functions are pure, seeded (``numpy.random.default_rng``) and return index arrays into the
sequence they were given, so they compose. :func:`load_split` ties them to dataset addresses through
a small split-string grammar (:func:`resolve_split`):

============================  ================================================================
split string                  meaning
============================  ================================================================
``train`` / ``test`` / ...    an official split of the adapter (``all`` = every sample)
``fold3of10``                 test part of fold 3 (1-based) of a subject-independent 10-fold
                              split over all samples (:func:`subject_kfold`)
``fold3of10/rest``            the other 9 folds (the training part)
``train/val0.1``              a stratified 10 % holdout of ``train`` (:func:`stratified_holdout`)
``train/rest0.1``             the remaining 90 % (same seed -> exactly complementary)
``.../frac0.05``              a per-class 5 % label subset (:func:`label_fraction`; few-label protocol)
============================  ================================================================

Modifiers chain left to right with ``/`` (``train/rest0.1/frac0.1``); the first part is an official
split unless it is a modifier (then it applies to ``all``). ``rest`` after ``foldIofK`` or ``rest<f>``
selects the complement of that selection within its parent.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from ..labels import CANONICAL7, CANONICAL8, label_space
from .base import BadFilePolicy, DataError, FERDataset, Sample

__all__ = ["stratified_holdout", "subject_kfold", "label_fraction", "LabelAlignment", "align_label_spaces",
           "align_datasets", "ASYMMETRIC_PAIRS", "inject_label_noise", "SplitSpec", "resolve_split", "select",
           "load_split"]


def _labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def _check_fraction(fraction: float, name: str = "fraction", *, allow_one: bool = True) -> float:
    f = float(fraction)
    if not (0.0 < f < 1.0 or (allow_one and f == 1.0)):
        raise DataError(f"{name} must be in (0, 1{']' if allow_one else ')'}, got {fraction!r}")
    return f


def stratified_holdout(labels: Sequence[int] | np.ndarray, fraction: float, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of indices into ``(train_idx, val_idx)``.

    Per class k with ``N_k`` samples, ``n_k = round(fraction * N_k)`` go to validation, clipped to
    ``[1, N_k - 1]`` when ``N_k >= 2`` (every class stays in both parts) and 0 when ``N_k == 1``.
    Unlabelled samples (-1) are treated as one more stratum. Both outputs are sorted.
    """
    f = _check_fraction(fraction, "holdout fraction", allow_one=False)
    y = _labels(labels)
    rng = np.random.default_rng(seed)
    val = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        n = int(round(f * idx.size))
        n = 0 if idx.size < 2 else min(max(n, 1), idx.size - 1)
        val.append(rng.permutation(idx)[:n])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    mask = np.ones(y.size, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def _groups(samples: Sequence[Sample]) -> list[str]:
    """Group key per sample: subject, else sequence, else the sample itself (no grouping)."""
    out = []
    for i, s in enumerate(samples):
        out.append(s.subject or s.sequence or f"#sample{i}")
    return out


def subject_kfold(samples: Sequence[Sample], k: int = 10, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Subject-independent k-fold: ``[(train_idx, test_idx)] * k``.

    All samples of one subject (hence of one sequence) land in the same fold; samples without a
    subject are grouped by sequence, and samples with neither are their own group. Groups are
    shuffled with ``seed`` and then assigned, largest first, to the fold with the fewest samples so
    far (ties: lowest fold), which keeps fold sizes within one group size of each other.
    """
    k = int(k)
    groups = _groups(samples)
    uniq, inv, sizes = np.unique(np.asarray(groups, dtype=object), return_inverse=True, return_counts=True)
    if k < 2 or k > uniq.size:
        raise DataError(f"subject k-fold needs 2 <= k <= number of subjects/groups ({uniq.size}), got k={k}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(uniq.size)
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of_group = np.empty(uniq.size, dtype=np.int64)
    load = np.zeros(k, dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += sizes[g]
    fold = fold_of_group[inv]
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def label_fraction(labels: Sequence[int] | np.ndarray, fraction: float, seed: int = 0, min_per_class: int = 1
                   ) -> np.ndarray:
    """Per-class labelled subset for the few-label protocol (1/5/10/25/50/100 %); sorted indices.

    Class k keeps ``n_k = min(N_k, max(min_per_class, round(fraction * N_k)))`` samples, the first
    ``n_k`` of a per-class permutation drawn from ``seed``; subsets are therefore *nested*: with the
    same seed the 1 % subset is contained in the 5 % one. Unlabelled samples (-1) are never selected.
    """
    f = _check_fraction(fraction, "label fraction")
    y = _labels(labels)
    out = []
    for k in np.unique(y[y >= 0]):
        idx = np.flatnonzero(y == k)
        perm = np.random.default_rng([int(seed), int(k)]).permutation(idx)
        n = min(idx.size, max(int(min_per_class), int(round(f * idx.size))))
        out.append(perm[:n])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


# ---------------------------------------------------------------------------------------------------------
# cross-dataset label spaces

@dataclass(frozen=True)
class LabelAlignment:
    """Index maps from the source and target label spaces to the shared one (-1 = class dropped)."""

    classes: tuple[str, ...]
    source_map: np.ndarray
    target_map: np.ndarray
    dropped_source: tuple[str, ...]
    dropped_target: tuple[str, ...]

    def apply(self, labels: Sequence[int] | np.ndarray, side: Literal["source", "target"]
              ) -> tuple[np.ndarray, np.ndarray]:
        """``(kept_indices, new_labels)``: samples of dropped classes removed; unlabelled (-1) kept."""
        m = self.source_map if side == "source" else self.target_map
        y = _labels(labels)
        new = np.where(y >= 0, m[np.clip(y, 0, None)], -1)
        keep = (y < 0) | (new >= 0)
        return np.flatnonzero(keep), new[keep]


def align_label_spaces(source_classes: Sequence[str], target_classes: Sequence[str],
                       policy: Literal["intersect", "error"] = "intersect") -> LabelAlignment:
    """Align two canonical label spaces for a cross-dataset pair (e.g. CK+ with contempt -> FER2013).

    ``intersect``: the shared space keeps the classes present on both sides (in canonical order) and
    samples of the other classes are dropped (use :meth:`LabelAlignment.apply` or
    :func:`align_datasets`, which report how many). ``error``: differing spaces raise DataError.
    """
    src, tgt = tuple(source_classes), tuple(target_classes)
    for name, cl in (("source", src), ("target", tgt)):
        if cl not in (CANONICAL7, CANONICAL8):
            raise DataError(f"{name} classes must be a canonical label space, got {cl}")
    if policy not in ("intersect", "error"):
        raise DataError(f"label alignment policy must be 'intersect' or 'error', got {policy!r}")
    if src != tgt and policy == "error":
        raise DataError(f"source classes {src} and target classes {tgt} differ "
                        f"(only in: {sorted(set(src) ^ set(tgt))}); use policy='intersect' to drop them")
    shared = tuple(c for c in CANONICAL8 if c in src and c in tgt)
    smap = np.array([shared.index(c) if c in shared else -1 for c in src], dtype=np.int64)
    tmap = np.array([shared.index(c) if c in shared else -1 for c in tgt], dtype=np.int64)
    return LabelAlignment(shared, smap, tmap, tuple(c for c in src if c not in shared),
                          tuple(c for c in tgt if c not in shared))


def align_datasets(source: FERDataset, target: FERDataset, policy: Literal["intersect", "error"] = "intersect"
                   ) -> tuple[FERDataset, FERDataset, dict[str, Any]]:
    """Re-label both datasets into their shared space; returns them and a report of dropped samples."""
    al = align_label_spaces(source.classes, target.classes, policy)
    out, report = [], {"classes": list(al.classes)}
    for side, ds in (("source", source), ("target", target)):
        keep, new = al.apply(ds.labels, side)
        samples = [_relabel(ds.samples[i], int(l), ds.classes, al.classes) for i, l in zip(keep, new)]
        dropped = getattr(al, f"dropped_{side}")
        report[side] = {"dropped_classes": list(dropped), "dropped_samples": int(len(ds) - keep.size)}
        out.append(FERDataset(samples, al.classes, name=ds.name, mode=ds.mode, transform=ds.transform,
                              skipped=ds.skipped))
    return out[0], out[1], report


def _relabel(s: Sample, label: int, old: tuple[str, ...], new: tuple[str, ...]) -> Sample:
    import dataclasses

    soft = s.soft_label
    if soft is not None and old != new:
        v = np.array([soft[old.index(c)] for c in new], dtype=np.float64)
        soft = tuple(float(x) for x in (v / v.sum() if v.sum() > 0 else v))
    return dataclasses.replace(s, label=label, soft_label=soft)


# ---------------------------------------------------------------------------------------------------------
# label noise

#: asymmetric (class-dependent) noise: each class flips to its most confusable partner.
#: fear<->surprise, anger<->disgust, sadness<->neutral (the pairs FER confusion matrices mix most);
#: contempt -> disgust (8-class sets); happiness has no partner and is never flipped.
ASYMMETRIC_PAIRS: dict[str, str] = {"fear": "surprise", "surprise": "fear", "anger": "disgust", "disgust": "anger",
                                    "sadness": "neutral", "neutral": "sadness", "contempt": "disgust"}


def inject_label_noise(labels: Sequence[int] | np.ndarray, rate: float,
                       kind: Literal["symmetric", "asymmetric"] = "symmetric", seed: int = 0,
                       num_classes: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt labels at ``rate``; returns ``(noisy_labels, flipped_mask)``.

    Per class k (exact counts, not Bernoulli draws), ``round(rate * N_k)`` samples chosen with ``seed``
    are flipped: ``symmetric`` to a class drawn uniformly from the other ``num_classes - 1``;
    ``asymmetric`` to the partner in :data:`ASYMMETRIC_PAIRS` (classes without partner unchanged, so the
    overall rate is below ``rate``). Unlabelled samples (-1) are untouched.
    """
    if not 0.0 <= float(rate) <= 1.0:
        raise DataError(f"label noise rate must be in [0, 1], got {rate!r}")
    if kind not in ("symmetric", "asymmetric"):
        raise DataError(f"label noise kind must be 'symmetric' or 'asymmetric', got {kind!r}")
    classes = label_space(int(num_classes))
    y = _labels(labels)
    if y.size and y.max() >= len(classes):
        raise DataError(f"label {int(y.max())} out of range for {num_classes} classes")
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    for k in range(len(classes)):
        idx = np.flatnonzero(y == k)
        if kind == "asymmetric":
            partner = ASYMMETRIC_PAIRS.get(classes[k])
            if partner is None or partner not in classes:
                continue
        chosen = rng.permutation(idx)[: int(round(rate * idx.size))]
        if kind == "symmetric":
            shift = rng.integers(1, len(classes), size=chosen.size)
            noisy[chosen] = (k + shift) % len(classes)
        else:
            noisy[chosen] = classes.index(partner)  # type: ignore[arg-type]
    return noisy, noisy != y


# ---------------------------------------------------------------------------------------------------------
# split strings

_FOLD = re.compile(r"^fold(\d+)of(\d+)$")
_FRAC = re.compile(r"^(val|rest|frac)(\d*\.?\d+)$")


@dataclass(frozen=True)
class SplitSpec:
    """A parsed split string: an official ``base`` split (``None`` = all) and modifiers to apply."""

    base: str | None
    modifiers: tuple[tuple[str, Any], ...] = field(default_factory=tuple)


def resolve_split(spec: str | None) -> SplitSpec:
    """Parse a split string (grammar in the module docstring). Raises DataError on a malformed one.

    >>> resolve_split("fold3of10/rest")
    SplitSpec(base=None, modifiers=(('fold', (3, 10)), ('rest', None)))
    """
    if spec is None or spec == "" or spec == "all":
        return SplitSpec(None)
    parts = [p.strip() for p in str(spec).strip().lower().split("/")]
    base: str | None = None
    mods: list[tuple[str, Any]] = []
    for j, p in enumerate(parts):
        m, f = _FOLD.match(p), _FRAC.match(p)
        if m:
            i, k = int(m.group(1)), int(m.group(2))
            if not 1 <= i <= k or k < 2:
                raise DataError(f"split {spec!r}: fold{i}of{k} needs 1 <= fold <= k and k >= 2 (folds are 1-based)")
            mods.append(("fold", (i, k)))
        elif f:
            mods.append((f.group(1), float(f.group(2))))
        elif p == "rest":
            if not mods or mods[-1][0] != "fold":
                raise DataError(f"split {spec!r}: bare 'rest' must follow foldIofK (use rest<f> after val<f>)")
            mods.append(("rest", None))
        elif j == 0 and p:
            base = None if p == "all" else p
        else:
            raise DataError(f"split {spec!r}: cannot parse {p!r}; expected foldIofK, rest, val<f>, rest<f> or frac<f> "
                            f"after an official split name")
    return SplitSpec(base, tuple(mods))


def select(samples: Sequence[Sample], spec: SplitSpec, seed: int = 0) -> np.ndarray:
    """Indices into ``samples`` selected by the modifiers of ``spec`` (the base split is already applied)."""
    idx = np.arange(len(samples))
    complement = idx
    for name, arg in spec.modifiers:
        sub = [samples[i] for i in idx]
        labels = np.array([s.label for s in sub], dtype=np.int64)
        if name == "fold":
            i, k = arg
            tr, te = subject_kfold(sub, k, seed)[i - 1]
            idx, complement = idx[te], idx[tr]
        elif name == "rest" and arg is None:
            idx = complement
        elif name in ("val", "rest"):
            tr, va = stratified_holdout(labels, arg, seed)
            idx = idx[va if name == "val" else tr]
        elif name == "frac":
            idx = idx[label_fraction(labels, arg, seed)]
    return idx


def load_split(spec: str, split: str | None = None, seed: int = 0, *, on_bad_file: BadFilePolicy = "error",
               mode: str = "L", transform: Callable | None = None, **options: Any) -> FERDataset:
    """Dataset address + split string -> :class:`FERDataset` (e.g. ``load_split("ckplus:/d/ck", "fold1of10/rest")``).

    ``options`` go to the adapter (``protocol="majority"``, ``num_classes=7``, ...); ``seed`` drives
    every random modifier, so the same (spec, split, seed) always yields the same samples.
    """
    ss = resolve_split(split)
    ds = FERDataset.from_spec(spec, ss.base, on_bad_file=on_bad_file, mode=mode, transform=transform, **options)
    if ss.modifiers:
        ds = ds.subset(select(ds.samples, ss, seed).tolist())
    ds.name = f"{spec}[{split}]" if split else spec
    return ds
