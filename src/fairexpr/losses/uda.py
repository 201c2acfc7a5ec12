"""Losses of unsupervised domain adaptation (DANN, MCD, SAFN/AFN), as Transfer-Learning-Library defines them
(``tllib/alignment/{dann,mcd}.py``, ``tllib/normalization/afn.py``); the networks they train (gradient reversal,
domain discriminator, the MCD and AFN networks) are in :mod:`fairexpr.models.uda_heads`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["domain_adversarial_loss", "classifier_discrepancy", "entropy", "AdaptiveFeatureNorm"]


def domain_adversarial_loss(d_source: torch.Tensor, d_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DANN transfer loss on discriminator logits (source label 1, target label 0):

    ``L_d = ½ BCE(σ(d_s), 1) + ½ BCE(σ(d_t), 0)``; returns ``(L_d, domain accuracy)``.
    """
    ls = F.binary_cross_entropy_with_logits(d_source, torch.ones_like(d_source))
    lt = F.binary_cross_entropy_with_logits(d_target, torch.zeros_like(d_target))
    with torch.no_grad():
        acc = 0.5 * ((d_source > 0).float().mean() + (d_target <= 0).float().mean())
    return 0.5 * (ls + lt), acc


def classifier_discrepancy(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """MCD discrepancy ``d(p1, p2) = (1 / (N K)) Σ_i Σ_k |p1_ik − p2_ik|`` (mean absolute difference
    of the two classifiers' softmax outputs)."""
    if p1.shape != p2.shape:
        raise ValueError(f"classifier_discrepancy: shapes differ, {tuple(p1.shape)} vs {tuple(p2.shape)}")
    return (p1 - p2).abs().mean()


def entropy(p: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean prediction entropy ``H = −(1/N) Σ_i Σ_k p_ik log(p_ik + ε)`` (ε as Transfer-Learning-Library)."""
    return -(p * torch.log(p + eps)).sum(1).mean()


class AdaptiveFeatureNorm(nn.Module):
    """Stepwise adaptive feature norm (Xu et al. 2019):

    ``L_norm = (1/N) Σ_i (‖f_i‖₂ − (‖f_i‖₂^{stop-grad} + Δr))²`` — each step pushes every feature
    norm up by ``Δr`` from its current (detached) value.
    """

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        self.delta = float(delta)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        norm = f.norm(p=2, dim=1)
        radius = norm.detach() + self.delta
        return ((norm - radius) ** 2).mean()
