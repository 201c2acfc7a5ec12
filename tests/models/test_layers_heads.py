"""CBAM and heads against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fairexpr.models import ModelError, create_model
from fairexpr.models.heads import NormedLinear, UncertaintyHead, build_head
from fairexpr.models.layers import CBAM, ChannelAttention, SpatialAttention


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _set_mlp(ca: ChannelAttention) -> None:
    # hidden 1: h = relu(z0 + z1); out = [h, -h]
    with torch.no_grad():
        ca.fc1.weight.copy_(torch.tensor([[1.0, 1.0]]).view(1, 2, 1, 1)); ca.fc1.bias.zero_()
        ca.fc2.weight.copy_(torch.tensor([[1.0], [-1.0]]).view(2, 1, 1, 1)); ca.fc2.bias.zero_()


def test_channel_attention_hand_computed():
    ca = ChannelAttention(2, reduction=2)
    _set_mlp(ca)
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 2.0]]]])  # [1,2,1,2]
    # avg = (2, 1) -> h = 3 -> (3, -3); max = (3, 2) -> h = 5 -> (5, -5); sum (8, -8)
    g = ca.gate(x)
    assert g.shape == (1, 2, 1, 1)
    torch.testing.assert_close(g.flatten(), torch.tensor([_sig(8), _sig(-8)]))
    torch.testing.assert_close(ca(x), x * torch.tensor([_sig(8), _sig(-8)]).view(1, 2, 1, 1))


def test_channel_attention_constant_input():
    ca = ChannelAttention(2, reduction=2)
    _set_mlp(ca)
    x = torch.ones(1, 2, 3, 3) * torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    # avg = max = (1, 2) -> each MLP gives (3, -3); gate = sigmoid(6), sigmoid(-6)
    torch.testing.assert_close(ca.gate(x).flatten(), torch.tensor([_sig(6), _sig(-6)]))


def test_channel_attention_shapes_and_reduction():
    ca = ChannelAttention(64, reduction=16)
    assert ca.fc1.out_channels == 4 and ca.fc2.out_channels == 64
    assert ca.gate(torch.randn(3, 64, 5, 7)).shape == (3, 64, 1, 1)
    with pytest.raises(ModelError):
        ChannelAttention(0)


def test_spatial_attention_hand_computed():
    sa = SpatialAttention(7).eval()  # BN eval with running stats (0, 1): bn(z) = z / sqrt(1 + eps)
    with torch.no_grad():
        sa.conv.weight.zero_()
        sa.conv.weight[0, 0, 3, 3] = 1.0   # centre tap on the channel-mean map
        sa.conv.weight[0, 1, 3, 3] = -1.0  # centre tap on the channel-max map
    x = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1).repeat(1, 1, 2, 2)  # mean 2, max 3 at every pixel
    g = sa.gate(x)
    assert g.shape == (1, 1, 2, 2)
    expected = _sig(-1.0 / math.sqrt(1.0 + sa.bn.eps))
    torch.testing.assert_close(g, torch.full((1, 1, 2, 2), expected))
    with pytest.raises(ModelError):
        SpatialAttention(4)


@pytest.mark.parametrize("train", [True, False])
def test_cbam_with_zero_convs_scales_by_a_quarter(train):
    cbam = CBAM(8, reduction=4).train(train)
    for m in cbam.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    x = torch.randn(2, 8, 5, 5)
    # channel gate sigmoid(0) = 0.5; spatial conv output 0 -> BN 0 (train: batch stats; eval: running) -> 0.5
    torch.testing.assert_close(cbam(x), 0.25 * x)


def test_cbam_block_attends_before_the_residual_addition():
    model = create_model("cbam_resnet18", num_classes=2, small_input=True).eval()
    block = model.layer1[0]  # identity shortcut

    class Zero(nn.Module):
        def forward(self, t):
            return torch.zeros_like(t)

    block.cbam = Zero()
    x = torch.randn(2, 64, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(x))  # residual branch fully gated -> relu(identity)


def test_normed_linear_hand_computed():
    head = NormedLinear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 5.0]]))  # columns e1*2, e2*5
    out = head(torch.tensor([[3.0, 4.0], [-6.0, 8.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8], [-0.6, 0.8]]))
    assert NormedLinear(16, 3).weight.norm(dim=0).allclose(torch.ones(3))


def test_uncertainty_head_follows_rul():
    head = UncertaintyHead(32, 7)
    assert head.feat_dim == 64 and head.drop_rate == 0.4
    drops = [m for m in head.mu if isinstance(m, nn.Dropout)]
    assert drops and drops[0].p == 0.4
    bns = [m for m in head.mu if isinstance(m, nn.BatchNorm1d)]
    assert not bns[0].affine and bns[1].affine and all(b.eps == 2e-5 for b in bns)
    h = torch.randn(4, 32)
    mu, logvar = head.features(h)
    assert mu.shape == logvar.shape == (4, 64)
    head.eval()
    torch.testing.assert_close(head(h), head.classify(head.mu(h)))
    with pytest.raises(ModelError):
        build_head("uncertainty", 8, 2, bogus=1)
    with pytest.raises(ModelError):
        build_head("linear", 8, 2, feat_dim=3)


def test_model_head_options():
    m = create_model("resnet18", num_classes=3, head="normed", small_input=True).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 16, 16))
    assert out.abs().max() <= 1.0 + 1e-6
    u = create_model("resnet18", num_classes=3, head="uncertainty", drop_rate=0.1, head_kwargs={"feat_dim": 16})
    head = u.get_classifier()
    assert isinstance(head, UncertaintyHead) and head.feat_dim == 16 and head.drop_rate == 0.1
    u.reset_classifier(5)
    assert isinstance(u.get_classifier(), UncertaintyHead) and u.get_classifier().classifier.out_features == 5
    mb = create_model("mobilenet_v2", num_classes=4)
    assert mb.classifier[0].p == 0.2 and isinstance(mb.classifier[1], nn.Linear)
    mb.reset_classifier(9)
    assert mb.classifier[1].out_features == 9 and "classifier.1.weight" in mb.state_dict()


@pytest.mark.parametrize("train", [True, False])
def test_cbam_identity_init_starts_as_the_identity_and_learns(train):
    cbam = CBAM(8, reduction=4, init="identity").train(train)
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(cbam.channel.gate(x), torch.ones(2, 8, 1, 1))
    assert torch.equal(cbam.spatial.gate(x), torch.ones(2, 1, 5, 5))
    torch.testing.assert_close(cbam(x), x, rtol=0, atol=0)
    cbam.train()
    (cbam(x) * torch.randn_like(x)).sum().backward()
    # the zeroed layers still get gradients: the gates move away from 1 at the first step
    for p in (cbam.channel.fc2.weight, cbam.channel.fc2.bias, cbam.spatial.bn.weight):
        assert p.grad is not None and bool(p.grad.abs().sum() > 0)


def test_cbam_identity_gates_are_twice_the_sigmoid_hand_computed():
    cbam = CBAM(4, reduction=2, init="identity").eval()
    with torch.no_grad():
        # channel: fc2 weights stay 0, bias b -> MLP(avg) + MLP(max) = 2b = ln 3 -> 2 * sigmoid(ln 3) = 2 * 3/4 = 1.5
        cbam.channel.fc2.bias.fill_(math.log(3.0) / 2)
        # spatial (eval, running mean 0 / var 1): BN = gamma * conv / sqrt(1 + eps) + beta; gamma 0, beta = -ln 3
        # -> 2 * sigmoid(-ln 3) = 2 * 1/4 = 0.5
        cbam.spatial.bn.bias.fill_(-math.log(3.0))
    x = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(cbam(x), 0.75 * x)
    with pytest.raises(ModelError, match="init must be one of paper, identity"):
        CBAM(4, init="zeros")


def test_cbam_resnet18_identity_init_equals_the_plain_network_with_its_weights(tmp_path):
    torch.manual_seed(0)
    plain = create_model("resnet18", num_classes=3, small_input=True).eval()
    torch.save(plain.state_dict(), tmp_path / "plain.pth")
    ident = create_model("cbam_resnet18", num_classes=3, small_input=True, cbam_init="identity",
                         pretrained=tmp_path / "plain.pth").eval()
    paper = create_model("cbam_resnet18", num_classes=3, small_input=True, pretrained=tmp_path / "plain.pth").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = plain.forward_features(x)
        torch.testing.assert_close(ident.forward_features(x), f)  # torchvision's init loop did not undo the zeros
        assert not torch.allclose(paper.forward_features(x), f, atol=1e-2)  # the paper's gates change the network
    # a checkpoint of a trained CBAM network keeps its gates: the identity init comes before loading
    with torch.no_grad():
        ident.layer1[0].cbam.channel.fc2.bias.fill_(0.3)
    torch.save(ident.state_dict(), tmp_path / "cbam.pth")
    again = create_model("cbam_resnet18", num_classes=3, small_input=True, cbam_init="identity",
                         pretrained=tmp_path / "cbam.pth")
    assert torch.equal(again.layer1[0].cbam.channel.fc2.bias, torch.full((64,), 0.3))
    with pytest.raises(ModelError, match="cbam_init must be one of paper, identity"):
        create_model("cbam_resnet18", cbam_init="ones")
