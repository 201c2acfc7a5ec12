"""UDA layers: gradient reversal + warm-start schedule, discriminator loss, MCD discrepancy, AFN norm loss,
and the registered mcd_net / afn_net networks (shapes, gradients, checkpoint rebuild)."""
from __future__ import annotations

import math

import pytest
import torch

from fairexpr import checkpoint as ck
from fairexpr.models import ModelError, create_model
from fairexpr.losses.uda import AdaptiveFeatureNorm, classifier_discrepancy, domain_adversarial_loss, entropy
from fairexpr.models.uda_heads import DomainDiscriminator, GradientReverseLayer, WarmStartGradientReverseLayer, \
    warm_start_coeff

from difc_helpers import TINY


def test_grl_forward_identity_backward_negated():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = GradientReverseLayer(0.5)(x)
    assert torch.equal(y, x.detach())
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


@pytest.mark.parametrize("i, expected", [
    (0, 0.0),
    (500, math.tanh(0.25)),  # 2/(1+e^{-x}) - 1 = tanh(x/2)
    (1000, math.tanh(0.5)),  # 0.46211716
    (10_000, math.tanh(5.0)),
])
def test_warm_start_coeff_values(i, expected):
    assert warm_start_coeff(i, max_iters=1000) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_warm_start_coeff_lo_hi_and_bad_max_iters():
    assert warm_start_coeff(0, 1000, lo=0.1, hi=0.9) == pytest.approx(0.1)
    assert warm_start_coeff(1000, 1000, lo=0.1, hi=0.9) == pytest.approx(0.8 * math.tanh(0.5) + 0.1)
    with pytest.raises(ValueError, match="max_iters"):
        warm_start_coeff(1, max_iters=0)


def test_warm_start_layer_backward_uses_current_coeff():
    grl = WarmStartGradientReverseLayer(max_iters=1000)
    grl.iter_num = 500
    x = torch.ones(2, 3, requires_grad=True)
    grl(x).sum().backward()
    assert torch.allclose(x.grad, torch.full((2, 3), -math.tanh(0.25)))
    assert grl.iter_num == 500  # auto_step off
    auto = WarmStartGradientReverseLayer(auto_step=True)
    auto(torch.ones(1))
    auto(torch.ones(1))
    assert auto.iter_num == 2


def test_domain_adversarial_loss_value_and_accuracy():
    d_s, d_t = torch.zeros(4), torch.zeros(4)
    loss, acc = domain_adversarial_loss(d_s, d_t)
    assert loss.item() == pytest.approx(math.log(2))
    assert acc.item() == pytest.approx(0.5)  # logit 0: source counted wrong, target counted right
    loss, acc = domain_adversarial_loss(torch.full((2,), 3.0), torch.full((2,), -3.0))
    assert acc.item() == 1.0
    assert loss.item() == pytest.approx(math.log1p(math.exp(-3.0)))


def test_domain_discriminator_shapes_and_grad():
    d = DomainDiscriminator(8, hidden=16)
    f = torch.randn(5, 8, requires_grad=True)
    out = d(f)
    assert out.shape == (5,)
    out.sum().backward()
    assert f.grad is not None


def test_discrepancy_and_entropy_hand_values():
    p1 = torch.tensor([[1.0, 0.0], [0.2, 0.8]])
    p2 = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
    assert classifier_discrepancy(p1, p2).item() == pytest.approx((0.5 + 0.5 + 0 + 0) / 4)
    u = torch.full((3, 2), 0.5)
    assert entropy(u).item() == pytest.approx(-math.log(0.5 + 1e-5), rel=1e-6)
    with pytest.raises(ValueError, match="shapes"):
        classifier_discrepancy(p1, p2[:1])


def test_adaptive_feature_norm_value_and_gradient():
    afn = AdaptiveFeatureNorm(delta=1.0)
    f = torch.tensor([[3.0, 4.0]], requires_grad=True)  # ‖f‖ = 5, target radius 6
    loss = afn(f)
    assert loss.item() == pytest.approx(1.0)  # (5 - 6)^2
    loss.backward()
    # d/df (‖f‖ - 6)^2 = 2 (‖f‖ - 6) f / ‖f‖ = -2 [0.6, 0.8]
    assert torch.allclose(f.grad, torch.tensor([[-1.2, -1.6]]))
    assert AdaptiveFeatureNorm(0.5)(torch.randn(7, 3)).item() == pytest.approx(0.25, rel=1e-5)


