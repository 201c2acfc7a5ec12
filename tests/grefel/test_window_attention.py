"""Window cross-attention (Eqs. 1-5) on random feature maps: shapes, bias, window locality."""
from __future__ import annotations

import pytest
import torch

from fairexpr.models import ModelError
from fairexpr.models.grefel import (CrossAttentionEncoder, FusionViT, RelativePositionBias, WindowCrossAttention,
                                    window_partition, window_reverse)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_partition_reverse_round_trip_and_order():
    x = torch.arange(2 * 4 * 4 * 3, dtype=torch.float32).view(2, 4, 4, 3)
    w = window_partition(x, 2)
    assert w.shape == (8, 4, 3)
    torch.testing.assert_close(w[1], x[0, 0:2, 2:4].reshape(4, 3))  # second window of image 0: top-right
    torch.testing.assert_close(window_reverse(w, 2, 4, 4), x)
    with pytest.raises(ModelError, match="does not divide"):
        window_partition(x, 3)


def test_relative_position_bias_depends_only_on_offset():
    rpb = RelativePositionBias(window=3, num_heads=2)
    assert rpb.table.shape == (25, 2)
    b = rpb()
    assert b.shape == (2, 9, 9)
    # token (0,0)->(1,1) and (1,1)->(2,2) share the offset (+1,+1); (1,1)->(0,0) is the opposite offset
    torch.testing.assert_close(b[:, 0, 4], b[:, 4, 8])
    assert not torch.equal(b[:, 0, 4], b[:, 4, 0])
    assert "index" not in rpb.state_dict()  # derived, not saved


@pytest.mark.parametrize("dim,heads,grid", [(64, 2, 28), (128, 4, 14), (256, 8, 7)])
def test_encoder_shapes_at_the_three_paper_levels(dim, heads, grid):
    enc = CrossAttentionEncoder(dim, heads, window=grid)  # POSTER++: window = map size
    img, lmk = torch.randn(2, dim, grid, grid), torch.randn(2, dim, grid, grid)
    out = enc(img, lmk)
    assert out.shape == (2, dim, grid, grid)
    out.sum().backward()
    assert enc.attn.kv.weight.grad is not None and enc.attn.bias.table.grad is not None


def test_window_attention_shapes_and_rows_sum_to_one():
    wca = WindowCrossAttention(dim=32, num_heads=4, window=7, query_proj=True)
    x, q = torch.randn(6, 49, 32), torch.randn(6, 49, 32)
    assert wca(x, q).shape == (6, 49, 32)
    with pytest.raises(ModelError, match="query windows"):
        wca(x, q[:, :10])
    with pytest.raises(ModelError, match="divisible"):
        WindowCrossAttention(dim=30, num_heads=4, window=7)


@pytest.mark.parametrize("stream", ["image", "landmark"])
def test_changing_one_window_leaves_other_windows_unchanged(stream):
    enc = CrossAttentionEncoder(32, 2, window=7, layer_scale=None).eval()  # 28x28 map, 16 windows of 7x7
    img, lmk = torch.randn(1, 32, 28, 28), torch.randn(1, 32, 28, 28)
    with torch.no_grad():
        ref = enc(img, lmk)
        img2, lmk2 = img.clone(), lmk.clone()
        target = img2 if stream == "image" else lmk2
        target[:, :, 7:14, 14:21] = torch.randn(1, 32, 7, 7)  # window (row 1, col 2)
        out = enc(img2, lmk2)
    changed = (out - ref).abs().amax(dim=1)[0]  # [28, 28]
    inside = changed[7:14, 14:21]
    outside = changed.clone()
    outside[7:14, 14:21] = 0
    assert inside.min() > 0  # every token of the changed window responds
    assert outside.max() == 0  # ... and no token of any other window does


def test_encoder_rejects_mismatched_maps():
    enc = CrossAttentionEncoder(16, 2, window=7)
    with pytest.raises(ModelError, match="expects equal"):
        enc(torch.randn(1, 16, 14, 14), torch.randn(1, 16, 7, 7))


def test_fusion_vit_returns_the_class_token():
    vit = FusionViT(num_tokens=147, dim=48, depth=2, num_heads=4)
    out = vit(torch.randn(2, 147, 48))
    assert out.shape == (2, 48) and vit.pos_embed.shape == (1, 148, 48)
