"""GReFEL losses (Eqs. 20-23): hand-computed values and gradient directions."""
from __future__ import annotations

import math

import pytest
import torch

from fairexpr.losses.grefel import AnchorCenterLoss, AnchorSpreadLoss, GReFELLoss, ReliableClassificationLoss
from fairexpr.models.reliability import AnchorSet, ReliabilityHead


def test_cls_loss_hand_computed():
    final = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.5, 0.25]])
    y = torch.tensor([0, 1])
    expected = -(math.log(0.7) + math.log(0.5)) / 2
    assert ReliableClassificationLoss()(final, y).item() == pytest.approx(expected, abs=1e-6)
    # label smoothing 0.1 on 3 classes: y = (0.9333, 0.0333, 0.0333)
    ls = ReliableClassificationLoss(label_smoothing=0.1)(final[:1], y[:1])
    assert ls.item() == pytest.approx(0.46329738119, abs=1e-6)
    # soft labels (vote distributions)
    soft = torch.tensor([[0.5, 0.5, 0.0]])
    assert ReliableClassificationLoss()(final[:1], soft).item() == pytest.approx(-(0.5 * math.log(0.7) + 0.5 * math.log(0.2)), abs=1e-6)
    with pytest.raises(ValueError, match="target"):
        ReliableClassificationLoss()(final, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="label_smoothing"):
        ReliableClassificationLoss(label_smoothing=1.0)


def test_anchor_spread_loss_hand_computed():
    # 1-D anchors: class 0 at {0, 1}, class 1 at {3, 5}
    a = torch.tensor([[[0.0], [1.0]], [[3.0], [5.0]]])
    # all distinct pairs: unordered squared distances 1+9+25+4+16+4 = 59 -> mean over 6 pairs
    assert AnchorSpreadLoss(normalize=False)(a).item() == pytest.approx(-59 / 6)
    # only pairs from different classes: 9+25+4+16 = 54 over 4 pairs
    assert AnchorSpreadLoss("inter_class", normalize=False)(a).item() == pytest.approx(-13.5)
    two_d = torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]]])
    assert AnchorSpreadLoss()(two_d).item() == pytest.approx(-25 / math.sqrt(2))


def test_anchor_spread_gradient_pushes_anchors_apart():
    torch.manual_seed(0)
    a = torch.randn(3, 2, 4, requires_grad=True)
    AnchorSpreadLoss()(a).backward()
    with torch.no_grad():
        before = torch.cdist(a.view(6, 4), a.view(6, 4))
        stepped = a - 0.01 * a.grad
        after = torch.cdist(stepped.view(6, 4), stepped.view(6, 4))
    off = ~torch.eye(6, dtype=torch.bool)
    assert (after[off] > before[off]).all()


def test_bounded_anchor_spread_hand_computed():
    # the 1-D anchors above; margin 3 caps every squared distance at 9: 1+9+9+4+9+4 = 36 over 6 pairs
    a = torch.tensor([[[0.0], [1.0]], [[3.0], [5.0]]])
    assert AnchorSpreadLoss(normalize=False, margin=3.0)(a).item() == pytest.approx(-6.0)
    # inter-class pairs only: min(9, 9) + min(25, 9) + min(4, 9) + min(16, 9) = 31 over 4 pairs
    assert AnchorSpreadLoss("inter_class", normalize=False, margin=3)(a).item() == pytest.approx(-7.75)
    # a margin wider than every pair is Eq. 21 itself
    assert AnchorSpreadLoss(normalize=False, margin=100.0)(a).item() == pytest.approx(-59 / 6)
    two_d = torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]]])  # distance 5, capped at 2: -4 / sqrt(2)
    assert AnchorSpreadLoss(margin=2.0)(two_d).item() == pytest.approx(-4 / math.sqrt(2))
    for bad in (0, -1.0, float("inf"), True, "2"):
        with pytest.raises(ValueError, match="margin must be a number > 0"):
            AnchorSpreadLoss(margin=bad)


def test_bounded_anchor_spread_gradient_stops_at_the_margin():
    # 1-D: class 0 at {0, 1}, class 1 at {3, 5}, margin 2.5 -> only the pairs (0,1), (1,3), (3,5) still pull
    a = torch.tensor([[[0.0], [1.0]], [[3.0], [5.0]]], requires_grad=True)
    AnchorSpreadLoss(normalize=False, margin=2.5)(a).backward()
    # L = -(1/6) sum over unordered pairs of min(d^2, 6.25): dL/dx_i = -(1/6) sum over its close pairs 2 (x_i - x_j)
    want = torch.tensor([-2 * (0 - 1), -2 * ((1 - 0) + (1 - 3)), -2 * ((3 - 1) + (3 - 5)), -2 * (5 - 3)]) / 6
    assert torch.allclose(a.grad.view(-1), want)


