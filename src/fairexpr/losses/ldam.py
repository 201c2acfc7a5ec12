"""LDAM loss (Cao et al., NeurIPS 2019) = the DIFC "data imbalance" (DI) loss (Sreenivas et al. 2022, Eq. 3).

    L(z, y) = −log( e^{s(z_y − Δ_y)} / ( e^{s(z_y − Δ_y)} + Σ_{k≠y} e^{s z_k} ) )
            = CE( s · (z − Δ_y e_y), y ),          Δ_k = C / N_k^{1/4},  C = max_m · min_j N_j^{1/4}

so the rarest class gets the largest margin ``max_m``. DIFC Eq. 3 is the ``s = 1`` case with
``max_m = 0.3`` computed from the *source* counts; DIFC then enlarges the margins of confusing classes
(Eq. 6) — that update lives on top of this class and writes the new margins with :meth:`LDAMLoss.set_margins`.

Pairing with the classifier. LDAM-DRW (``kaidic/LDAM-DRW``) applies the margins to *cosine* logits from a
normalized linear classifier (``NormedLinear``: ``z_k = <x/‖x‖, w_k/‖w_k‖> ∈ [−1, 1]``, the models
package's normalized-linear head) and therefore rescales by ``s = 30`` (``max_m = 0.5``); with a plain
linear head logits are unbounded and ``s = 30`` would make the loss extremely sharp. The DIFC authors'
code (``manogna-s/da-fer``, per the project's reference notes) sets ``s = 1`` after construction and uses
a plain linear head. Our default is the LDAM-DRW pairing (``s = 30``, use with the normalized head);
for the DIFC paper setting pass ``s = 1, max_m = 0.3`` with a linear head.

Deferred re-weighting: pass ``weight`` (or attach a :class:`~fairexpr.losses.weights.DRWSchedule` as
``loss.drw`` and call ``loss.set_epoch(epoch)``); like LDAM-DRW, weights go to ``F.cross_entropy`` so
``reduction='mean'`` is the weighted mean ``Σ_i w_{y_i} ℓ_i / Σ_i w_{y_i}``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ._common import CountsLike, ReweightableLoss, as_class_vector, as_counts, check_logits, check_reduction, check_target


def margins_from_counts(counts: CountsLike, max_m: float = 0.5,
                        class_names: Sequence[str] | None = None) -> torch.Tensor:
    """LDAM margins ``Δ_k = C / N_k^{1/4}`` with ``C`` such that ``max_k Δ_k = max_m`` (float32 ``[K]``).

    Raises ``ConfigError`` naming the class when a count is zero or negative.
    """
    if not float(max_m) > 0:
        raise ConfigError(f"LDAM: max_m={max_m}; expected a margin > 0")
    n = as_counts(counts, "LDAM class_counts", class_names=class_names)
    m = n.pow(-0.25)
    return (m * (float(max_m) / m.max())).float()


class LDAMLoss(ReweightableLoss):
    """Label-distribution-aware margin loss; see the module docstring for the equation and pairing.

    Args:
        class_counts: training samples per class ``N_k`` (all > 0).
        max_m: the largest margin (that of the rarest class).
        s: logit scale (30 with a cosine / normalized-linear head as in LDAM-DRW; 1 as in DIFC's code).
        weight: optional per-class weights (DRW), or ``None``.
        reduction: ``mean`` | ``sum`` | ``none``.
        class_names: optional, only used to name a class in error messages.

    The margins are a registered (persistent) buffer ``margins`` so that margin updates (DIFC) are
    saved and restored with the loss's ``state_dict``.
    """

    margins: torch.Tensor

    def __init__(self, class_counts: CountsLike, max_m: float = 0.5, s: float = 30.0,
                 weight: CountsLike | None = None, reduction: str = "mean",
                 class_names: Sequence[str] | None = None) -> None:
        m = margins_from_counts(class_counts, max_m, class_names)
        if not float(s) > 0:
            raise ConfigError(f"LDAMLoss: s={s}; expected a logit scale > 0")
        super().__init__(weight=None, num_classes=m.numel())
        self.register_buffer("margins", m)
        self.set_weight(weight)
        self.max_m = float(max_m)
        self.s = float(s)
        self.reduction = check_reduction(reduction, "LDAMLoss")

    def set_margins(self, margins: CountsLike) -> None:
        """Replace the per-class margins Δ (one finite value >= 0 per class), e.g. DIFC's Δ' (Eq. 6)."""
        m = as_class_vector(margins, "LDAMLoss.set_margins", num_classes=self.num_classes, positive=False)
        with torch.no_grad():
            self.margins.copy_(m.to(self.margins.device))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits(logits, "LDAMLoss", self.num_classes)
        check_target(target, logits, "LDAMLoss")
        target = target.long()
        delta = self.margins.to(logits.dtype)[target]  # Δ_{y_i}, [N]
        shifted = logits - F.one_hot(target, logits.shape[1]).to(logits.dtype) * delta[:, None]
        return F.cross_entropy(self.s * shifted, target, weight=self._weight_for(logits), reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, max_m={self.max_m}, s={self.s}, reduction={self.reduction!r}"


__all__ = ["LDAMLoss", "margins_from_counts"]
