"""RUL/CUCN uncertainty mixing and mixed loss; normalized-entropy confidence — hand-computed values."""
import math

import pytest
import torch

from fairexpr.losses import MixedUncertaintyLoss, entropy_confidence, entropy_confidence_from_logits, \
    normalized_entropy, uncertainty_mix


def test_mixing_weights_and_direction():
    # sample 0: logvar = [log 3, log 1] -> att_0 = mean(3, 1) = 2 (the MORE uncertain sample)
    # sample 1: logvar = [0, 0]         -> att_1 = 1;  perm = [1, 0]
    # w_0 = 2 / (2 + 1) = 2/3 applied to μ_0 (own uncertainty -> own feature), w_j = 1/3 to μ_1
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logvar = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    mixed, w_i, w_j = uncertainty_mix(mu, logvar, torch.tensor([1, 0]))
    assert w_i.tolist() == pytest.approx([2 / 3, 1 / 3])
    assert w_j.tolist() == pytest.approx([1 / 3, 2 / 3])
    # the more uncertain sample dominates both mixes: μ̃_0 = 2/3 μ_0 + 1/3 μ_1, μ̃_1 = 1/3 μ_1 + 2/3 μ_0
    assert torch.allclose(mixed, torch.tensor([[2 / 3, 1 / 3], [2 / 3, 1 / 3]]))


def test_mixing_is_stable_for_large_logvar_and_self_pairs():
    mu = torch.randn(3, 4)
    logvar = torch.full((3, 4), 200.0)  # exp(200) overflows float32; log-space weights do not
    logvar[0] += math.log(3.0)  # att_0 = 3 att_1
    mixed, w_i, _ = uncertainty_mix(mu, logvar, torch.tensor([1, 0, 2]))
    assert torch.isfinite(mixed).all()
    assert w_i.tolist() == pytest.approx([0.75, 0.25, 0.5], abs=1e-5)
    assert torch.allclose(mixed[2], mu[2], atol=1e-6)  # paired with itself -> unchanged


def test_mixing_gradients_reach_logvar_and_errors():
    mu = torch.randn(4, 3, requires_grad=True)
    logvar = torch.randn(4, 3, requires_grad=True)
    mixed, _, _ = uncertainty_mix(mu, logvar, generator=torch.Generator().manual_seed(0))
    (mixed * torch.randn(4, 3)).sum().backward()
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0  # as in RUL, the weights are not detached
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        uncertainty_mix(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="perm"):
        uncertainty_mix(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0.0, 1.0]))


# Toy for the loss: softmax rows [0.75, 0.25] and [0.5, 0.5]; y_a = [0, 1], y_b = [1, 0]
LOGITS = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
YA, YB = torch.tensor([0, 1]), torch.tensor([1, 0])
# per-sample sums: row0 -log .75 - log .25 = 0.28768207 + 1.38629436; row1 2 * 0.69314718


def test_mixed_loss_eq2_vs_rul_average():
    eq2 = MixedUncertaintyLoss(average_terms=False)(LOGITS, YA, YB)
    # Eq. 2: (1/2) [(0.28768207 + 1.38629436) + (0.69314718 + 0.69314718)] = 1.53013540
    assert eq2.item() == pytest.approx(1.53013540, abs=1e-6)
    # RUL code: ½CE(y_a) + ½CE(y_b) = half of it
    assert MixedUncertaintyLoss()(LOGITS, YA, YB).item() == pytest.approx(0.76506770, abs=1e-6)


def test_mixed_loss_class_weights_per_term():
    # W = [2, 1]: row0 2*0.28768207 + 1*1.38629436 = 1.96165850; row1 1*0.69314718 + 2*0.69314718 = 2.07944154
    crit = MixedUncertaintyLoss(class_weights=[2.0, 1.0], average_terms=False, reduction="none")
    per = crit(LOGITS, YA, YB)
    assert per.tolist() == pytest.approx([1.96165850, 2.07944154], abs=1e-6)
    mean = MixedUncertaintyLoss(class_weights=[2.0, 1.0])(LOGITS, YA, YB)
    assert mean.item() == pytest.approx((1.96165850 + 2.07944154) / 4, abs=1e-6)  # ½ terms, 1/N
    s = MixedUncertaintyLoss(class_weights=[2.0, 1.0], reduction="sum", average_terms=False)(LOGITS, YA, YB)
    assert s.item() == pytest.approx(1.96165850 + 2.07944154, abs=1e-6)


def test_mixed_loss_same_labels_is_ce_and_gradient_direction():
    z = torch.tensor([[0.3, -0.2, 0.1]], requires_grad=True)
    y = torch.tensor([2])
    loss = MixedUncertaintyLoss()(z, y, y)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(z, y).item(), abs=1e-6)
    loss.backward()
    assert z.grad[0, 2] < 0 and z.grad[0, 0] > 0 and z.grad[0, 1] > 0
    with pytest.raises(ValueError, match="y_b"):
        MixedUncertaintyLoss()(z, y, torch.tensor([0, 1]))


def test_confidence_endpoints_and_middle():
    assert entropy_confidence(torch.tensor([0.0, 1.0, 0.0])).item() == pytest.approx(1.0)
    assert entropy_confidence(torch.full((7,), 1 / 7)).item() == pytest.approx(0.0, abs=1e-6)
    # p = [0.5, 0.5, 0]: H = log 2 -> C = 1 - log 2 / log 3 = 0.36907025
    assert entropy_confidence(torch.tensor([0.5, 0.5, 0.0])).item() == pytest.approx(0.36907025, abs=1e-6)
    assert normalized_entropy(torch.tensor([[0.25] * 4, [1.0, 0, 0, 0]])).tolist() == pytest.approx([1.0, 0.0])


def test_confidence_from_logits_matches_and_is_finite():
    torch.manual_seed(0)
    z = torch.randn(5, 7)
    assert torch.allclose(entropy_confidence_from_logits(z), entropy_confidence(z.softmax(-1)), atol=1e-6)
    sharp = torch.tensor([[0.0, -1e4, -1e4]], requires_grad=True)
    c = entropy_confidence_from_logits(sharp)
    c.sum().backward()
    assert c.item() == pytest.approx(1.0) and torch.isfinite(sharp.grad).all()
    with pytest.raises(ValueError, match="K >= 2"):
        entropy_confidence(torch.tensor([1.0]))
