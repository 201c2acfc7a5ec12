"""Normalized-entropy confidence (used by ``predict`` and GReFEL's reliability balancing; ARBEx ``utils.py``);
``H(p) / log K`` itself is :func:`fairexpr.ops.normalized_entropy`.

    H(p) = −Σ_k p_k log p_k   (0 log 0 = 0),      C(p) = 1 − H(p) / log K  ∈ [0, 1]

C = 1 for a one-hot distribution (certain), C = 0 for the uniform one (maximally uncertain).
"""
from __future__ import annotations

import math

import torch

from ..ops import normalized_entropy  # defined once, in the bottom layer (re-exported)


def _check(probs: torch.Tensor, dim: int) -> int:
    if probs.ndim == 0:
        raise ValueError("confidence: probs must have a class dimension, got a scalar")
    k = probs.shape[dim]
    if k < 2:
        raise ValueError(f"confidence: normalized entropy needs K >= 2 classes, got K = {k} along dim {dim}")
    return k


def entropy_confidence(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``C(p) = 1 − H(p) / log K`` along ``dim``."""
    return 1.0 - normalized_entropy(probs, dim)


def entropy_confidence_from_logits(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``C(softmax(z))``, computed from log-probabilities for numerical stability."""
    k = _check(logits, dim)
    logp = torch.log_softmax(logits, dim=dim)
    # p = 0 (underflow) gives logp = -inf; clamping keeps 0 * log 0 = 0 and finite gradients
    logp = logp.clamp_min(torch.finfo(logp.dtype).min)
    h = -(logp.exp() * logp).sum(dim=dim)
    return 1.0 - h / math.log(k)


__all__ = ["normalized_entropy", "entropy_confidence", "entropy_confidence_from_logits"]
