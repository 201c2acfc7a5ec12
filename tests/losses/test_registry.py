"""build_loss / list_losses: every name builds from a config dict and the class counts; bad configs fail clearly."""
import pytest
import torch

from fairexpr.config import ConfigError
from fairexpr.losses import (BalancedSoftmaxLoss, FocalLoss, LDAMLoss, LogitAdjustedLoss, SoftTargetCrossEntropy,
                             WeightedCrossEntropyLoss, build_loss, list_losses)

COUNTS = [40, 10, 5, 1]
NAMES = ["ce", "soft_ce", "weighted_ce", "ldam", "focal", "logit_adjusted", "balanced_softmax"]


def test_list_losses():
    assert sorted(NAMES) == list_losses()


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_builds_from_config_and_trains(name):
    crit = build_loss({"name": name, "kwargs": {}}, class_counts=COUNTS, num_classes=4)
    torch.manual_seed(0)
    # small logits: LDAM's s = 30 would otherwise saturate the softmax (zero gradient in float32)
    z = (0.05 * torch.randn(6, 4)).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    loss = crit(z, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    onehot = torch.nn.functional.one_hot(y, 4).bool()
    assert torch.all(z.grad[onehot] < 0)  # every true-class logit is pushed up


def test_config_options_are_passed():
    crit = build_loss({"name": "ldam", "kwargs": {"max_m": 0.3, "s": 1.0}}, COUNTS)
    assert isinstance(crit, LDAMLoss) and crit.s == 1.0 and crit.margins.max().item() == pytest.approx(0.3)
    # flat options next to name, overridden by explicit keywords
    crit = build_loss({"name": "focal", "gamma": 1.0}, COUNTS, gamma=3.0)
    assert isinstance(crit, FocalLoss) and crit.gamma == 3.0
    assert isinstance(build_loss("weighted_ce", COUNTS, rule="effective"), WeightedCrossEntropyLoss)
    assert isinstance(build_loss("soft_ce"), SoftTargetCrossEntropy)
    la = build_loss("logit_adjusted", COUNTS, tau=0.5)
    assert isinstance(la, LogitAdjustedLoss) and la.tau == 0.5
    assert isinstance(build_loss("balanced_softmax", COUNTS), BalancedSoftmaxLoss)


def test_weight_rule_names():
    # inverse: N = 56, w = 56 / (4 n) = [0.35, 1.4, 2.8, 14]
    ce = build_loss("ce", COUNTS, weight="inverse")
    assert ce.weight.tolist() == pytest.approx([0.35, 1.4, 2.8, 14.0])
    focal = build_loss("focal", COUNTS, alpha=[1.0, 2.0, 3.0, 4.0])
    assert focal.alpha.tolist() == [1.0, 2.0, 3.0, 4.0]
    eff = build_loss("ldam", COUNTS, weight="effective", weight_beta=0.0)
    assert eff.weight.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0])


def test_drw_from_config():
    crit = build_loss({"name": "ldam", "kwargs": {"drw_epoch": 2, "drw_beta": 0.9999}}, COUNTS)
    assert crit.weight is None
    crit.set_epoch(1)
    assert crit.weight is None
    crit.set_epoch(2)
    # effective number, β = 0.9999, counts [40, 10, 5, 1], normalised to sum 4 (numpy, by hand)
    import numpy as np
    n = np.array(COUNTS, dtype=np.float64)
    raw = (1 - 0.9999) / (1 - 0.9999 ** n)
    np.testing.assert_allclose(crit.weight.numpy(), raw / raw.sum() * 4, rtol=1e-5)
    hand = build_loss("ce", COUNTS, drw_epoch=0, drw_rule="manual", drw_manual=[1, 2, 3, 4])
    assert hand.weight.tolist() == [1.0, 2.0, 3.0, 4.0]  # active from epoch 0 right away


def test_errors():
    with pytest.raises(ConfigError, match="unknown loss 'ldamm'"):
        build_loss("ldamm", COUNTS)
    with pytest.raises(ConfigError, match="needs a 'name'"):
        build_loss({"kwargs": {}}, COUNTS)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'margin' for loss 'ldam'; expected any of .*max_m"):
        build_loss("ldam", COUNTS, margin=0.3)
    with pytest.raises(ConfigError, match="'drw_epoch'"):
        build_loss("soft_ce", drw_epoch=3)
    with pytest.raises(ConfigError, match="needs the training class counts"):
        build_loss("ldam")
    with pytest.raises(ConfigError, match="class_counts has 3 entries but the model has 4 classes"):
        build_loss("ldam", [3, 2, 1], num_classes=4)
    with pytest.raises(ConfigError, match=r"class 2 \('fear'\) has 0 training samples"):
        build_loss("ldam", [3, 2, 0, 1], class_names=["anger", "disgust", "fear", "happiness"])
    with pytest.raises(ConfigError, match="give either weight or drw_epoch"):
        build_loss("ldam", COUNTS, weight="inverse", drw_epoch=3)
    with pytest.raises(ConfigError, match="loss.kwargs.weight"):
        build_loss("ce", COUNTS, weight="balanced")
    with pytest.raises(ConfigError, match="without drw_epoch"):
        build_loss("ce", COUNTS, drw_beta=0.99)
    with pytest.raises(ConfigError, match="loss 'focal': bad option value"):
        build_loss("focal", COUNTS, gamma="two")
    with pytest.raises(ConfigError, match="entries; expected one per class"):
        build_loss("ce", COUNTS, weight=[1.0, 2.0])
