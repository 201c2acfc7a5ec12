"""Cross-entropy family: label smoothing, soft (distribution) targets, class weights."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ._common import CountsLike, ReweightableLoss, check_logits, check_reduction, check_target, reduce
from .weights import class_weights


class CrossEntropyLoss(ReweightableLoss):
    """Cross-entropy with optional label smoothing ε and per-class weights w.

    With ``q = (1 − ε) · onehot(y) + ε / K``:  ``ℓ_i = −Σ_k q_k log softmax(z_i)_k`` (ε = 0: ``−log p_{y_i}``).
    With weights this is ``torch.nn.functional.cross_entropy(weight=w)``: ``ℓ_i`` is scaled by ``w_{y_i}``
    and ``reduction='mean'`` divides by ``Σ_i w_{y_i}`` (PyTorch's / LDAM-DRW's weighted mean).
    """

    def __init__(self, label_smoothing: float = 0.0, weight: CountsLike | None = None,
                 reduction: str = "mean", num_classes: int | None = None) -> None:
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ConfigError(f"{type(self).__name__}: label_smoothing={label_smoothing}; expected 0 <= ε < 1")
        super().__init__(weight, num_classes)
        self.label_smoothing = float(label_smoothing)
        self.reduction = check_reduction(reduction, type(self).__name__)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_logits(logits, name, self.num_classes)
        check_target(target, logits, name)
        return F.cross_entropy(logits, target.long(), weight=self._weight_for(logits),
                               label_smoothing=self.label_smoothing, reduction=self.reduction)


class WeightedCrossEntropyLoss(CrossEntropyLoss):
    """Class-weighted cross-entropy, weights from the training counts by ``rule``.

    ``ℓ_i = −w_{y_i} log softmax(z_i)_{y_i}``; ``reduction='mean'`` = ``Σ_i ℓ_i / Σ_i w_{y_i}``.
    ``rule`` ∈ {inverse, sqrt, effective, manual} — see :mod:`fairexpr.losses.weights` for the formulas
    and their normalisation.
    """

    def __init__(self, class_counts: CountsLike | None = None, rule: str = "inverse", beta: float = 0.9999,
                 manual: Sequence[float] | None = None, label_smoothing: float = 0.0,
                 reduction: str = "mean") -> None:
        if rule == "none":
            raise ConfigError("WeightedCrossEntropyLoss: rule='none' is plain CE; use the 'ce' loss")
        w = class_weights(rule, class_counts, beta, manual)
        super().__init__(label_smoothing=label_smoothing, weight=w, reduction=reduction, num_classes=w.numel())
        self.rule = rule


class SoftTargetCrossEntropy(torch.nn.Module):
    """Cross-entropy against a target distribution (e.g. FER+ annotator vote distributions).

    ``ℓ_i = −Σ_k q_{ik} log softmax(z_i)_k``. ``target`` is ``[N, K]`` (non-negative; with
    ``normalize_targets=True`` each row is divided by its sum, so raw vote counts can be passed; an
    all-zero row then contributes 0) or ``[N]`` class indices (treated as one-hot, so the loss equals
    plain CE). Minimised when ``softmax(z_i) = q_i``, where it equals the entropy ``H(q_i)``.
    """

    def __init__(self, reduction: str = "mean", normalize_targets: bool = True) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction, "SoftTargetCrossEntropy")
        self.normalize_targets = bool(normalize_targets)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits(logits, "SoftTargetCrossEntropy")
        if target.ndim == 1 and not target.is_floating_point():
            check_target(target, logits, "SoftTargetCrossEntropy")
            q = F.one_hot(target.long(), logits.shape[1]).to(logits.dtype)
        elif target.shape == logits.shape:
            q = target.to(logits.dtype)
            if self.normalize_targets:
                q = q / q.sum(dim=1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)
        else:
            raise ValueError(
                f"SoftTargetCrossEntropy: target must be [N, K] distributions like logits {tuple(logits.shape)} "
                f"or [N] class indices; got {tuple(target.shape)}"
            )
        loss = -(q * F.log_softmax(logits, dim=1)).sum(dim=1)
        return reduce(loss, self.reduction)


__all__ = ["CrossEntropyLoss", "WeightedCrossEntropyLoss", "SoftTargetCrossEntropy"]
