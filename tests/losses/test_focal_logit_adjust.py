"""Focal loss and logit-adjusted / balanced-softmax CE against hand-computed values."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fairexpr.config import ConfigError
from fairexpr.losses import BalancedSoftmaxLoss, FocalLoss, LogitAdjustedLoss

Z = torch.tensor([[2.0, 1.0, 0.0]])


def test_focal_hand_value():
    # p_t = 1 / (1 + e^-1 + e^-2) = 0.66524096; (1 - p_t)^2 = 0.11206361; -log p_t = 0.40760596
    # FL = 0.11206361 * 0.40760596 = 0.04567780; with alpha_0 = 0.25: 0.01141945
    assert FocalLoss(gamma=2.0)(Z, torch.tensor([0])).item() == pytest.approx(0.04567780, abs=1e-7)
    assert FocalLoss(alpha=[0.25, 1.0, 1.0])(Z, torch.tensor([0])).item() == pytest.approx(0.01141945, abs=1e-7)


def test_focal_gamma0_is_ce_and_down_weights_easy_examples():
    torch.manual_seed(0)
    z, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    assert torch.allclose(FocalLoss(gamma=0.0, reduction="none")(z, y), F.cross_entropy(z, y, reduction="none"))
    assert torch.all(FocalLoss(gamma=2.0, reduction="none")(z, y) < F.cross_entropy(z, y, reduction="none"))


def test_focal_gradient_and_reductions():
    z = Z.clone().requires_grad_(True)
    FocalLoss()(z, torch.tensor([2])).backward()
    assert z.grad[0, 2] < 0 and z.grad[0, 0] > 0
    torch.manual_seed(1)
    z, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    none = FocalLoss(reduction="none")(z, y)
    assert none.shape == (5,)
    assert FocalLoss(reduction="mean")(z, y).item() == pytest.approx(none.mean().item(), abs=1e-6)
    with pytest.raises(ConfigError, match="gamma"):
        FocalLoss(gamma=-1)


def test_logit_adjusted_hand_values():
    # counts [3, 1] -> π = [0.75, 0.25]; zero logits, y = 1:
    # τ = 1: -log(0.25 / 1) = 1.38629436;  τ = 2: -log(0.0625 / (0.5625 + 0.0625)) = -log 0.1 = 2.30258509
    z0, y1 = torch.zeros(1, 2), torch.tensor([1])
    assert LogitAdjustedLoss([3, 1], tau=1.0)(z0, y1).item() == pytest.approx(1.38629436, abs=1e-6)
    assert LogitAdjustedLoss([3, 1], tau=2.0)(z0, y1).item() == pytest.approx(2.30258509, abs=1e-6)
    # τ = 0 is plain CE
    assert LogitAdjustedLoss([3, 1], tau=0.0)(z0, y1).item() == pytest.approx(math.log(2), abs=1e-6)


def test_balanced_softmax_equals_tau1_and_its_own_formula():
    counts = [50, 20, 5, 1]
    torch.manual_seed(0)
    z, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 3, 0])
    bs = BalancedSoftmaxLoss(counts, reduction="none")(z, y)
    la = LogitAdjustedLoss(counts, tau=1.0, reduction="none")(z, y)
    assert torch.allclose(bs, la, atol=1e-6)
    # Ren et al.: -log(n_y e^{z_y} / Σ_k n_k e^{z_k}), written out with numpy
    zn, n = z.numpy().astype(np.float64), np.array(counts, dtype=np.float64)
    num = n[y.numpy()] * np.exp(zn[np.arange(6), y.numpy()])
    ref = -np.log(num / (n * np.exp(zn)).sum(axis=1))
    np.testing.assert_allclose(bs.numpy(), ref, rtol=1e-5)


def test_logit_adjusted_gradient_and_errors():
    z = torch.zeros(1, 3, requires_grad=True)
    LogitAdjustedLoss([5, 3, 1])(z, torch.tensor([1])).backward()
    assert z.grad[0, 1] < 0 and z.grad[0, 0] > 0 and z.grad[0, 2] > 0
    with pytest.raises(ConfigError, match="class 2 has 0 training samples"):
        BalancedSoftmaxLoss([5, 3, 0])
    with pytest.raises(ConfigError, match="tau"):
        LogitAdjustedLoss([5, 3], tau=-1)
    with pytest.raises(ValueError, match="built for 2"):
        LogitAdjustedLoss([5, 3])(torch.zeros(2, 3), torch.tensor([0, 1]))