@pytest.mark.parametrize("name, extra", [("mcd_net", {"head_hidden": 0}), ("mcd_net", {"head_hidden": 16}),
                                         ("afn_net", {"bottleneck_dim": 12})])
def test_uda_networks_shapes_grad_and_checkpoint_roundtrip(tmp_path, name, extra):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7, backbone=TINY, **extra)
    x = torch.randn(4, 1, 16, 16)
    f = m.forward_features(x)
    assert f.shape == (4, m.num_features)
    out = m(x)
    assert out.shape == (4, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in m.backbone.body.parameters())
    if name == "mcd_net":
        # softmax of the output is exactly the average of the two classifiers' softmax (Eq. 8)
        m.eval()
        z1, z2 = m.forward_heads(m.forward_features(x))
        avg = 0.5 * (z1.softmax(-1) + z2.softmax(-1))
        assert torch.allclose(m(x).softmax(-1), avg, atol=1e-6)
    m.eval()
    ck.save_model(tmp_path, m, {"model": {"name": m.registry_name, "num_classes": 7, "kwargs": m.build_kwargs},
                                "classes": list(range(7)), "preprocess": {}})
    back, _ = ck.load_model(tmp_path)
    assert torch.allclose(back(x), m(x))


def test_uda_network_rejects_nested_wrapper():
    with pytest.raises(ModelError, match="wrapper"):
        create_model("mcd_net", num_classes=7, backbone="afn_net")


@pytest.mark.parametrize("name, head_key", [("mcd_net", "c1.net.1.weight"), ("afn_net", "bottleneck.fc.weight")])
def test_uda_network_pretrained_whole_file_or_backbone_only(tmp_path, name, head_key):
    """``pretrained=``: a whole-network file (``backbone.*`` + head keys) is loaded strictly; a file of the
    backbone alone goes to the backbone and leaves the UDA heads at their initialisation."""
    torch.manual_seed(0)
    a = create_model(name, num_classes=5, backbone=TINY, in_chans=1).eval()
    whole = tmp_path / "whole.pth"
    torch.save(a.state_dict(), whole)
    torch.manual_seed(1)
    b = create_model(name, num_classes=5, backbone=TINY, in_chans=1, pretrained=whole).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert b.load_report is not None and head_key in b.load_report.loaded
    # whole file against a network built with other options: a clear error, never a partial load
    with pytest.raises(ModelError, match="whole-"):
        create_model(name, num_classes=4, backbone=TINY, in_chans=1, pretrained=whole)
    # backbone-only file (a plain resnet18 state_dict): the backbone's own loader takes it, the heads keep
    # their initialisation
    plain = create_model("resnet18", num_classes=5, in_chans=1)
    back = tmp_path / "backbone.pth"
    torch.save(plain.state_dict(), back)
    torch.manual_seed(1)
    c = create_model(name, num_classes=5, backbone="resnet18", in_chans=1, pretrained=back)
    assert torch.equal(c.backbone.conv1.weight, plain.conv1.weight)
    assert c.backbone.load_report is not None and not c.backbone.load_report.missing
    assert getattr(c, "load_report", None) is None
    torch.manual_seed(1)
    d = create_model(name, num_classes=5, backbone="resnet18", in_chans=1)
    assert torch.equal(c.state_dict()[head_key], d.state_dict()[head_key])


@pytest.mark.parametrize("name", ["mcd_net", "afn_net"])
def test_uda_network_in_chans_is_passed_to_the_backbone(name):
    for c in (1, 3):
        m = create_model(name, num_classes=3, backbone=TINY, in_chans=c)
        assert m.pretrained_cfg["in_chans"] == c and m.backbone.pretrained_cfg["in_chans"] == c
        assert m.build_kwargs["backbone_kwargs"]["in_chans"] == c
        assert m(torch.randn(2, c, 16, 16)).shape == (2, 3)
    with pytest.raises(ModelError, match="contradicts"):
        create_model(name, num_classes=3, backbone=TINY, in_chans=3, backbone_kwargs={"in_chans": 1})
