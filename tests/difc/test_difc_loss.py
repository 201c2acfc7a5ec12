"""DIFC equations on hand-computed examples: margins (Eq. 3), confusion (Eqs. 4–5), update (Eq. 6)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairexpr.config import ConfigError
from fairexpr.losses.difc import DIFCLoss, difc_margins, feature_confusion
from fairexpr.losses.ldam import LDAMLoss


def test_di_margins_from_source_counts():
    # N = [16, 1, 81] -> N^{-1/4} = [1/2, 1, 1/3]; rescaled so the max is 0.3
    loss = DIFCLoss([16, 1, 81], max_m=0.3)
    np.testing.assert_allclose(loss.base_margins.numpy(), [0.15, 0.3, 0.1], rtol=1e-6)
    np.testing.assert_allclose(loss.margins.numpy(), [0.15, 0.3, 0.1], rtol=1e-6)


# K = 4: class 0 gaps 0.5 and 0.1 (mean 0.3 -> conf 10/3); class 1 gap 0.3 (conf 10/3, a tie with class 0);
# class 2: a top-2 tie (gap 0 -> conf +inf); class 3: never predicted (empty S_3 -> NaN).
PROBS = np.array([
    [0.7, 0.2, 0.1, 0.0],
    [0.5, 0.4, 0.1, 0.0],
    [0.1, 0.6, 0.3, 0.0],
    [0.0, 0.1, 0.45, 0.45],
])


def test_confusion_scores_ties_empty_and_zero_gap():
    scores, order = feature_confusion(PROBS)
    assert scores[0] == pytest.approx(10 / 3)
    assert scores[1] == pytest.approx(10 / 3)
    assert math.isinf(scores[2]) and scores[2] > 0
    assert math.isnan(scores[3])
    # +inf first, the 10/3 tie in class-index order, the empty class last
    assert order == [2, 0, 1, 3]


def test_confusion_order_strict_and_tensor_input():
    # class 0: gap 0.8 (conf 1.25); class 1: gap 0.2 (conf 5); class 2: gap 0.4 (conf 2.5)
    p = torch.tensor([[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.0, 0.3, 0.7]])
    scores, order = feature_confusion(p)
    np.testing.assert_allclose(scores, [1.25, 5.0, 2.5], rtol=1e-6)
    assert order == [1, 2, 0]


def test_eq6_update_halves_per_rank():
    base = [0.15, 0.3, 0.1, 0.2]
    new = difc_margins(base, [2, 0, 1, 3], epsilon=0.02)
    # +0.02 (rank 1), +0.01 (rank 2), +0.005 (rank 3), +0.0025 (rank 4)
    np.testing.assert_allclose(new, [0.16, 0.305, 0.12, 0.2025], rtol=1e-12)
    np.testing.assert_allclose(difc_margins(base, [0, 1, 2, 3], epsilon=0.0), base)


def test_eq6_rejects_bad_order_and_epsilon():
    with pytest.raises(ValueError, match="permutation"):
        difc_margins([0.1, 0.2, 0.3], [0, 0, 1])
    with pytest.raises(ValueError, match="epsilon"):
        difc_margins([0.1, 0.2], [0, 1], epsilon=-1)
    with pytest.raises(ValueError, match="epsilon"):
        DIFCLoss([3, 4], epsilon=-0.1)


def test_difc_loss_value_and_no_accumulation():
    loss = DIFCLoss([16, 1, 81], max_m=0.3, s=1.0, epsilon=0.02)
    z = torch.tensor([[1.0, 0.0, 0.0]])
    y = torch.tensor([0])
    # before any update: the DI (LDAM) loss with Δ_0 = 0.15
    expected_di = -math.log(math.exp(1 - 0.15) / (math.exp(1 - 0.15) + 2))
    assert loss(z, y).item() == pytest.approx(expected_di, rel=1e-6)
    assert loss(z, y).item() == pytest.approx(LDAMLoss([16, 1, 81], max_m=0.3, s=1.0)(z, y).item(), rel=1e-6)
    # class 0 ranked second -> Δ'_0 = 0.15 + 0.01
    m = loss.update_confusion([1, 0, 2])
    np.testing.assert_allclose(m.numpy(), [0.16, 0.32, 0.105], rtol=1e-6)
    expected = -math.log(math.exp(1 - 0.16) / (math.exp(1 - 0.16) + 2))
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-6)
    # a second update starts again from the DI margins (no accumulation across recomputations)
    loss.update_confusion([1, 0, 2])
    np.testing.assert_allclose(loss.margins.numpy(), [0.16, 0.32, 0.105], rtol=1e-6)
    loss.reset()
    np.testing.assert_allclose(loss.margins.numpy(), [0.15, 0.3, 0.1], rtol=1e-6)


def test_update_from_probs_end_to_end():
    loss = DIFCLoss([10, 10, 10, 10], max_m=0.3, epsilon=0.02)  # equal counts: all Δ = 0.3
    scores, order, m = loss.update_from_probs(PROBS)
    assert order == [2, 0, 1, 3]
    np.testing.assert_allclose(m.numpy(), [0.31, 0.305, 0.32, 0.3025], rtol=1e-6)
    assert loss.order == [2, 0, 1, 3]


def test_difc_loss_gradient_flows_and_zero_count_is_rejected():
    loss = DIFCLoss([5, 6, 7])
    z = torch.randn(4, 3, requires_grad=True)
    loss(z, torch.tensor([0, 1, 2, 0])).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    with pytest.raises(ConfigError, match="class 1"):
        DIFCLoss([5, 0, 7])


def test_probs_must_be_distributions():
    with pytest.raises(ValueError, match="probs"):
        feature_confusion(np.array([[2.0, -1.0], [0.5, 0.5]]))