def test_bounded_anchor_spread_stays_bounded_under_adam():
    # the unbounded Eq. 21 under Adam drives anchors apart at constant speed for as long as it runs (issue 16,
    # grefel_cpu: L_a -73.9); with a margin the loss settles at its bound -m^2 / sqrt(D) and the anchors stop
    def run(margin):
        torch.manual_seed(0)
        a = torch.nn.Parameter(0.1 * torch.randn(3, 2, 4))
        opt = torch.optim.Adam([a], lr=0.05)
        loss_fn = AnchorSpreadLoss(margin=margin)
        norms = []
        for _ in range(400):
            opt.zero_grad()
            loss = loss_fn(a)
            loss.backward()
            opt.step()
            norms.append(a.detach().norm(dim=-1).mean().item())
        return loss.item(), norms
    free_loss, free_norms = run(None)
    bound_loss, bound_norms = run(2.0)
    assert free_loss < -50 and free_norms[-1] > free_norms[-100] + 1.0  # still running away
    assert bound_loss >= -4 / 2 - 1e-6 and bound_loss == pytest.approx(-2.0, abs=0.05)
    assert abs(bound_norms[-1] - bound_norms[-100]) < 0.2 and bound_norms[-1] < 3.0


def test_anchor_spread_has_zero_gradient_at_zero_init():
    # why anchors are not zero-initialised by default (ARBEx does): identical anchors never separate via L_a
    a = torch.zeros(3, 2, 4, requires_grad=True)
    AnchorSpreadLoss()(a).backward()
    assert a.grad.abs().sum() == 0


def test_center_loss_hand_computed_and_from_distances():
    anchors = torch.tensor([[[5.0, 5.0], [6.0, 6.0]], [[0.0, 1.0], [3.0, 4.0]]])
    e = torch.tensor([[1.0, 1.0]])
    y = torch.tensor([1])
    # own-class squared distances: (1-0)^2+(1-1)^2 = 1 and 4+9 = 13 -> min 1
    assert AnchorCenterLoss(normalize=False)(e, anchors, y).item() == pytest.approx(1.0)
    assert AnchorCenterLoss()(e, anchors, y).item() == pytest.approx(1 / math.sqrt(2))
    s = AnchorSet(2, 2, 2)
    with torch.no_grad():
        s.anchors.copy_(anchors)
    via_d = AnchorCenterLoss(normalize=False).from_distances(s.distances(e), y, 2)
    assert via_d.item() == pytest.approx(1.0, abs=1e-5)


def test_center_loss_gradient_pulls_embedding_to_nearest_own_anchor():
    anchors = torch.tensor([[[5.0, 5.0], [6.0, 6.0]], [[0.0, 1.0], [3.0, 4.0]]], requires_grad=True)
    e = torch.tensor([[1.0, 1.0]], requires_grad=True)
    AnchorCenterLoss(normalize=False)(e, anchors, torch.tensor([1])).backward()
    torch.testing.assert_close(e.grad, torch.tensor([[2.0, 0.0]]))  # 2 (e - a_nearest)
    stepped = e.detach() - 0.1 * e.grad
    assert (stepped - torch.tensor([0.0, 1.0])).norm() < (e.detach() - torch.tensor([0.0, 1.0])).norm()
    torch.testing.assert_close(anchors.grad[1, 0], torch.tensor([-2.0, 0.0]))  # the anchor moves toward e too
    assert anchors.grad[1, 1].abs().sum() == 0 and anchors.grad[0].abs().sum() == 0


def test_total_loss_eq23_weights_terms():
    torch.manual_seed(0)
    head = ReliabilityHead(8, 3, num_anchors=2).eval()
    e, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 1])
    out = head(e)
    a = head.anchors.anchors
    parts = GReFELLoss()(out, y, a)
    total = GReFELLoss(lambda_cls=2.0, lambda_anchor=0.5, lambda_center=3.0)(out, y, a)
    expected = 2.0 * parts["l_cls"] + 0.5 * parts["l_anchor"] + 3.0 * parts["l_center"]
    torch.testing.assert_close(total["loss"], expected)
    assert parts["l_cls"].item() == pytest.approx(ReliableClassificationLoss()(out["final"], y).item())
    plain = ReliabilityHead(8, 3, use_anchors=False, use_mhsa=False).eval()
    res = GReFELLoss()(plain(e), y, None)
    assert res["l_anchor"] == 0 and res["l_center"] == 0
    with pytest.raises(ValueError, match="unlabelled"):
        GReFELLoss()(out, torch.tensor([0, -1, 2, 1]), a)
