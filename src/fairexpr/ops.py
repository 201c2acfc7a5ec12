"""Small equations more than one layer needs, defined once in the bottom layer (models, losses, evaluation and
inference import them from here). NumPy only at import time: the ONNX inference path never loads torch.

Normalised entropy (GReFEL Eq. 11; ARBEx ``utils.normalized_entropy``; the ``reliable`` flag of ``predict``):

    H̃(p) = −Σ_k p_k log p_k / log K  ∈ [0, 1]   (0 log 0 = 0)

0 for a one-hot distribution, 1 for the uniform one. (GReFEL writes the denominator as ``N_cls``; dividing by
``log N_cls`` is what makes the stated endpoints hold.)
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["normalized_entropy", "confusion_scores", "confusion_order"]


def normalized_entropy(probs: Any, dim: int = -1) -> Any:
    """``H(p) / log K`` along ``dim`` of probabilities ``probs`` (rows summing to 1): a torch tensor (autograd
    works through it) or a NumPy array (the ONNX path, which never imports torch).

    ``p log p`` is computed as ``p · log(max(p, tiny))``: exactly ``0 log 0 = 0`` at ``p = 0``, and a finite
    gradient there (``xlogy``'s is ``−inf``), so a softmax that underflows cannot put NaN into training.
    Raises ``ValueError`` for a scalar or fewer than 2 classes.
    """
    if probs.ndim == 0:
        raise ValueError("normalized entropy: probs must have a class dimension, got a scalar")
    k = probs.shape[dim]
    if k < 2:
        raise ValueError(f"normalized entropy needs K >= 2 classes, got K = {k} along dim {dim}")
    if isinstance(probs, np.ndarray):
        p = probs.astype(np.float64, copy=False)
        return -(p * np.log(np.maximum(p, np.finfo(np.float64).tiny))).sum(axis=dim) / math.log(k)
    import torch  # a tensor was passed: torch is loaded already

    tiny = torch.finfo(probs.dtype).tiny if probs.is_floating_point() else 1e-38
    return -(probs * probs.clamp_min(tiny).log()).sum(dim=dim) / math.log(k)


def confusion_scores(probs: Any) -> dict[str, np.ndarray]:
    """DIFC feature-confusion scores from (unlabelled target) probabilities.

    With ``S_k = {x : argmax p(x) = k}`` and ``p1(x) ≥ p2(x)`` the two largest probabilities:
    ``gap_k = (1/|S_k|) Σ_{x∈S_k} (p1(x) − p2(x))`` and ``conf_k = 1 / gap_k``.
    A small mean top-2 gap means the classifier hesitates on the samples it assigns to ``k``, so the
    class is *confusing*. Returns ``score`` (``conf_k``: NaN when ``S_k`` is empty, ``+inf`` when
    ``gap_k = 0``), ``gap`` (NaN when empty) and ``count`` (``|S_k|``). Argmax ties go to the lower
    class index (numpy's convention).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs: expected a 2-D array [N, K], got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs: contains NaN or inf")
    if p.size and (p.min() < -1e-3 or np.abs(p.sum(1) - 1).max() > 1e-3):
        raise ValueError("probs: rows must be probability distributions (non-negative, summing to 1); "
                         "pass softmax(logits), not logits")
    p = np.clip(p, 0.0, 1.0)
    k = p.shape[1]
    if k < 2:
        raise ValueError("probs: confusion scores need at least 2 classes")
    pred = p.argmax(1)
    top2 = np.sort(p, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    count = np.bincount(pred, minlength=k)
    sums = np.bincount(pred, weights=margin, minlength=k)
    gap = np.where(count > 0, sums / np.maximum(count, 1), np.nan)
    with np.errstate(divide="ignore"):
        score = np.where(count > 0, np.where(gap > 0, 1.0 / np.where(gap > 0, gap, 1.0), np.inf), np.nan)
    return {"score": score, "gap": gap, "count": count}


def confusion_order(conf: Sequence[float] | np.ndarray) -> list[int]:
    """Class indices ordered most confusing first: ``+inf`` scores first, then finite scores in
    decreasing order, then undefined (NaN) scores last; ties are broken by the lower class index."""
    c = np.asarray(conf, dtype=np.float64)

    def key(i: int) -> tuple[int, float, int]:
        v = c[i]
        if np.isnan(v):
            return (2, 0.0, i)
        if np.isposinf(v):
            return (0, 0.0, i)
        return (1, -v, i)

    return sorted(range(c.size), key=key)
