"""Every evaluation metric of fairexpr, defined once.

Inputs are always ``y_true`` (int ``[N]``, indices into ``classes``), and either ``probs`` (float
``[N, K]``, rows summing to 1) or hard predictions ``y_pred`` (int ``[N]``). ``K = len(classes)``.

Conventions (they matter for imbalanced FER, where a test split can miss a class):

* **Per-class accuracy** (recall) of class ``k`` is ``acc_k = |{i : y_i = k, ŷ_i = k}| / n_k`` and is
  *undefined* when ``n_k = 0``. Classes absent from ``y_true`` are excluded from every per-class
  aggregate and listed under ``absent_classes`` — never counted as 0 or 1.
* **Balanced accuracy** (mean per-class accuracy) ``= (1/|P|) Σ_{k∈P} acc_k`` over the set ``P`` of
  classes present in ``y_true`` (identical to ``sklearn.metrics.balanced_accuracy_score``).
* **std / min / max of per-class accuracy** over ``P``; std is the *population* std (``ddof=0``), as
  Face2Exp and CUCN report the spread of their per-class accuracies; ``gap = max − min``.
* **Macro-F1** ``= (1/|L|) Σ_{k∈L} 2·TP_k / (2·TP_k + FP_k + FN_k)`` over the labels ``L`` present in
  ``y_true`` *or* ``y_pred`` (sklearn's default ``f1_score(average="macro")``).
* **ECE** (Guo et al. 2017): 15 equal-width bins ``(b/15, (b+1)/15]`` of the top-label confidence
  ``c_i = max_k p_ik``; ``ECE = Σ_b (|B_b|/N)·|acc(B_b) − conf(B_b)|``.
* **NLL** ``= −(1/N) Σ_i log p_{i,y_i}`` (probabilities clipped at 1e-12).
* **Brier** (multiclass) ``= (1/N) Σ_i Σ_k (p_ik − 1[y_i = k])²`` ∈ [0, 2].
* **DIFC confusion score** (Sreenivas et al. 2022): with ``S_k`` the samples whose argmax is ``k`` and
  ``p1 ≥ p2`` the two largest probabilities of a sample,
  ``conf_k = 1 / E_{x∈S_k}(p1 − p2)``. Empty ``S_k`` → undefined (NaN, ranked last); a zero mean
  gap → ``+inf`` (ranked first).
* **Cluster quality** of embeddings grouped by ``y_true``: Davies–Bouldin (lower is better) and
  Calinski–Harabasz (higher is better), from scikit-learn.

:func:`evaluate` returns all of them as one JSON-serialisable dict (undefined values are ``null``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

ECE_BINS = 15
_EPS = 1e-12

__all__ = [
    "ECE_BINS",
    "accuracy",
    "balanced_accuracy",
    "brier_score",
    "cluster_quality",
    "confusion_matrix",
    "confusion_order",
    "confusion_scores",
    "evaluate",
    "expected_calibration_error",
    "macro_f1",
    "nll",
    "per_class_accuracy",
    "per_class_summary",
    "reliability_bins",
    "soft_target_metrics",
]


# ----------------------------------------------------------------------------------------- inputs
def _labels(y: Any, num_classes: int, name: str = "y_true") -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class indices, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError(f"{name}: expected integer class indices, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= num_classes):
        bad = a[(a < 0) | (a >= num_classes)][:5].tolist()
        raise ValueError(f"{name}: class indices must lie in [0, {num_classes - 1}] "
                         f"(unlabelled samples, label -1, cannot be evaluated); found {bad}")
    return a


# DIFC's feature-confusion scores (Eqs. 4-6) are defined once in the bottom layer (the DIFC loss uses them too)
from ..ops import confusion_order, confusion_scores  # noqa: E402


def _probs(p: Any, num_classes: int | None = None, n: int | None = None, atol: float = 1e-3) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"probs: expected a 2-D array [N, K], got shape {a.shape}")
    if num_classes is not None and a.shape[1] != num_classes:
        raise ValueError(f"probs: expected K={num_classes} columns (one per class), got {a.shape[1]}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"probs: expected N={n} rows (one per label), got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise ValueError("probs: contains NaN or inf")
    if a.size and (a.min() < -atol or np.abs(a.sum(1) - 1).max() > atol):
        raise ValueError("probs: rows must be probability distributions (non-negative, summing to 1); "
                         "pass softmax(logits), not logits")
    return np.clip(a, 0.0, 1.0)


def _pred(y_true: np.ndarray, y_pred: Any, num_classes: int) -> np.ndarray:
    p = _labels(y_pred, num_classes, "y_pred")
    if p.shape != y_true.shape:
        raise ValueError(f"y_pred: expected {y_true.shape[0]} predictions (one per label), got {p.shape[0]}")
    return p


# ---------------------------------------------------------------------------------------- metrics
def accuracy(y_true: Any, y_pred: Any) -> float:
    """Top-1 accuracy ``(1/N) Σ_i 1[ŷ_i = y_i]``."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true/y_pred: expected two 1-D arrays of equal length, got {t.shape} and {p.shape}")
    if t.size == 0:
        raise ValueError("y_true: cannot evaluate zero samples")
    return float(np.mean(t == p))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts ``C[i, j] = |{n : y_n = i, ŷ_n = j}|`` (rows = truth) and the row-normalised matrix
    ``C[i, j] / Σ_j C[i, j]`` (a row of zeros for classes absent from ``y_true``)."""
    t = _labels(y_true, num_classes)
    p = _pred(t, y_pred, num_classes)
    cm = np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    return cm, norm


def per_class_accuracy(y_true: Any, y_pred: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(acc, n)``: per-class accuracy ``acc_k = C[k, k] / n_k`` (NaN where ``n_k = 0``) and ``n_k``."""
    cm, _ = confusion_matrix(y_true, y_pred, num_classes)
    n = cm.sum(1)
    acc = np.divide(np.diag(cm).astype(np.float64), n, out=np.full(num_classes, np.nan), where=n > 0)
    return acc, n


