"""The registered GReFEL networks: forward/backward, frozen landmark stream, sizes, bad options."""
from __future__ import annotations

import pytest
import torch

from torch import nn

from fairexpr.models import ModelError, create_model
from fairexpr.models.grefel import GReFELNet, model_complexity


class TinyPyramid(nn.Module):
    """Test double for a stream: three maps at 1/2, 1/4, 1/8 (or 1/4, 1/8, 1/16) of the input."""

    def __init__(self, chans=(8, 16, 24), first_stride=2) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, chans[0], 3, first_stride, 1)
        self.b = nn.Conv2d(chans[0], chans[1], 3, 2, 1)
        self.c = nn.Conv2d(chans[1], chans[2], 3, 2, 1)
        self.bn = nn.BatchNorm2d(chans[0])

    def forward_features_multiscale(self, x):
        a = self.bn(self.a(x))
        b = self.b(a)
        return [a, b, self.c(b)]


def _tiny(**kw) -> GReFELNet:
    # image maps 16/8/4 at 32x32 input, landmark maps 8/4/2: image adapters use stride 2, landmark 3x3 convs
    args = dict(input_size=32, window_sizes=(4, 4, 2), num_heads=(1, 2, 2), dims=(8, 16, 16), embed_dim=32,
                depth=1, vit_heads=2)
    args.update(kw)
    return GReFELNet(3, TinyPyramid(first_stride=2), TinyPyramid((8, 16, 40), first_stride=4), **args)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def small() -> GReFELNet:
    torch.manual_seed(0)
    return create_model("grefel_small", num_classes=7)


def test_grefel_small_forward_backward(small):
    small.train()
    small.zero_grad()
    x = torch.randn(2, 3, 112, 112)
    out = small.forward_reliability(x)
    assert out["embedding"].shape == (2, 192) and out["final"].shape == (2, 7) and out["distances"].shape == (2, 7, 10)
    levels = small.forward_levels(x)
    assert [tuple(o.shape) for o in levels] == [(2, 32, 28, 28), (2, 64, 14, 14), (2, 128, 7, 7)]
    out["final"].clamp_min(1e-12).log()[:, 3].sum().backward()
    for name in ("image_backbone.conv1.conv.weight", "landmark_backbone.conv1.conv.weight",
                 "encoders.0.attn.kv.weight", "fusion.cls_token", "rb_head.anchors.anchors",
                 "rb_head.attention.w_out.weight", "rb_head.mlp.net.0.weight"):
        g = small.get_parameter(name).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_forward_is_log_final_and_resizes_other_input_sizes(small):
    small.eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        out = small.forward_reliability(x)
        torch.testing.assert_close(small(x).softmax(-1), out["final"])
        big = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        assert small(big).shape == (2, 7)


def test_generic_streams_adapters_and_levels():
    net = _tiny().train()
    assert [type(m).__name__ for m in net.lmk_adapters] == ["Identity", "Identity", "Conv2d"]  # 40 -> 16 channels
    assert [m.stride for m in net.img_adapters] == [(2, 2)] * 3
    assert [len(m) if isinstance(m, nn.Sequential) else 0 for m in net.token_embeds] == [2, 1, 0]  # 8->2, 4->2, 2
    x = torch.randn(2, 3, 32, 32)
    assert [tuple(o.shape) for o in net.forward_levels(x)] == [(2, 8, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2)]
    assert net.fusion.pos_embed.shape == (1, 1 + 3 * 4, 32)
    net(x)[:, 0].sum().backward()
    assert net.landmark_backbone.a.weight.grad is not None and net.image_backbone.a.weight.grad is not None


def test_frozen_landmark_stream_gets_no_gradient_and_stays_in_eval():
    net = _tiny(freeze_landmark=True, head_kwargs={"use_mhsa": False}).train()
    assert not net.landmark_backbone.training and net.image_backbone.training
    assert all(not p.requires_grad for p in net.landmark_backbone.parameters())
    net(torch.randn(2, 3, 32, 32))[:, 0].sum().backward()
    assert all(p.grad is None for p in net.landmark_backbone.parameters())
    assert net.image_backbone.a.weight.grad is not None
    assert net.rb_head.attention is None


def test_plain_linear_head_variant():
    net = _tiny(reliability=False).eval()
    assert net.rb_head is None and isinstance(net.head, torch.nn.Linear)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ModelError, match="reliability=False"):
        net.forward_reliability(torch.randn(1, 3, 32, 32))
    net.reset_classifier(5)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_complexity_counts_grefel_small(small):
    c = model_complexity(small)
    assert c["params"] == sum(p.numel() for p in small.parameters())
    assert c["macs"] == c["flops"] / 2 and 1e8 < c["macs"] < 2e9  # ~0.71 GMACs at 112x112


@pytest.mark.slow
def test_paper_sized_grefel_matches_the_reported_size():
    net = create_model("grefel", num_classes=7)
    c = model_complexity(net)
    # paper: 43.84M parameters, 8.51 G(MAC)s; ours: 43.05M, 8.59 GMACs (POSTER++ extractor + RB head)
    assert 41e6 < c["params"] < 46e6 and 8.0e9 < c["macs"] < 9.0e9
    assert net.dims == [64, 128, 256] and net.window_sizes == [28, 14, 7] and net.num_features == 768


def test_bad_options_raise_model_error(small):
    with pytest.raises(ModelError, match="does not divide"):
        _tiny(window_sizes=(4, 3, 2))
    with pytest.raises(ModelError, match="3 entries"):
        _tiny(dims=(8, 16))
    with pytest.raises(ModelError, match="forward_features_multiscale"):
        GReFELNet(3, nn.Conv2d(3, 3, 1), TinyPyramid())
    with pytest.raises(ModelError, match="unknown option"):
        create_model("grefel_small", no_such_option=1)
    with pytest.raises(ModelError, match="in_chans"):
        create_model("grefel_small", in_chans=2)
    with pytest.raises(ModelError, match="expects images"):
        small(torch.randn(1, 1, 112, 112))
