"""Reliability balancing: Eqs. 9-19 pinned on hand-computed numbers, shapes and gradients."""
from __future__ import annotations

import math

import pytest
import torch

from fairexpr.models import ModelError, create_model
from fairexpr.models.reliability import (AnchorSet, AttentiveCorrection, PrimaryMLP, ReliabilityHead, confidence, fuse,
                                         normalized_entropy)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- Eqs. 10-11
@pytest.mark.parametrize("n", [2, 3, 7, 8])
def test_entropy_endpoints(n):
    uniform = torch.full((1, n), 1.0 / n)
    onehot = torch.zeros(1, n)
    onehot[0, n - 1] = 1.0
    torch.testing.assert_close(normalized_entropy(uniform), torch.tensor([1.0]))
    torch.testing.assert_close(normalized_entropy(onehot), torch.tensor([0.0]))
    torch.testing.assert_close(confidence(uniform), torch.tensor([0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(confidence(onehot), torch.tensor([1.0]))


def test_entropy_hand_value_uses_log_ncls():
    # p = (1/2, 1/2, 0): H = ln 2 / ln 3 (dividing by N_cls = 3 instead would give 0.2310)
    h = normalized_entropy(torch.tensor([[0.5, 0.5, 0.0]]))
    assert h.item() == pytest.approx(math.log(2) / math.log(3), abs=1e-6)
    assert confidence(torch.tensor([[0.8, 0.2]])).item() == pytest.approx(0.2780719051, abs=1e-6)


def test_entropy_needs_two_classes():
    with pytest.raises(ModelError, match="at least 2 classes"):
        normalized_entropy(torch.ones(1, 1))


# ---------------------------------------------------------------- Eqs. 18-19
def test_fuse_hand_computed():
    p, q = torch.tensor([[0.8, 0.2]]), torch.tensor([[0.3, 0.7]])
    # c_p = 0.278072, c_q = 0.118709 -> weights 0.700819 / 0.299181
    torch.testing.assert_close(fuse(p, q), torch.tensor([[0.6504097991, 0.3495902009]]), atol=1e-6, rtol=0)


def test_fuse_confident_side_wins_and_uniform_pair_is_averaged():
    sure, unsure = torch.tensor([[1.0, 0.0, 0.0]]), torch.full((1, 3), 1 / 3)
    torch.testing.assert_close(fuse(sure, unsure), sure, atol=1e-6, rtol=0)
    torch.testing.assert_close(fuse(unsure, sure), sure, atol=1e-6, rtol=0)
    a, b = torch.full((1, 2), 0.5), torch.full((1, 2), 0.5)
    assert torch.isfinite(fuse(a, b)).all()  # 0/0 avoided by eps
    torch.testing.assert_close(fuse(a, b), a)


# ---------------------------------------------------------------- Eqs. 12-15
def _toy_anchors() -> AnchorSet:
    s = AnchorSet(num_classes=2, num_anchors=2, dim=2)
    with torch.no_grad():
        s.anchors.copy_(torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[0.0, 1.0], [3.0, 4.0]]]))
    return s


def test_anchor_distances_similarities_and_geometric_correction_2d_toy():
    s = _toy_anchors()
    e = torch.zeros(1, 2)
    d = s.distances(e)
    torch.testing.assert_close(d, torch.tensor([[[0.0, 2.0], [1.0, 5.0]]]), atol=1e-5, rtol=0)
    sim = AnchorSet.similarities(d, delta=2.0)
    z = 1 + math.exp(-1) + math.exp(-0.5) + math.exp(-2.5)
    expected = torch.tensor([[[1 / z, math.exp(-1) / z], [math.exp(-0.5) / z, math.exp(-2.5) / z]]])
    torch.testing.assert_close(sim, expected, atol=1e-6, rtol=0)
    t_g = AnchorSet.geometric_correction(sim)
    torch.testing.assert_close(t_g, torch.tensor([[0.6651508392, 0.3348491608]]), atol=1e-6, rtol=0)


def test_anchor_distance_gradient_is_finite_on_an_anchor():
    s = _toy_anchors()
    e = torch.zeros(1, 2, requires_grad=True)  # exactly on anchor (0, 0)
    s.distances(e).sum().backward()
    assert torch.isfinite(e.grad).all() and torch.isfinite(s.anchors.grad).all()


