"""DIFC: data-imbalance (DI) loss with feature-confusion (FC) margins (Sreenivas et al., ECCVW 2022).

The DI loss is LDAM (Eq. 3) with per-class margins from the *source* label counts,
``Δ_k = γ / N_k^{1/4}`` with γ such that ``max_k Δ_k = max_margin`` (see
:class:`fairexpr.losses.ldam.LDAMLoss`). DIFC adds target-driven margins:

* Eq. 4  ``S_k = {x_t | argmax_c p_t[c] = k}`` — target samples grouped by predicted class;
* Eq. 5  ``conf_k = 1 / E_{x_t ∈ S_k} |p¹_t − p²_t|`` — inverse mean top-2 softmax gap
  (:func:`fairexpr.ops.confusion_scores` / ``confusion_order``, shared with ``fairexpr.evaluation.metrics``,
  and :func:`feature_confusion`);
* Eq. 6  classes sorted by decreasing confusion into ``C``;
  ``Δ'_{C[j]} = Δ_{C[j]} + ε / 2^{j−1}`` for ``j = 1..K`` (paper ε = 0.02) (:func:`difc_margins`);
* ``L_DIFC = L_DI`` with ``Δ'`` (:class:`DIFCLoss`).

Edge cases of Eq. 5 (the paper is silent; our choices, tested):

* **zero gap** — every sample of ``S_k`` has a tie at the top: ``E|p¹ − p²| = 0`` and
  ``conf_k = +inf`` (maximally confused; ranked first);
* **empty ``S_k``** — no target sample is predicted as ``k``: the expectation is undefined and
  ``conf_k = NaN``; such classes are ranked *after* all classes with a score (no evidence means
  no extra margin beyond the smallest increments);
* **ties** between scores keep the class-index order (stable sort).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..ops import confusion_order, confusion_scores  # Eqs. 4-5, defined once in the bottom layer
from .ldam import LDAMLoss, margins_from_counts

__all__ = ["confusion_scores", "confusion_order", "feature_confusion", "difc_margins", "DIFCLoss"]


def feature_confusion(probs: np.ndarray | torch.Tensor) -> tuple[np.ndarray, list[int]]:
    """Eqs. 4–6 (ordering part) on target probabilities ``[N, K]``: ``(conf [K], C)``.

    ``conf_k = 1 / E_{x ∈ S_k}(p¹ − p²)`` from :func:`confusion_scores`
    (defined once, here; ``NaN`` for empty ``S_k``, ``+inf`` for a zero mean gap) and ``C``
    from :func:`confusion_order` (most confusing first).
    """
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().double().numpy()
    scores = confusion_scores(probs)["score"]
    return scores, confusion_order(scores)


def difc_margins(base: Sequence[float] | np.ndarray | torch.Tensor, order: Sequence[int],
                 epsilon: float = 0.02) -> np.ndarray:
    """Eq. 6: ``Δ'_{C[j]} = Δ_{C[j]} + ε / 2^{j−1}`` for ``j = 1..K``, ``C = order``.

    ``base`` are the DI margins Δ (LDAM, from source counts); ``order`` must be a permutation of
    ``range(K)`` (most confusing class first).
    """
    b = np.asarray(base.detach().cpu() if isinstance(base, torch.Tensor) else base, dtype=np.float64).copy()
    k = b.shape[0]
    if sorted(int(c) for c in order) != list(range(k)):
        raise ValueError(f"order must be a permutation of range({k}), got {list(order)}")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    for j, c in enumerate(order):  # j is 0-based here: ε / 2^j == ε / 2^{(j+1)-1}
        b[int(c)] += epsilon / (2.0 ** j)
    return b


class DIFCLoss(LDAMLoss):
    """``L_DIFC``: the DI (LDAM, Eq. 3) loss whose margins get the Eq. 6 feature-confusion increment.

    ``L(z, y; Δ') = −log( e^{s(z_y − Δ'_y)} / (e^{s(z_y − Δ'_y)} + Σ_{k≠y} e^{s z_k}) )``.

    Before :meth:`update_confusion` is called it equals the DI loss exactly. ``base_margins`` keeps
    the source-count margins so repeated updates never accumulate increments.
    """

    def __init__(self, class_counts: Sequence[int], max_m: float = 0.3, s: float = 1.0,
                 weight: torch.Tensor | None = None, epsilon: float = 0.02) -> None:
        super().__init__(class_counts, max_m=max_m, s=s, weight=weight)
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        self.epsilon = float(epsilon)
        self.register_buffer("base_margins", margins_from_counts(class_counts, max_m).to(torch.float32).clone(),
                             persistent=False)
        self.order: list[int] | None = None

    def update_confusion(self, order: Sequence[int]) -> torch.Tensor:
        """Set the margins to ``difc_margins(base, order, ε)``; returns the new margins."""
        new = difc_margins(self.base_margins, order, self.epsilon)
        self.order = [int(c) for c in order]
        m = torch.as_tensor(new, dtype=torch.float32)
        self.set_margins(m)
        return m

    def update_from_probs(self, probs: np.ndarray | torch.Tensor) -> tuple[np.ndarray, list[int], torch.Tensor]:
        """Eqs. 4–6 in one call: scores and order from target probabilities, then new margins."""
        scores, order = feature_confusion(probs)
        return scores, order, self.update_confusion(order)

    def reset(self) -> None:
        """Back to the plain DI margins."""
        self.order = None
        self.set_margins(self.base_margins.clone())