def balanced_accuracy(y_true: Any, y_pred: Any, num_classes: int) -> float:
    """Mean per-class accuracy over the classes present in ``y_true`` (absent classes excluded)."""
    acc, n = per_class_accuracy(y_true, y_pred, num_classes)
    if not np.any(n > 0):
        raise ValueError("y_true: cannot evaluate zero samples")
    return float(np.mean(acc[n > 0]))


def per_class_summary(acc: Any) -> dict[str, float]:
    """Spread of per-class accuracies over the defined entries (NaN = absent class, skipped):
    population std ``sqrt((1/|P|) Σ_k (acc_k − mean)²)``, min, max and ``gap = max − min``."""
    a = np.asarray(acc, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        raise ValueError("per-class accuracy: no class is present in y_true")
    return {"std": float(np.std(a, ddof=0)), "min": float(a.min()), "max": float(a.max()),
            "gap": float(a.max() - a.min())}


def macro_f1(y_true: Any, y_pred: Any, num_classes: int) -> tuple[float, np.ndarray]:
    """``(macro_f1, f1_per_class)``. ``F1_k = 2·TP_k / (2·TP_k + FP_k + FN_k)``; the macro mean runs
    over classes present in ``y_true`` or ``y_pred`` (sklearn's convention); classes in neither get
    NaN in ``f1_per_class``."""
    cm, _ = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.full(num_classes, np.nan), where=denom > 0)
    if not np.any(denom > 0):
        raise ValueError("y_true: cannot evaluate zero samples")
    return float(np.mean(f1[denom > 0])), f1


