"""Uncertainty-feature mixing (RUL, Zhang et al. NeurIPS 2021) and the mixed loss used by CUCN (Fan et al. 2022).

Mixing. Each sample i has a discriminative feature μ_i ∈ R^D and an uncertainty feature (log-variance)
``logvar_i`` ∈ R^D; it is paired with sample j = perm[i] of the same batch:

    att_i = mean_d exp(logvar_{i,d})                  (mean predicted variance)
    w_i   = att_i / (att_i + att_j),   w_j = att_j / (att_i + att_j) = 1 − w_i
    μ̃_i   = w_i μ_i + w_j μ_j

Weight direction (checked in ``zyh-uaiaaaa/Relative-Uncertainty-Learning``: ``rul.py`` passes
``att = logvar.exp().mean(dim=1, keepdim=True)`` to ``utils.mixup_data``, which computes
``att1 = att / (att + att[index])`` and ``mixed_x = att1 * x + att2 * x[index]``): the weight derived from
sample i's *own* uncertainty multiplies μ_i, so the MORE uncertain sample gets the LARGER weight in
the mix. We follow RUL exactly (the weights are not detached, as in RUL, so the uncertainty branch is
trained through them). ``w_i`` is computed as ``sigmoid(log att_i − log att_j)`` with
``log att = logsumexp(logvar) − log D`` — the same value without overflow of ``exp(logvar)``.

Loss. With logits ``W μ̃_i`` of the mixed feature and the two labels y_i, y_j, CUCN's Eq. 2 is

    L = −(1/N) Σ_i [ log softmax(W μ̃_i)_{y_i} + log softmax(W μ̃_i)_{y_j} ]

while RUL's code (``mixup_criterion``) uses ``½ CE(·, y_i) + ½ CE(·, y_j)``, i.e. half of Eq. 2. The two
differ only by a factor 2 on the loss (under SGD that doubles the effective learning rate; Adam's
update is, up to its ε, invariant to a constant loss scale, so with the CUCN recipe's Adam it matters
only when this loss is summed with other terms). ``average_terms=True`` (default) reproduces
RUL's code (the reference the CUCN recipe follows where the paper is silent, and the scale the RUL
learning rates were tuned for); ``average_terms=False`` gives Eq. 2 as written. Class weights W_n
(CUCN Eq. 1) multiply each term by the weight of *its* label:
``ℓ_i = c · [W_{y_i} CE(z_i, y_i) + W_{y_j} CE(z_i, y_j)]`` with ``c = ½`` or 1, and ``reduction='mean'``
divides by N (the 1/N of Eq. 2; not by the sum of weights as PyTorch's weighted CE does).
At test time the classifier is applied to μ alone (no mixing).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import CountsLike, ReweightableLoss, check_logits, check_reduction, check_target, reduce


def uncertainty_mix(
    mu: torch.Tensor, logvar: torch.Tensor, perm: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix each μ_i with its partner μ_{perm[i]} by relative uncertainty (see the module docstring).

    Args:
        mu, logvar: ``[N, D]``.
        perm: ``[N]`` partner indices (RUL: ``torch.randperm(N)``); drawn with ``generator`` when None.

    Returns:
        ``(mixed [N, D], w_i [N], w_j [N])`` with ``w_i + w_j = 1`` and ``w_i`` multiplying μ_i.
    """
    if mu.ndim != 2 or logvar.shape != mu.shape:
        raise ValueError(
            f"uncertainty_mix: mu and logvar must both be [N, D]; got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    n, d = mu.shape
    if perm is None:
        perm = torch.randperm(n, generator=generator).to(mu.device)
    if perm.shape != (n,) or perm.is_floating_point():
        raise ValueError(f"uncertainty_mix: perm must be [N] = [{n}] integer indices, got {tuple(perm.shape)} {perm.dtype}")
    perm = perm.long()
    log_att = torch.logsumexp(logvar, dim=1) - math.log(d)  # log mean exp(logvar)
    w_i = torch.sigmoid(log_att - log_att[perm])
    w_j = 1.0 - w_i
    mixed = w_i[:, None] * mu + w_j[:, None] * mu[perm]
    return mixed, w_i, w_j


class MixedUncertaintyLoss(ReweightableLoss):
    """Loss on the logits of mixed features against both labels (CUCN Eq. 2 / RUL), optional class weights.

    ``forward(logits, y_a, y_b)`` with ``logits = classifier(μ̃)`` ``[N, K]``, ``y_a = y`` and
    ``y_b = y[perm]``; see the module docstring for the equation, ``average_terms`` and the reduction.
    """

    def __init__(self, class_weights: CountsLike | None = None, reduction: str = "mean",
                 average_terms: bool = True, num_classes: int | None = None) -> None:
        super().__init__(weight=class_weights, num_classes=num_classes)
        self.reduction = check_reduction(reduction, "MixedUncertaintyLoss")
        self.average_terms = bool(average_terms)

    def forward(self, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor) -> torch.Tensor:
        check_logits(logits, "MixedUncertaintyLoss", self.num_classes)
        check_target(y_a, logits, "MixedUncertaintyLoss (y_a)")
        check_target(y_b, logits, "MixedUncertaintyLoss (y_b)")
        y_a, y_b = y_a.long(), y_b.long()
        logp = F.log_softmax(logits, dim=1)
        term_a = -logp.gather(1, y_a[:, None]).squeeze(1)
        term_b = -logp.gather(1, y_b[:, None]).squeeze(1)
        w = self._weight_for(logits)
        if w is not None:
            term_a = w[y_a] * term_a
            term_b = w[y_b] * term_b
        loss = term_a + term_b
        if self.average_terms:
            loss = 0.5 * loss
        return reduce(loss, self.reduction)


__all__ = ["uncertainty_mix", "MixedUncertaintyLoss"]
