"""The four Meta-Face2Exp losses and the two feedback forms on hand-computable toys."""
from __future__ import annotations

import math

import pytest
import torch

from fairexpr.methods.face2exp import (adaptation_loss, consistency_loss, feedback_exact, feedback_loss, feedback_mpl,
                                       flat_dot, pseudo_labels)

LN2 = math.log(2.0)


def test_pseudo_labels_temperature_and_hard_label():
    z = torch.tensor([[math.log(9.0), 0.0], [0.0, 2.0]], requires_grad=True)
    q, conf, hard = pseudo_labels(z, temperature=1.0)
    assert torch.allclose(q[0], torch.tensor([0.9, 0.1]))
    assert hard.tolist() == [0, 1]
    assert not q.requires_grad  # targets never carry gradient into B
    q2, conf2, _ = pseudo_labels(z, temperature=2.0)  # softmax(ln9 / 2, 0) = (3/4, 1/4)
    assert torch.allclose(q2[0], torch.tensor([0.75, 0.25]))
    assert conf2[0] < conf[0]


def test_consistency_loss_masks_and_averages_over_all_images():
    # q1 = (0.9, 0.1) is confident (>= 0.8), q2 = (0.5, 0.5) is not; strong logits of image 1 are uniform
    q = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    conf = q.max(-1).values
    z_s = torch.tensor([[0.0, 0.0], [5.0, -5.0]], requires_grad=True)
    loss, mask = consistency_loss(z_s, q, conf, threshold=0.8)
    assert mask.tolist() == [1.0, 0.0]
    assert loss.item() == pytest.approx(LN2 / 2)  # (ln 2 + 0) / N, N = 2
    loss.backward()
    # d/dz of (1/2) CE(q1, z) = (softmax(z) - q1) / 2 = ((0.5 - 0.9) / 2, (0.5 - 0.1) / 2); image 2 masked
    assert torch.allclose(z_s.grad, torch.tensor([[-0.2, 0.2], [0.0, 0.0]]))
    loss0, mask0 = consistency_loss(z_s, q, conf, threshold=1.0)
    assert loss0.item() == 0.0 and mask0.sum() == 0


def test_adaptation_loss_hard_and_soft():
    z = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    q = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    hard = torch.tensor([0, 1])
    # CE(0 | uniform) = ln 2;  CE(1 | (3/4, 1/4)) = ln 4
    assert adaptation_loss(z, q, hard).item() == pytest.approx((LN2 + math.log(4.0)) / 2)
    # soft: image 1 ln 2; image 2 -(0.25 ln 0.75 + 0.75 ln 0.25)
    soft = (LN2 - (0.25 * math.log(0.75) + 0.75 * math.log(0.25))) / 2
    assert adaptation_loss(z, q, hard, soft=True).item() == pytest.approx(soft)


@pytest.mark.parametrize("f", [0.5, -0.5])
def test_feedback_loss_scales_ce_and_f_is_constant(f):
    z = torch.zeros(1, 2, requires_grad=True)
    f_t = torch.tensor(f, requires_grad=True)
    loss = feedback_loss(f_t, z, torch.tensor([1]))
    assert loss.item() == pytest.approx(f * LN2)
    loss.backward()
    assert f_t.grad is None  # no gradient into the factor
    # d/dz f * CE(1 | z) = f * (softmax(z) - e_1) = f * (0.5, -0.5): f > 0 raises p(ŷ) under descent, f < 0 lowers it
    assert torch.allclose(z.grad, torch.tensor([[0.5 * f, -0.5 * f]]))


def test_flat_dot_and_exact_factor():
    a = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1.0, -1.0]), None]
    b = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([2.0, 2.0]), torch.ones(3)]
    assert flat_dot(a, b).item() == pytest.approx(5.0)  # 1 + 4 + (2 - 2); None counts as 0
    assert feedback_exact(a, b, lr=0.1).item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        flat_dot(a, b[:2])


def test_mpl_factor_is_old_minus_new():
    assert feedback_mpl(torch.tensor(2.0), torch.tensor(1.5)).item() == pytest.approx(0.5)  # A improved -> f > 0
    assert feedback_mpl(torch.tensor(1.0), torch.tensor(1.5)).item() == pytest.approx(-0.5)
