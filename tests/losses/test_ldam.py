"""LDAM / DIFC DI loss against hand-computed values.

counts [16, 1]: N^(1/4) = [2, 1] -> 1/N^(1/4) = [0.5, 1] -> rescaled to max 0.5: Δ = [0.25, 0.5].
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fairexpr.config import ConfigError
from fairexpr.losses import DRWSchedule, LDAMLoss, margins_from_counts


def test_margins_from_counts():
    np.testing.assert_allclose(margins_from_counts([16, 1], 0.5).numpy(), [0.25, 0.5])
    # counts [81, 16, 1]: 1/N^(1/4) = [1/3, 1/2, 1]; max_m 0.3 -> [0.1, 0.15, 0.3]
    np.testing.assert_allclose(margins_from_counts([81, 16, 1], 0.3).numpy(), [0.1, 0.15, 0.3], rtol=1e-6)


def test_hand_values_s1_and_s2():
    z = torch.tensor([[1.0, 0.0]])
    # y = 0, s = 1: L = -log(e^{0.75} / (e^{0.75} + e^0)) = log(1 + e^{-0.75}) = 0.38687101
    assert LDAMLoss([16, 1], max_m=0.5, s=1.0)(z, torch.tensor([0])).item() == pytest.approx(0.38687101, abs=1e-6)
    # y = 0, s = 2: log(1 + e^{-1.5}) = 0.20141328
    assert LDAMLoss([16, 1], max_m=0.5, s=2.0)(z, torch.tensor([0])).item() == pytest.approx(0.20141328, abs=1e-6)
    # y = 1, s = 1: z' = [1, -0.5]: log(1 + e^{1.5}) = 1.70141328
    assert LDAMLoss([16, 1], max_m=0.5, s=1.0)(z, torch.tensor([1])).item() == pytest.approx(1.70141328, abs=1e-6)


def test_margin_makes_loss_larger_than_ce_and_zero_margin_is_scaled_ce():
    torch.manual_seed(0)
    z, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    ldam = LDAMLoss([50, 10, 2], max_m=0.5, s=3.0, reduction="none")
    ce = F.cross_entropy(3.0 * z, y, reduction="none")
    assert torch.all(ldam(z, y) > ce)
    ldam.set_margins([0.0, 0.0, 0.0])
    assert torch.allclose(ldam(z, y), ce, atol=1e-6)


def test_set_margins_and_state_dict_round_trip():
    a = LDAMLoss([16, 1])
    a.set_margins(torch.tensor([0.27, 0.52]))
    b = LDAMLoss([16, 1])
    b.load_state_dict(a.state_dict())
    assert torch.allclose(b.margins, torch.tensor([0.27, 0.52]))
    assert "margins" in a.state_dict() and "weight" not in a.state_dict()
    with pytest.raises(ConfigError, match="one per class \\(2\\)"):
        a.set_margins([0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match=">= 0"):
        a.set_margins([0.1, -0.2])


def test_weighted_drw_hand_value():
    # two samples, both z = [1, 0]; y = [0, 1]; s = 1; weights [1, 3]
    # weighted mean = (1*0.38687101 + 3*1.70141328) / 4 = 1.37277771
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    crit = LDAMLoss([16, 1], max_m=0.5, s=1.0, weight=[1.0, 3.0])
    assert crit(z, y).item() == pytest.approx((0.38687101 + 3 * 1.70141328) / 4, abs=1e-6)
    # DRW switches weighting on at its start epoch
    crit = LDAMLoss([16, 1], max_m=0.5, s=1.0)
    crit.drw = DRWSchedule(2, rule="manual", manual=[1.0, 3.0])
    crit.set_epoch(1)
    assert crit.weight is None
    assert crit(z, y).item() == pytest.approx((0.38687101 + 1.70141328) / 2, abs=1e-6)
    crit.set_epoch(2)
    assert crit.weight.tolist() == [1.0, 3.0]


def test_gradient_direction_and_reductions():
    z = torch.tensor([[0.2, 0.5, -0.1], [0.0, 0.1, 0.3]], requires_grad=True)
    y = torch.tensor([0, 2])
    crit = LDAMLoss([10, 5, 1], s=30.0, reduction="none")
    per = crit(z, y)
    assert per.shape == (2,)
    per.sum().backward()
    assert z.grad[0, 0] < 0 and z.grad[1, 2] < 0
    assert z.grad[0, 1] > 0 and z.grad[1, 0] > 0
    tot = LDAMLoss([10, 5, 1], s=30.0, reduction="sum")(z.detach(), y)
    assert tot.item() == pytest.approx(per.sum().item(), rel=1e-6)


def test_errors():
    with pytest.raises(ConfigError, match=r"class 1 \('disgust'\) has 0 training samples"):
        LDAMLoss([5, 0, 3], class_names=["anger", "disgust", "fear"])
    with pytest.raises(ConfigError, match="class 1 has 0"):
        margins_from_counts([5, 0])
    with pytest.raises(ConfigError, match="max_m"):
        LDAMLoss([5, 3], max_m=0.0)
    with pytest.raises(ConfigError, match="s=0"):
        LDAMLoss([5, 3], s=0)
    with pytest.raises(ValueError, match="built for 2"):
        LDAMLoss([5, 3])(torch.zeros(1, 3), torch.tensor([0]))
    with pytest.raises(ConfigError, match="one per class"):
        LDAMLoss([5, 3], weight=[1.0, 1.0, 1.0])


def test_follows_device_and_dtype():
    crit = LDAMLoss([16, 1], s=1.0).double()
    z = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert crit(z, torch.tensor([0])).dtype == torch.float64
    assert crit(z, torch.tensor([0])).item() == pytest.approx(math.log(1 + math.exp(-0.75)), abs=1e-12)
