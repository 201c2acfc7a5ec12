"""Temperature scaling (Guo et al., ICML 2017) and reliability-diagram data.

A single scalar ``T > 0`` rescales the logits, ``p = softmax(z / T)``; it is fitted on a validation
split by minimising the negative log-likelihood

    T* = argmin_T  −(1/N) Σ_i log softmax(z_i / T)_{y_i}.

The NLL is convex in ``β = 1/T`` (a log-sum-exp of affine functions of β minus a linear term), hence
unimodal in ``log T``; we minimise it over ``u = log T`` with bounded Brent search (scipy), which is
robust and needs no learning rate. Argmax — and therefore accuracy — is unchanged by ``T``.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

from .metrics import ECE_BINS, _json, _labels, brier_score, nll, reliability_bins

#: search range for T; a fit that ends on a bound is reported with a warning
T_MIN, T_MAX = 1e-2, 1e2

__all__ = ["T_MAX", "T_MIN", "apply_temperature", "calibration_summary", "fit_temperature",
           "reliability_diagram", "softmax", "temperature_nll"]


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _logits(z: Any) -> np.ndarray:
    a = _as_numpy(z).astype(np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] < 2:
        raise ValueError(f"logits: expected a non-empty 2-D array [N, K>=2], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("logits: contains NaN or inf")
    return a


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """``softmax(z / T)`` row-wise, numerically stable, as float64 numpy."""
    z = _logits(logits)
    return np.exp(log_softmax(z / float(temperature), axis=1))


def temperature_nll(logits: Any, labels: Any, temperature: float) -> float:
    """``−(1/N) Σ_i log softmax(z_i / T)_{y_i}`` (exact, via log-sum-exp)."""
    z = _logits(logits)
    y = _labels(_as_numpy(labels), z.shape[1], "labels")
    s = z / float(temperature)
    return float(np.mean(logsumexp(s, axis=1) - s[np.arange(y.size), y]))


def fit_temperature(logits: Any, labels: Any, *, t_min: float = T_MIN, t_max: float = T_MAX) -> float:
    """Fit the temperature ``T* > 0`` minimising validation NLL (see module docstring).

    ``logits`` ``[N, K]`` (numpy or torch), ``labels`` ``[N]`` class indices. Returns a Python float
    in ``[t_min, t_max]``; warns when the optimum lies on a bound (e.g. perfectly separable data,
    where the NLL keeps falling as ``T → 0``).
    """
    z = _logits(logits)
    y = _labels(_as_numpy(labels), z.shape[1], "labels")
    if y.size != z.shape[0]:
        raise ValueError(f"labels: expected {z.shape[0]} labels (one per logit row), got {y.size}")
    if not 0 < t_min < t_max:
        raise ValueError(f"temperature bounds must satisfy 0 < t_min < t_max, got ({t_min}, {t_max})")
    rows = np.arange(y.size)

    def objective(u: float) -> float:
        s = z * np.exp(-u)
        return float(np.mean(logsumexp(s, axis=1) - s[rows, y]))

    lo, hi = np.log(t_min), np.log(t_max)
    res = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    u = float(res.x)
    # Brent may stop a hair inside a bound; compare against the bounds themselves
    for b in (lo, hi):
        if objective(b) <= res.fun:
            u = b
    t = float(np.exp(u))
    if abs(u - lo) < 1e-4 or abs(u - hi) < 1e-4:
        warnings.warn(f"fit_temperature: optimum at the search bound T={t:g}; the validation NLL is "
                      f"monotone in T on [{t_min:g}, {t_max:g}] (separable or degenerate data?)",
                      RuntimeWarning, stacklevel=2)
    return t


def apply_temperature(logits: Any, temperature: float) -> Any:
    """``z / T`` — returns the same type as given (torch tensor stays a tensor)."""
    t = float(temperature)
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"temperature: expected a finite T > 0, got {temperature!r}")
    if hasattr(logits, "detach"):
        return logits / t
    return np.asarray(logits, dtype=np.float64) / t


def reliability_diagram(probs: Any, labels: Any, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """Reliability-diagram data (JSON-ready): ``edges``, per-bin mean ``confidence``, ``accuracy``
    (``null`` for empty bins), ``count``, and the ``ece`` they add up to."""
    return _json(reliability_bins(_as_numpy(probs), _as_numpy(labels), n_bins))


def calibration_summary(logits: Any, labels: Any, temperature: float, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """Before/after numbers for a fitted temperature, in the shape the report draws::

        {"temperature", "before": {"ece","nll","brier"}, "after": {...},
         "reliability_before": <reliability_diagram>, "reliability_after": <...>}

    The engine stores this as ``metrics["calibration"]`` in ``eval/<split>/metrics.json``.
    """
    y = _as_numpy(labels)
    out: dict[str, Any] = {"temperature": float(temperature)}
    for tag, t in (("before", 1.0), ("after", float(temperature))):
        p = softmax(logits, t)
        rel = reliability_diagram(p, y, n_bins)
        out[tag] = {"ece": rel["ece"], "nll": nll(p, y), "brier": brier_score(p, y)}
        out[f"reliability_{tag}"] = rel
    return out