def test_anchor_init_options():
    assert AnchorSet(3, 4, 8, init="zeros").anchors.abs().sum() == 0
    assert AnchorSet(3, 4, 8).anchors.abs().sum() > 0
    with pytest.raises(ModelError, match="anchor_init"):
        AnchorSet(3, 4, 8, init="ones")
    with pytest.raises(ModelError, match="anchor_init_std"):
        AnchorSet(3, 4, 8, init_std=0.0)
    assert not AnchorSet(3, 4, 8).needs_init and "initialized" not in AnchorSet(3, 4, 8).state_dict()
    with pytest.raises(ModelError, match="anchor_init='data'"):
        AnchorSet(3, 4, 8).initialize_from(torch.zeros(2, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ModelError, match=r"embeddings \[B, 8\] and labels \[B\]"):
        AnchorSet(3, 4, 8, init="data").initialize_from(torch.zeros(2, 8), torch.zeros(3, dtype=torch.long))


def test_data_init_puts_anchors_at_class_means_hand_computed():
    torch.manual_seed(0)
    s = AnchorSet(3, 2, 2, init="data", init_std=1e-6)
    assert s.needs_init and s.anchors.abs().sum() == 0
    e = torch.tensor([[1.0, 1.0], [3.0, 3.0], [0.0, 4.0], [9.0, 9.0]])
    y = torch.tensor([0, 0, 1, -1])  # class 2 absent, the unlabelled row ignored
    assert s.initialize_from(e, y) == [0, 1]
    torch.testing.assert_close(s.anchors.data[0], torch.tensor([[2.0, 2.0], [2.0, 2.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(s.anchors.data[1], torch.tensor([[0.0, 4.0], [0.0, 4.0]]), atol=1e-4, rtol=0)
    assert s.anchors.data[2].abs().sum() == 0 and s.initialized.tolist() == [True, True, False] and s.needs_init
    # a later batch initialises class 2 only: classes already set keep their (possibly trained) anchors
    assert s.initialize_from(torch.tensor([[5.0, 5.0], [7.0, 5.0], [-8.0, 0.0]]), torch.tensor([2, 2, 0])) == [2]
    torch.testing.assert_close(s.anchors.data[2], torch.tensor([[6.0, 5.0], [6.0, 5.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(s.anchors.data[0], torch.tensor([[2.0, 2.0], [2.0, 2.0]]), atol=1e-4, rtol=0)
    assert not s.needs_init and s.initialize_from(e, y) == []
    # the flags travel with the weights (a resumed run does not re-initialise)
    t = AnchorSet(3, 2, 2, init="data")
    t.load_state_dict(s.state_dict())
    assert not t.needs_init and torch.equal(t.anchors, s.anchors)
    t.load_state_dict(AnchorSet(3, 2, 2, init="data").state_dict())  # fresh flags loaded: the cached answer is dropped
    assert t.needs_init


def test_data_init_default_noise_is_a_tenth_of_the_within_class_spread():
    torch.manual_seed(0)
    s = AnchorSet(2, 4000, 2, init="data")
    # class 0: deviations (-1, -1), (1, 1) -> within SS 4; class 1 one sample -> 0; n = 3, D = 2:
    # pooled within-class variance 4 / 6 per coordinate, RMS 0.8165, sigma = 0.08165
    s.initialize_from(torch.tensor([[1.0, 1.0], [3.0, 3.0], [0.0, 4.0]]), torch.tensor([0, 0, 1]))
    dev = s.anchors.data - torch.tensor([[2.0, 2.0], [0.0, 4.0]]).unsqueeze(1)
    assert dev.std().item() == pytest.approx(0.1 * (4 / 6) ** 0.5, rel=0.03)
    assert dev.mean().abs().item() < 0.005
    with pytest.raises(ModelError, match="expect embeddings"):
        AnchorSet(3, 4, 8).distances(torch.zeros(2, 5))


# ---------------------------------------------------------------- Eq. 9
def test_primary_mlp_layout():
    mlp = PrimaryMLP(32, 7)
    kinds = [type(m).__name__ for m in mlp.net]
    assert kinds == ["Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
    assert [m.out_features for m in mlp.net if isinstance(m, torch.nn.Linear)] == [64, 64, 7]
    assert mlp.net[3].p == 0.5


# ---------------------------------------------------------------- Eqs. 16-17
def test_mhsa_head_shapes_and_distribution():
    att = AttentiveCorrection(dim=200, num_classes=7, num_heads=4, head_dim=64, chunk=64).eval()
    e = torch.randn(3, 200)
    x = att.tokens(e)
    assert att.num_tokens == 4 and x.shape == (3, 4, 256)  # 200 padded to 4 chunks of 64
    q, k, v = att.heads(x)
    assert q.shape == k.shape == v.shape == (3, 4, 4, 64)  # d_Q = d_K = d_V = d_model / n_heads = 64
    t_a, attn = att(e, return_attention=True)
    assert t_a.shape == (3, 7) and attn.shape == (3, 4, 4, 4)
    torch.testing.assert_close(t_a.sum(-1), torch.ones(3))
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 4, 4))


def test_mhsa_prediction_does_not_depend_on_the_rest_of_the_batch():
    att = AttentiveCorrection(dim=128, num_classes=5).eval()
    e = torch.randn(4, 128)
    torch.testing.assert_close(att(e)[:1], att(e[:1]))


# ---------------------------------------------------------------- the head
def test_head_output_and_fusion_chain():
    head = ReliabilityHead(16, 4, num_anchors=3).eval()
    e = torch.randn(5, 16)
    out = head(e)
    for key in ("l", "t_g", "t_a", "t", "final"):
        assert out[key].shape == (5, 4)
        torch.testing.assert_close(out[key].sum(-1), torch.ones(5))
    assert out["distances"].shape == (5, 4, 3) and out["embedding"] is e
    torch.testing.assert_close(out["t"], fuse(out["t_g"], out["t_a"]))  # Eq. 18
    torch.testing.assert_close(out["final"], fuse(out["l"], out["t"]))  # Eq. 19
    assert set(out["confidences"]) == {"c_l", "c_g", "c_a", "c_t"}
    torch.testing.assert_close(ReliabilityHead.log_final(out).softmax(-1), out["final"])


def test_head_ablation_switches():
    e = torch.randn(4, 16)
    only_mhsa = ReliabilityHead(16, 3, use_anchors=False).eval()
    o = only_mhsa(e)
    assert o["t_g"] is None and o["distances"] is None and only_mhsa.anchors is None
    torch.testing.assert_close(o["t"], o["t_a"])
    only_anchor = ReliabilityHead(16, 3, use_mhsa=False).eval()
    o = only_anchor(e)
    assert o["t_a"] is None and only_anchor.attention is None
    torch.testing.assert_close(o["t"], o["t_g"])
    plain = ReliabilityHead(16, 3, use_anchors=False, use_mhsa=False).eval()
    o = plain(e)
    assert o["t"] is None
    torch.testing.assert_close(o["final"], o["l"])


def test_head_gradients_reach_every_part():
    head = ReliabilityHead(16, 3, num_anchors=2).train()
    e = torch.randn(6, 16, requires_grad=True)
    out = head(e)
    out["final"][:, 0].log().sum().backward()
    assert e.grad.abs().sum() > 0
    for name in ("anchors.anchors", "attention.w_out.weight", "attention.w_q.weight", "mlp.net.0.weight"):
        g = head.get_parameter(name).grad
        assert g is not None and g.abs().sum() > 0, name


def test_head_bad_options():
    with pytest.raises(ModelError, match="delta"):
        ReliabilityHead(8, 3, delta=0)
    with pytest.raises(ModelError, match="at least 2 classes"):
        ReliabilityHead(8, 1)


# ---------------------------------------------------------------- any backbone
def test_reliability_balanced_on_a_registered_backbone(tmp_path):
    m = create_model("reliability_balanced", num_classes=5, backbone="resnet18",
                     backbone_kwargs={"small_input": True}, in_chans=1, num_anchors=4).eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        out = m.forward_reliability(x)
        logits = m(x)
    assert out["embedding"].shape == (2, m.num_features) and out["distances"].shape == (2, 5, 4)
    torch.testing.assert_close(logits.softmax(-1), out["final"])
    # a whole-model weight file round-trips through `pretrained`
    path = tmp_path / "rb.pth"
    torch.save(m.state_dict(), path)
    m2 = create_model("reliability_balanced", num_classes=5, pretrained=path, backbone="resnet18",
                      backbone_kwargs={"small_input": True}, in_chans=1, num_anchors=4).eval()
    with torch.no_grad():
        assert torch.equal(m2(x), logits)


def test_reliability_balanced_rejects_bad_options():
    with pytest.raises(ModelError, match="unknown option"):
        create_model("reliability_balanced", bogus=1)
    with pytest.raises(ModelError, match="plain backbone"):
        create_model("reliability_balanced", backbone="grefel_small")
    with pytest.raises(ModelError, match="unknown model"):
        create_model("reliability_balanced", backbone="nope")


def test_anchor_distances_match_the_direct_form_in_float32_even_under_bf16_autocast():
    torch.manual_seed(0)
    s = AnchorSet(7, 10, 256)
    e = torch.randn(32, 256) * 3
    direct = (s.anchors.unsqueeze(0) - e[:, None, None, :]).pow(2).sum(-1).sqrt()
    torch.testing.assert_close(s.distances(e), direct, atol=1e-4, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = s.distances(e.bfloat16())
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, (s.anchors.unsqueeze(0) - e.bfloat16().float()[:, None, None, :]).pow(2).sum(-1).sqrt(),
                               atol=1e-4, rtol=1e-5)
    from fairexpr.losses.grefel import AnchorSpreadLoss

    flat = s.anchors.reshape(70, 256)
    ref = -((flat[:, None] - flat[None]).pow(2).sum(-1).sum() / (70 * 69)) / 16.0  # all ordered pairs, / sqrt(D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(AnchorSpreadLoss()(s.anchors), ref, atol=1e-5, rtol=1e-5)
