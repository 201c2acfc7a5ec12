"""Focal loss (Lin et al., ICCV 2017), multi-class form.

    FL_i = −α_{y_i} (1 − p_{i,y_i})^γ log p_{i,y_i},     p_i = softmax(z_i)

γ = 0 and no α is plain cross-entropy. ``alpha`` is an optional per-class vector (α_t = α_{y_i}); a
DRW schedule sets it through :meth:`set_weight`. ``reduction='mean'`` divides by N (not by Σ α_t).
Note: LDAM-DRW's ``FocalLoss`` is a different variant — it computes p from the *weighted* CE,
``p = exp(−w_y CE)`` — we implement the paper's formula.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ._common import CountsLike, ReweightableLoss, check_logits, check_reduction, check_target, reduce


class FocalLoss(ReweightableLoss):
    """``−α_t (1 − p_t)^γ log p_t`` (see the module docstring)."""

    def __init__(self, gamma: float = 2.0, alpha: CountsLike | None = None, reduction: str = "mean",
                 num_classes: int | None = None) -> None:
        if not float(gamma) >= 0:
            raise ConfigError(f"FocalLoss: gamma={gamma}; expected gamma >= 0")
        super().__init__(weight=alpha, num_classes=num_classes)
        self.gamma = float(gamma)
        self.reduction = check_reduction(reduction, "FocalLoss")

    @property
    def alpha(self) -> torch.Tensor | None:
        return self.weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits(logits, "FocalLoss", self.num_classes)
        check_target(target, logits, "FocalLoss")
        target = target.long()
        logp_t = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        p_t = logp_t.exp()
        loss = -((1.0 - p_t) ** self.gamma) * logp_t if self.gamma else -logp_t
        alpha = self._weight_for(logits)
        if alpha is not None:
            loss = alpha[target] * loss
        return reduce(loss, self.reduction)


__all__ = ["FocalLoss"]
