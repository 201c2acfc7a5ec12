"""Logit-adjusted cross-entropy (Menon et al., ICLR 2021) and balanced softmax (Ren et al., NeurIPS 2020).

    L_LA(z, y) = CE(z + τ log π, y) = −log( π_y^τ e^{z_y} / Σ_k π_k^τ e^{z_k} ),   π_k = n_k / Σ_j n_j

Balanced softmax, ``−log( n_y e^{z_y} / Σ_k n_k e^{z_k} )``, is exactly the τ = 1 case: ``log n_k =
log π_k + log N`` and the constant ``log N`` cancels in the softmax. At test time classify with the raw
logits ``z`` (no adjustment) — the adjustment exists only in training, which is what makes the
prediction balanced.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ._common import CountsLike, ReweightableLoss, as_counts, check_logits, check_reduction, check_target


class LogitAdjustedLoss(ReweightableLoss):
    """``CE(z + τ log π, y)`` with class priors π from the training counts (all > 0).

    Optional per-class ``weight`` behaves as in :class:`~fairexpr.losses.ce.CrossEntropyLoss`.
    """

    log_prior: torch.Tensor

    def __init__(self, class_counts: CountsLike, tau: float = 1.0, weight: CountsLike | None = None,
                 reduction: str = "mean", class_names: Sequence[str] | None = None) -> None:
        n = as_counts(class_counts, f"{type(self).__name__} class_counts", class_names=class_names)
        if not float(tau) >= 0:
            raise ConfigError(f"{type(self).__name__}: tau={tau}; expected tau >= 0")
        super().__init__(weight=None, num_classes=n.numel())
        self.register_buffer("log_prior", (n / n.sum()).log().float())
        self.set_weight(weight)
        self.tau = float(tau)
        self.reduction = check_reduction(reduction, type(self).__name__)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_logits(logits, name, self.num_classes)
        check_target(target, logits, name)
        adjusted = logits + self.tau * self.log_prior.to(logits.dtype)
        return F.cross_entropy(adjusted, target.long(), weight=self._weight_for(logits), reduction=self.reduction)


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced softmax (Ren et al. 2020): ``−log( n_y e^{z_y} / Σ_k n_k e^{z_k} )`` = logit adjustment, τ = 1."""

    def __init__(self, class_counts: CountsLike, weight: CountsLike | None = None, reduction: str = "mean",
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__(class_counts, tau=1.0, weight=weight, reduction=reduction, class_names=class_names)


__all__ = ["LogitAdjustedLoss", "BalancedSoftmaxLoss"]
