"""Per-class weights from training counts, and the deferred re-weighting (DRW) schedule.

Rules (``n_k`` = training samples of class k, ``N = Σ_k n_k``, ``K`` classes):

* ``inverse``   — inverse frequency, ``w_k = N / (K · n_k)``.
* ``sqrt``      — square-root inverse frequency, ``w_k = c / sqrt(n_k)`` with ``c = N / Σ_j sqrt(n_j)``.
* ``effective`` — effective number of samples (Cui et al., CVPR 2019),
  ``w_k = (1 − β) / (1 − β^{n_k})``, rescaled so ``Σ_k w_k = K`` (as in LDAM-DRW ``cifar_train.py``).
* ``manual``    — a hand-set vector (CUCN sets its weights by hand per dataset; the DIFC authors' DRW
  uses a hand-set vector too), validated (one finite positive entry per class) and used unchanged.
* ``none``      — ``None`` (unweighted).

Normalisation choice for ``inverse`` and ``sqrt``: ``Σ_k w_k n_k / N = 1``, i.e. the average weight of a
training *sample* is 1, so a weighted loss over a naturally sampled batch has on average the same
scale as the unweighted one (the learning rate need not change). For ``inverse`` this is exactly
scikit-learn's ``class_weight="balanced"``. ``effective`` keeps Cui et al.'s / LDAM-DRW's
normalisation (``Σ_k w_k = K``, the mean *class* weight is 1), so results match the published
LDAM-DRW recipe.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError
from ._common import CountsLike, as_class_vector, as_counts

WEIGHT_RULES = ("none", "inverse", "sqrt", "effective", "manual")


def inverse_frequency_weights(class_counts: CountsLike) -> torch.Tensor:
    """``w_k = N / (K n_k)`` (so ``Σ_k w_k n_k = N``)."""
    n = as_counts(class_counts, "class_weights(rule='inverse')")
    return (n.sum() / (n.numel() * n)).float()


def sqrt_inverse_weights(class_counts: CountsLike) -> torch.Tensor:
    """``w_k = c / sqrt(n_k)`` with ``c = N / Σ_j sqrt(n_j)`` (so ``Σ_k w_k n_k = N``)."""
    n = as_counts(class_counts, "class_weights(rule='sqrt')")
    return (n.sum() / n.sqrt().sum() / n.sqrt()).float()


def effective_number_weights(class_counts: CountsLike, beta: float = 0.9999) -> torch.Tensor:
    """Cui et al. 2019: ``w_k = (1 − β) / (1 − β^{n_k})``, rescaled so ``Σ_k w_k = K``.

    ``β = 0`` gives all-ones; ``β → 1`` approaches inverse frequency.
    """
    if not 0.0 <= float(beta) < 1.0:
        raise ConfigError(f"class_weights(rule='effective'): beta={beta}; expected 0 <= beta < 1")
    n = as_counts(class_counts, "class_weights(rule='effective')")
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(float(beta), dtype=torch.float64), n))
    return (w / w.sum() * n.numel()).float()


def class_weights(
    rule: str,
    counts: CountsLike | None = None,
    beta: float = 0.9999,
    manual: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Per-class weights ``[K]`` (float32) by ``rule`` (see the module docstring); ``None`` for ``'none'``.

    Raises ``ConfigError`` (a ``ValueError``) for an unknown rule, missing/zero counts (naming the
    class) or a bad manual vector (wrong length against ``counts`` when both are given, or an entry
    that is not a finite positive number).
    """
    if rule == "none":
        return None
    if rule == "manual":
        if manual is None:
            raise ConfigError("class_weights(rule='manual'): pass the hand-set vector as manual=[w_0, ..., w_K-1]")
        k = None
        if counts is not None:
            k = as_counts(counts, "class_weights(rule='manual')", allow_zero=True).numel()
        return as_class_vector(manual, "class_weights(rule='manual'): manual", num_classes=k)
    if manual is not None:
        raise ConfigError(f"class_weights: manual=... is only used with rule='manual', not rule={rule!r}")
    if rule == "inverse":
        return inverse_frequency_weights(counts)
    if rule == "sqrt":
        return sqrt_inverse_weights(counts)
    if rule == "effective":
        return effective_number_weights(counts, beta)
    raise ConfigError(f"class_weights: unknown rule {rule!r}; expected one of {', '.join(WEIGHT_RULES)}")


class DRWSchedule:
    """Deferred re-weighting (Cao et al., NeurIPS 2019, the "DRW" of LDAM-DRW).

    ``weights(epoch) = None`` (train unweighted) for ``epoch < start_epoch`` and
    ``class_weights(rule, counts, beta, manual)`` from ``start_epoch`` on. Epochs are 0-based, as in
    :class:`fairexpr.methods.base.StepContext` and LDAM-DRW's ``cifar_train.py``, whose
    ``idx = epoch // 160; betas = [0, 0.9999]`` switches effective-number weights on at 0-based epoch
    160 (β = 0 gives all-ones weights, i.e. unweighted, before it). The DIFC authors' code instead
    switches a hand-set vector on at epoch 5: ``DRWSchedule(5, rule='manual', manual=[...])``.

    Attach it to a re-weightable loss (``loss.drw = schedule``) and call ``loss.set_epoch(epoch)`` each
    epoch, or call the schedule yourself: ``loss.set_weight(schedule(epoch))``.
    """

    def __init__(
        self,
        start_epoch: int,
        rule: str = "effective",
        beta: float = 0.9999,
        class_counts: CountsLike | None = None,
        manual: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
            raise ConfigError(f"DRWSchedule: start_epoch={start_epoch!r}; expected an integer >= 0 (0-based epoch)")
        if rule == "none":
            raise ConfigError("DRWSchedule: rule='none' would never re-weight; choose inverse, sqrt, effective or manual")
        self.start_epoch = start_epoch
        self.rule = rule
        self.beta = beta
        self.class_counts = class_counts
        self.manual = manual
        # fail early on bad arguments (the weights themselves are cheap and recomputed on demand)
        if class_counts is not None or rule == "manual":
            class_weights(rule, class_counts, beta, manual)

    def __call__(self, epoch: int, class_counts: CountsLike | None = None) -> torch.Tensor | None:
        if epoch < self.start_epoch:
            return None
        counts = class_counts if class_counts is not None else self.class_counts
        return class_weights(self.rule, counts, self.beta, self.manual)

    def __repr__(self) -> str:
        return f"DRWSchedule(start_epoch={self.start_epoch}, rule={self.rule!r}, beta={self.beta})"
