"""Cross-entropy family against hand-computed values.

Shared toy: logits z = [2, 1, 0], true class 0.
    CE = -log(e^2 / (e^2 + e + 1)) = log(1 + e^-1 + e^-2) = 0.40760596
    log p = [-0.40760596, -1.40760596, -2.40760596]
"""
import math

import pytest
import torch

from fairexpr.config import ConfigError
from fairexpr.losses import CrossEntropyLoss, SoftTargetCrossEntropy, WeightedCrossEntropyLoss

Z = torch.tensor([[2.0, 1.0, 0.0]])
CE0 = 0.40760596


def test_ce_hand_value():
    assert CrossEntropyLoss()(Z, torch.tensor([0])).item() == pytest.approx(CE0, abs=1e-6)


def test_label_smoothing_hand_value():
    # eps = 0.3, K = 3: q = [0.8, 0.1, 0.1]; L = 0.8*0.4076 + 0.1*1.4076 + 0.1*2.4076 = 0.70760596
    loss = CrossEntropyLoss(label_smoothing=0.3)(Z, torch.tensor([0]))
    assert loss.item() == pytest.approx(0.70760596, abs=1e-6)


def test_soft_ce_hand_value_and_vote_normalisation():
    # q = [0.5, 0.5, 0]: L = 0.5*0.40760596 + 0.5*1.40760596 = 0.90760596
    crit = SoftTargetCrossEntropy()
    assert crit(Z, torch.tensor([[0.5, 0.5, 0.0]])).item() == pytest.approx(0.90760596, abs=1e-6)
    # raw FER+ votes (5, 5, 0) are normalised to the same distribution
    assert crit(Z, torch.tensor([[5.0, 5.0, 0.0]])).item() == pytest.approx(0.90760596, abs=1e-6)
    # hard indices behave as one-hot -> plain CE
    assert crit(Z, torch.tensor([0])).item() == pytest.approx(CE0, abs=1e-6)
    # without normalisation the votes are used as given (10x the loss)
    raw = SoftTargetCrossEntropy(normalize_targets=False)(Z, torch.tensor([[5.0, 5.0, 0.0]]))
    assert raw.item() == pytest.approx(9.0760596, abs=1e-5)


def test_soft_ce_minimum_is_target_entropy():
    q = torch.tensor([[0.7, 0.2, 0.1]])
    loss = SoftTargetCrossEntropy()(q.log(), q)
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert loss.item() == pytest.approx(h, abs=1e-6)


def test_weighted_ce_hand_value():
    # samples: z=[2,1,0], y=0 (CE 0.40760596) and z=[0,0,0], y=2 (CE log 3); w = [1, 2, 3]
    # weighted mean = (1*0.40760596 + 3*1.09861229) / (1 + 3) = 0.92586071
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    crit = WeightedCrossEntropyLoss(rule="manual", manual=[1.0, 2.0, 3.0])
    assert crit(logits, y).item() == pytest.approx(0.92586071, abs=1e-6)
    s = WeightedCrossEntropyLoss(rule="manual", manual=[1.0, 2.0, 3.0], reduction="sum")(logits, y)
    assert s.item() == pytest.approx(0.40760596 + 3 * math.log(3), abs=1e-6)


def test_weighted_ce_from_counts_uses_inverse_frequency():
    # counts [3, 1]: w = 4 / (2 * [3, 1]) = [2/3, 2]
    crit = WeightedCrossEntropyLoss(class_counts=[3, 1], rule="inverse")
    assert torch.allclose(crit.weight, torch.tensor([2 / 3, 2.0]))


@pytest.mark.parametrize("crit", [CrossEntropyLoss(), CrossEntropyLoss(label_smoothing=0.1),
                                  SoftTargetCrossEntropy(), WeightedCrossEntropyLoss([5, 2, 1])])
def test_gradient_direction(crit):
    z = Z.clone().requires_grad_(True)
    crit(z, torch.tensor([1])).backward()
    g = z.grad[0]
    assert g[1] < 0 and g[0] > 0 and g[2] > 0  # pushes the true logit up, others down
    assert g.sum().abs() < 1e-6  # softmax-CE gradient sums to zero over classes


@pytest.mark.parametrize("crit_cls", [CrossEntropyLoss, SoftTargetCrossEntropy])
def test_reductions(crit_cls):
    torch.manual_seed(0)
    z = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 3, 0])
    none = crit_cls(reduction="none")(z, y)
    assert none.shape == (5,)
    assert crit_cls(reduction="sum")(z, y).item() == pytest.approx(none.sum().item(), abs=1e-5)
    assert crit_cls(reduction="mean")(z, y).item() == pytest.approx(none.mean().item(), abs=1e-6)


def test_errors():
    with pytest.raises(ConfigError, match="reduction"):
        CrossEntropyLoss(reduction="avg")
    with pytest.raises(ConfigError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="weight has 2 entries but logits have 3"):
        CrossEntropyLoss(weight=[1.0, 2.0])(Z, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"target must be \[N\]"):
        CrossEntropyLoss()(Z, torch.tensor([[0]]))
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        SoftTargetCrossEntropy()(Z, torch.tensor([[0.5, 0.5]]))
    with pytest.raises(ConfigError, match="class 1 has 0 training samples"):
        WeightedCrossEntropyLoss([4, 0, 2], rule="inverse")