def reliability_bins(probs: Any, y_true: Any, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """Top-label reliability data over ``n_bins`` equal-width bins ``(lo, hi]`` of confidence.

    Returns ``edges`` (``n_bins + 1``), per-bin ``confidence`` (mean top probability), ``accuracy``
    and ``count`` (``confidence``/``accuracy`` are NaN for empty bins) and
    ``ece = Σ_b (count_b / N)·|accuracy_b − confidence_b|``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins: expected a positive number of bins, got {n_bins}")
    p = _probs(probs)
    t = _labels(y_true, p.shape[1])
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true/probs: {t.shape[0]} labels but {p.shape[0]} probability rows")
    if t.size == 0:
        raise ValueError("y_true: cannot evaluate zero samples")
    conf = p.max(1)
    correct = (p.argmax(1) == t).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b holds (edges[b], edges[b+1]]; confidence 0 (impossible for a distribution) goes to bin 0
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    s_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    s_acc = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        m_conf = np.where(count > 0, s_conf / np.maximum(count, 1), np.nan)
        m_acc = np.where(count > 0, s_acc / np.maximum(count, 1), np.nan)
    ece = float(np.sum(np.abs(s_acc - s_conf)) / t.size)  # = Σ_b |B_b|/N · |acc_b − conf_b|
    return {"edges": edges, "confidence": m_conf, "accuracy": m_acc, "count": count, "ece": ece}


def expected_calibration_error(probs: Any, y_true: Any, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE with ``n_bins`` equal-width bins (see :func:`reliability_bins`)."""
    return reliability_bins(probs, y_true, n_bins)["ece"]


def nll(probs: Any, y_true: Any) -> float:
    """Negative log-likelihood ``−(1/N) Σ_i log max(p_{i,y_i}, 1e-12)``."""
    p = _probs(probs)
    t = _labels(y_true, p.shape[1])
    if t.shape[0] != p.shape[0] or t.size == 0:
        raise ValueError(f"y_true/probs: need the same positive number of rows, got {t.shape[0]} and {p.shape[0]}")
    return float(-np.mean(np.log(np.maximum(p[np.arange(t.size), t], _EPS))))


def brier_score(probs: Any, y_true: Any) -> float:
    """Multiclass Brier score ``(1/N) Σ_i Σ_k (p_ik − 1[y_i = k])²`` (0 = perfect, 2 = worst)."""
    p = _probs(probs)
    t = _labels(y_true, p.shape[1])
    if t.shape[0] != p.shape[0] or t.size == 0:
        raise ValueError(f"y_true/probs: need the same positive number of rows, got {t.shape[0]} and {p.shape[0]}")
    onehot = np.eye(p.shape[1])[t]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def cluster_quality(embeddings: Any, labels: Any) -> dict[str, float | None | str]:
    """Davies–Bouldin (lower = tighter, better separated classes) and Calinski–Harabasz (higher =
    better) of ``embeddings [N, D]`` grouped by ``labels``; ``None`` (with ``reason``) when there are
    fewer than 2 groups or not more samples than groups (sklearn's requirement)."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

    e = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if e.ndim != 2 or e.shape[0] != y.shape[0]:
        raise ValueError(f"embeddings: expected shape [N={y.shape[0]}, D], got {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("embeddings: contains NaN or inf")
    n_groups = np.unique(y).size
    if n_groups < 2 or n_groups >= e.shape[0]:
        return {"davies_bouldin": None, "calinski_harabasz": None,
                "reason": f"needs 2 <= classes < samples; got {n_groups} classes, {e.shape[0]} samples"}
    return {"davies_bouldin": float(davies_bouldin_score(e, y)),
            "calinski_harabasz": float(calinski_harabasz_score(e, y))}


def soft_target_metrics(probs: Any, soft_targets: Any) -> dict[str, float]:
    """Agreement with annotator vote distributions ``q`` (e.g. FERPlus probability labels):
    ``soft_cross_entropy = −(1/N) Σ_i Σ_k q_ik log p_ik``, ``kl_divergence = (1/N) Σ_i Σ_k q_ik log(q_ik/p_ik)``
    and ``soft_accuracy = (1/N) Σ_i q_{i, argmax p_i}`` (expected agreement with a random annotator)."""
    p = _probs(probs)
    q = np.asarray(soft_targets, dtype=np.float64)
    if q.shape != p.shape:
        raise ValueError(f"soft_targets: expected shape {p.shape} like probs, got {q.shape}")
    if not np.all(np.isfinite(q)) or q.min() < 0:
        raise ValueError("soft_targets: must be finite and non-negative")
    s = q.sum(1, keepdims=True)
    if np.any(s <= 0):
        raise ValueError("soft_targets: every row needs at least one positive vote")
    q = q / s
    logp = np.log(np.maximum(p, _EPS))
    ce = float(-np.mean(np.sum(q * logp, 1)))
    ent = float(-np.mean(np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0), 1)))
    return {"soft_cross_entropy": ce, "kl_divergence": ce - ent,
            "soft_accuracy": float(np.mean(q[np.arange(q.shape[0]), p.argmax(1)]))}


# ----------------------------------------------------------------------------------------- bundle
def _json(x: Any) -> Any:
    """numpy -> plain Python, with NaN/inf mapped to None so the output is strict JSON."""
    if isinstance(x, dict):
        return {str(k): _json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    return x


def evaluate(
    y_true: Any,
    probs: Any | None,
    classes: Sequence[str],
    embeddings: Any | None = None,
    soft_targets: Any | None = None,
    *,
    y_pred: Any | None = None,
    n_bins: int = ECE_BINS,
) -> dict[str, Any]:
    """All metrics of one prediction set as a JSON-serialisable dict.

    ``probs [N, K]`` gives predictions ``argmax`` plus the calibration metrics (ECE, NLL, Brier,
    reliability bins) and DIFC confusion scores; alternatively pass ``probs=None`` and hard
    ``y_pred`` (those entries are then ``None``). Per-class values are dicts keyed by class name;
    undefined values (absent classes, empty bins) are ``null``. Keys: ``n``, ``classes``,
    ``n_per_class``, ``present_classes``, ``absent_classes``, ``accuracy``, ``balanced_accuracy``,
    ``macro_f1``, ``per_class_accuracy``, ``per_class_f1``, ``per_class_accuracy_std|min|max|gap``,
    ``worst_class``, ``best_class``, ``pred_per_class``, ``confusion_matrix``,
    ``confusion_matrix_normalized``, ``ece``, ``nll``, ``brier``, ``reliability``, ``difc_confusion``,
    ``cluster`` and ``soft``.
    """
    classes = [str(c) for c in classes]
    k = len(classes)
    if k < 2:
        raise ValueError(f"classes: expected at least 2 class names, got {classes}")
    t = _labels(y_true, k)
    if t.size == 0:
        raise ValueError("y_true: cannot evaluate zero samples")
    p = None
    if probs is not None:
        p = _probs(probs, k, t.size)
        pred = p.argmax(1)
        if y_pred is not None and not np.array_equal(_pred(t, y_pred, k), pred):
            raise ValueError("y_pred: disagrees with argmax(probs); pass one or the other")
    elif y_pred is not None:
        pred = _pred(t, y_pred, k)
    else:
        raise ValueError("evaluate: pass probs [N, K] or y_pred [N]")

    cm, cm_norm = confusion_matrix(t, pred, k)
    acc_k, n_k = per_class_accuracy(t, pred, k)
    spread = per_class_summary(acc_k)
    mf1, f1_k = macro_f1(t, pred, k)
    present = [c for c, n in zip(classes, n_k) if n > 0]
    finite = np.where(np.isfinite(acc_k), acc_k, np.nan)
    out: dict[str, Any] = {
        "n": int(t.size),
        "classes": classes,
        "n_per_class": dict(zip(classes, n_k)),
        "present_classes": present,
        "absent_classes": [c for c, n in zip(classes, n_k) if n == 0],
        "accuracy": accuracy(t, pred),
        "balanced_accuracy": float(np.nanmean(acc_k)),
        "macro_f1": mf1,
        "per_class_accuracy": dict(zip(classes, acc_k)),
        "per_class_f1": dict(zip(classes, f1_k)),
        "per_class_accuracy_std": spread["std"],
        "per_class_accuracy_min": spread["min"],
        "per_class_accuracy_max": spread["max"],
        "per_class_accuracy_gap": spread["gap"],
        "worst_class": classes[int(np.nanargmin(finite))],
        "best_class": classes[int(np.nanargmax(finite))],
        "pred_per_class": dict(zip(classes, np.bincount(pred, minlength=k))),
        "confusion_matrix": cm,
        "confusion_matrix_normalized": cm_norm,
        "ece": None, "nll": None, "brier": None, "reliability": None, "difc_confusion": None,
        "cluster": None, "soft": None,
    }
    if p is not None:
        rel = reliability_bins(p, t, n_bins)
        cs = confusion_scores(p)
        order = confusion_order(cs["score"])
        out.update({
            "ece": rel["ece"], "nll": nll(p, t), "brier": brier_score(p, t),
            "reliability": {key: rel[key] for key in ("edges", "confidence", "accuracy", "count")},
            "difc_confusion": {
                "score": dict(zip(classes, cs["score"])),
                "score_is_inf": [c for c, s in zip(classes, cs["score"]) if np.isposinf(s)],
                "mean_top2_gap": dict(zip(classes, cs["gap"])),
                "n_predicted": dict(zip(classes, cs["count"])),
                "order": [classes[i] for i in order],
            },
        })
        if soft_targets is not None:
            out["soft"] = soft_target_metrics(p, soft_targets)
    elif soft_targets is not None:
        raise ValueError("soft_targets: need probs to compare against vote distributions")
    if embeddings is not None:
        out["cluster"] = cluster_quality(embeddings, t)
    return _json(out)
