"""GReFEL feature extractor: multi-scale window cross-attention ViT over image + landmark streams.

Wasi et al., "GReFEL" (2024), §3.1, whose extractor follows POSTER++ (Mao et al. 2023,
``Talented-Q/POSTER_V2`` ``models/PosterV2_7cls.py``):

1. An image stream (IR-50) and a facial-landmark stream (MobileFaceNet) each give three feature maps.
   In POSTER++ both streams resize the input to 112x112 internally; IR-50 gives 56/28/14 maps (64/128/256
   channels) that a 3x3 stride-2 convolution brings to 28/14/7; MobileFaceNet gives 28/14/7 maps
   (64/128/512 channels) and a 3x3 convolution maps the last one to 256 channels. Here the adapters are
   derived from the backbones' actual output shapes (probed once at construction), so any registered
   backbone with ``forward_features_multiscale(x) -> [map1, map2, map3]`` can be used.
2. Per level, window cross-attention (:class:`CrossAttentionEncoder`, Eqs. 1–5): queries from the
   landmark map, keys/values from the image map, multi-head attention inside each window with a learned
   relative position bias, then residual + MLP. POSTER++ uses window = map size (one window per level);
   smaller windows are supported and each window's landmark tokens query that window's image tokens
   (POSTER++'s global-query code only works when the window covers the whole map).
3. Multi-scale fusion (Eqs. 6–8): every level is embedded to ``embed_dim`` tokens on the last level's
   grid (stride-2 3x3 convolutions, 1x1 for the last level), the tokens are concatenated behind a class
   token with position embeddings and a ViT (``depth`` blocks of MHSA + MLP) produces the embedding
   ``e`` = the normalised class token.

The classifier is GReFEL's reliability-balancing head (:mod:`fairexpr.models.reliability`) by default
(``reliability=True``; ``forward`` returns ``log L_final``), or a plain linear layer
(``reliability=False``; POSTER++'s head without its SE block).

POSTER++ details kept: queries are the raw (un-projected) landmark features (``query_proj=False``),
image tokens are layer-normed before attention and the normed tokens are the residual shortcut,
layer scale 1e-5 on both residual branches, stochastic depth ``linspace(0, 0.5, 5)[:3]`` on the three
levels, ViT with 8 heads, no qkv bias, MLP ratio 4, depth 2, embed 768.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import MLP, StochasticDepth

from .registry import FERModel, ModelError, create_model, load_state_file, register_model
from .reliability import HEAD_OPTIONS, ReliabilityHead

__all__ = [
    "CrossAttentionEncoder",
    "FusionViT",
    "GReFELNet",
    "RelativePositionBias",
    "WindowCrossAttention",
    "grefel",
    "grefel_small",
    "model_complexity",
    "window_partition",
    "window_reverse",
]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, H, W, C] -> [B·nW, window², C]`` with windows in row-major order (per image)."""
    b, h, w, c = x.shape
    if h % window or w % window:
        raise ModelError(f"window size {window} does not divide the feature map {h}x{w}")
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B·nW, window², C] -> [B, H, W, C]``."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class RelativePositionBias(nn.Module):
    """Learned bias ``B[h, p, q] = table[idx(Δrow(p,q), Δcol(p,q)), h]`` for a ``w x w`` window.

    ``idx = (Δrow + w − 1)(2w − 1) + (Δcol + w − 1)``; the table has ``(2w−1)²`` rows (Swin/POSTER++).
    """

    def __init__(self, window: int, num_heads: int) -> None:
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # [N, N, 2]
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)

    def forward(self) -> torch.Tensor:
        n = self.window * self.window
        return self.table[self.index.reshape(-1)].view(n, n, self.num_heads).permute(2, 0, 1)


class WindowCrossAttention(nn.Module):
    """Per-window multi-head cross-attention with relative position bias (Eqs. 1–3).

    For window tokens ``X_img, X_lm ∈ R^{N×C}`` and head ``h`` (``d = C / n_heads``):
    ``Q_h = X_lm`` (POSTER++; ``X_lm W_Q`` with ``query_proj=True``), ``[K_h, V_h] = X_img W_KV`` (Eq. 1),
    ``A_h = softmax(Q_h K_hᵀ / √d + B_h)`` (Eq. 2), ``O = concat_h(A_h V_h) W_O`` (Eq. 3).
    """

    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool = True, query_proj: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ModelError(f"window attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.window = dim, num_heads, window
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias) if query_proj else nn.Identity()
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.bias = RelativePositionBias(window, num_heads)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``x`` (image) and ``q`` (landmark) windows ``[B·nW, N, C]`` -> ``[B·nW, N, C]``."""
        bw, n, c = x.shape
        if q.shape != x.shape:
            raise ModelError(f"window attention: query windows {tuple(q.shape)} != key windows {tuple(x.shape)}")
        kv = self.kv(x).view(bw, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        qh = self.q(q).view(bw, n, self.num_heads, self.head_dim).transpose(1, 2)
        attn = (qh * self.scale) @ k.transpose(-2, -1) + self.bias().unsqueeze(0)
        attn = self.attn_drop(attn.softmax(-1))
        out = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))


class CrossAttentionEncoder(nn.Module):
    """One level of the cross-attention encoder (Eqs. 1–5) on ``[B, C, H, W]`` maps.

    ``X = LN(X_img)`` (channel-last), ``Z = X + γ₁ · DropPath(WCA(X, X_lm))`` (Eq. 4),
    ``Y = Z + γ₂ · DropPath(MLP(LN(Z)))`` (Eq. 5); ``γ`` is layer scale (``None`` = 1).
    Every operation except the window attention is per token, so each output window depends only on
    the same window of both inputs.
    """

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float = 4.0, layer_scale: float | None = 1e-5,
                 drop_path: float = 0.0, query_proj: bool = False, qkv_bias: bool = True) -> None:
        super().__init__()
        self.dim, self.window = dim, window
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowCrossAttention(dim, num_heads, window, qkv_bias=qkv_bias, query_proj=query_proj)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, [int(dim * mlp_ratio), dim], activation_layer=nn.GELU, inplace=None)
        self.drop_path = StochasticDepth(drop_path, "row")
        if layer_scale is None:
            self.register_buffer("gamma1", torch.ones(dim), persistent=False)
            self.register_buffer("gamma2", torch.ones(dim), persistent=False)
        else:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, img: torch.Tensor, lmk: torch.Tensor) -> torch.Tensor:
        if img.shape != lmk.shape or img.ndim != 4 or img.shape[1] != self.dim:
            raise ModelError(f"cross-attention level (dim {self.dim}) expects equal [B, {self.dim}, H, W] image and "
                             f"landmark maps, got {tuple(img.shape)} and {tuple(lmk.shape)}")
        h, w = img.shape[-2:]
        x = self.norm1(img.permute(0, 2, 3, 1))
        q = lmk.permute(0, 2, 3, 1)
        o = self.attn(window_partition(x, self.window), window_partition(q, self.window))
        z = x + self.drop_path(self.gamma1 * window_reverse(o, self.window, h, w))
        y = z + self.drop_path(self.gamma2 * self.mlp(self.norm2(z)))
        return y.permute(0, 3, 1, 2)


class SelfAttention(nn.Module):
    """Standard MHSA (Eq. 6): ``softmax(Q Kᵀ/√d) V`` per head, heads concatenated and projected."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ModelError(f"fusion ViT: embed_dim {dim} is not divisible by vit_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.head_dim ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class FusionBlock(nn.Module):
    """ViT block (Eqs. 7–8): ``x = x + DP(MHSA(LN(x)))``, ``x = x + DP(MLP(LN(x)))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, [int(dim * mlp_ratio), dim], activation_layer=nn.GELU, inplace=None)
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FusionViT(nn.Module):
    """Multi-scale fusion (Eqs. 6–8): ``[cls; tokens] + pos`` -> ``depth`` blocks -> LN -> class token."""

    def __init__(self, num_tokens: int, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        rates = torch.linspace(0, drop_path_rate, max(depth, 1)).tolist()
        self.blocks = nn.Sequential(*[FusionBlock(dim, num_heads, mlp_ratio, rates[i]) for i in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]


def _probe(backbone: nn.Module, name: str, in_chans: int, size: int) -> list[tuple[int, int, int]]:
    if not hasattr(backbone, "forward_features_multiscale"):
        raise ModelError(f"grefel: backbone {name!r} has no forward_features_multiscale(x) (needed for the "
                         "three feature maps of the cross-attention levels)")
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        maps = backbone.forward_features_multiscale(torch.zeros(1, in_chans, size, size))
    backbone.train(was_training)
    if len(maps) != 3 or any(m.ndim != 4 for m in maps):
        raise ModelError(f"grefel: backbone {name!r} must return three [B, C, H, W] maps, got "
                         f"{[tuple(m.shape) for m in maps]}")
    return [(int(m.shape[1]), int(m.shape[2]), int(m.shape[3])) for m in maps]


class GReFELNet(FERModel):
    """The GReFEL network: two streams -> window cross-attention per level -> fusion ViT -> head.

    ``forward_features(x)`` is the embedding ``e`` ``[B, embed_dim]``; ``forward(x)`` gives ``log L_final``
    (``reliability=True``) or linear logits. ``forward_reliability(x)`` returns the head's dict.
    Inputs of another size than ``input_size`` are resized bilinearly (POSTER++ does the same).
    """

    def __init__(self, num_classes: int, image_backbone: nn.Module, landmark_backbone: nn.Module, *,
                 input_size: int = 112, in_chans: int = 3, window_sizes: Sequence[int] = (28, 14, 7),
                 num_heads: Sequence[int] = (2, 4, 8), dims: Sequence[int] = (64, 128, 256), embed_dim: int = 768,
                 depth: int = 2, vit_heads: int = 8, mlp_ratio: float = 4.0, layer_scale: float | None = 1e-5,
                 drop_path_rate: float = 0.5, query_proj: bool = False, freeze_landmark: bool = False,
                 reliability: bool = True, head_kwargs: dict[str, Any] | None = None,
                 image_name: str = "image backbone", landmark_name: str = "landmark backbone") -> None:
        super().__init__()
        for key, val in (("window_sizes", window_sizes), ("num_heads", num_heads), ("dims", dims)):
            if len(val) != 3:
                raise ModelError(f"grefel: {key} must have 3 entries (one per level), got {list(val)}")
        if depth < 1 or embed_dim < 1:
            raise ModelError(f"grefel: depth and embed_dim must be >= 1, got {depth} and {embed_dim}")
        self.num_classes, self.num_features = num_classes, embed_dim
        self.input_size, self.in_chans = int(input_size), int(in_chans)
        self.window_sizes, self.dims = [int(w) for w in window_sizes], [int(d) for d in dims]
        self.reliability = bool(reliability)
        self.pretrained_cfg = {"input_size": (self.input_size, self.input_size), "in_chans": self.in_chans,
                               "mean": IMAGENET_MEAN if in_chans == 3 else [0.449],
                               "std": IMAGENET_STD if in_chans == 3 else [0.226]}
        self.image_backbone, self.landmark_backbone = image_backbone, landmark_backbone
        self.freeze_landmark = bool(freeze_landmark)
        if self.freeze_landmark:
            for p in self.landmark_backbone.parameters():
                p.requires_grad_(False)
        img_shapes = _probe(image_backbone, image_name, in_chans, self.input_size)
        lmk_shapes = _probe(landmark_backbone, landmark_name, in_chans, self.input_size)
        self.grids = [h for _, h, _ in lmk_shapes]
        self.img_adapters, self.lmk_adapters = nn.ModuleList(), nn.ModuleList()
        for i, ((ci, hi, wi), (cl, hl, wl), d, win) in enumerate(zip(img_shapes, lmk_shapes, self.dims, self.window_sizes)):
            if hl != wl or hi != wi:
                raise ModelError(f"grefel: level {i + 1} maps must be square, got image {hi}x{wi}, landmark {hl}x{wl}")
            if hi % hl:
                raise ModelError(f"grefel: level {i + 1}: image map {hi}x{hi} is not an integer multiple of the "
                                 f"landmark map {hl}x{hl} ({image_name} vs {landmark_name} at input {input_size})")
            if hl % win:
                raise ModelError(f"grefel: window_sizes[{i}]={win} does not divide the level-{i + 1} grid {hl}x{hl} "
                                 f"(input_size {input_size})")
            # POSTER++: conv1..3 (3x3, stride 2) on IR-50 maps; last_face_conv (3x3) on MobileFaceNet's 512-ch map
            self.img_adapters.append(nn.Conv2d(ci, d, 3, stride=hi // hl, padding=1))
            self.lmk_adapters.append(nn.Identity() if cl == d else nn.Conv2d(cl, d, 3, padding=1))
        g_last = self.grids[-1]
        self.token_embeds = nn.ModuleList()
        for i, (g, d) in enumerate(zip(self.grids, self.dims)):
            ratio = g // g_last
            n_down = int(round(math.log2(ratio))) if ratio >= 1 else -1
            if g % g_last or 2 ** n_down != ratio:
                raise ModelError(f"grefel: level grids {self.grids} must shrink by powers of two")
            if n_down == 0:
                self.token_embeds.append(nn.Conv2d(d, embed_dim, 1))  # POSTER++ embed_v
            else:  # POSTER++ embed_q (two stride-2 convs) / embed_k (one)
                convs = [nn.Conv2d(d if j == 0 else embed_dim, embed_dim, 3, stride=2, padding=1) for j in range(n_down)]
                self.token_embeds.append(nn.Sequential(*convs))
        dpr = torch.linspace(0, drop_path_rate, 5).tolist()
        self.encoders = nn.ModuleList(
            CrossAttentionEncoder(d, h, w, mlp_ratio, layer_scale, dpr[i], query_proj)
            for i, (d, h, w) in enumerate(zip(self.dims, num_heads, self.window_sizes)))
        self.fusion = FusionViT(3 * g_last * g_last, embed_dim, depth, vit_heads, mlp_ratio)
        self._head_kwargs = dict(head_kwargs or {})
        self._build_head(num_classes)

    def _build_head(self, num_classes: int) -> None:
        if self.reliability:
            self.rb_head: ReliabilityHead | None = ReliabilityHead(self.num_features, num_classes, **self._head_kwargs)
            self.head: nn.Module | None = None
        else:
            self.rb_head, self.head = None, nn.Linear(self.num_features, num_classes)

    def train(self, mode: bool = True) -> GReFELNet:
        super().train(mode)
        if self.freeze_landmark:
            self.landmark_backbone.eval()  # a frozen stream keeps its batch-norm statistics
        return self

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three cross-attention outputs ``[B, dims[i], g_i, g_i]`` (before the global fusion)."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ModelError(f"grefel expects images [B, {self.in_chans}, H, W], got {tuple(x.shape)}")
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        img_maps = self.image_backbone.forward_features_multiscale(x)
        if self.freeze_landmark:
            with torch.no_grad():
                lmk_maps = self.landmark_backbone.forward_features_multiscale(x)
        else:
            lmk_maps = self.landmark_backbone.forward_features_multiscale(x)
        return [enc(ia(im), la(lm)) for enc, ia, la, im, lm in
                zip(self.encoders, self.img_adapters, self.lmk_adapters, img_maps, lmk_maps)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.forward_levels(x)
        tokens = torch.cat([emb(o).flatten(2).transpose(1, 2) for emb, o in zip(self.token_embeds, levels)], dim=1)
        return self.fusion(tokens)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self.rb_head is not None:
            return ReliabilityHead.log_final(self.rb_head(features))
        assert self.head is not None
        return self.head(features)

    def forward_reliability(self, x: torch.Tensor) -> dict[str, Any]:
        if self.rb_head is None:
            raise ModelError("grefel: built with reliability=False; there is no reliability head")
        return self.rb_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._build_head(num_classes)


def model_complexity(model: nn.Module, input_size: int | tuple[int, int] | None = None,
                     in_chans: int | None = None) -> dict[str, float]:
    """Parameters and FLOPs of one forward pass at batch size 1 (``torch.utils.flop_counter``).

    ``flops`` counts a multiply-add as 2 FLOPs (FlopCounterMode's convention); ``macs = flops / 2`` is
    the unit ``thop.profile`` — which POSTER++ and the GReFEL paper report ("GFLOPs") — returns.
    """
    from torch.utils.flop_counter import FlopCounterMode

    cfg = getattr(model, "pretrained_cfg", {})
    size = input_size if input_size is not None else cfg.get("input_size", (112, 112))
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    c = in_chans if in_chans is not None else cfg.get("in_chans", 3)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, c, h, w))
    model.train(was_training)
    flops = float(counter.get_total_flops())
    return {"params": params, "trainable_params": trainable, "flops": flops, "macs": flops / 2}


def _build(name: str, num_classes: int, pretrained: str | None, *, image_backbone: str, landmark_backbone: str,
           image_pretrained: str | None, landmark_pretrained: str | None, freeze_landmark: bool | None,
           image_backbone_kwargs: dict[str, Any] | None, landmark_backbone_kwargs: dict[str, Any] | None,
           in_chans: int, head_kwargs: dict[str, Any], **net_kwargs: Any) -> GReFELNet:
    unknown = set(head_kwargs) - set(HEAD_OPTIONS)
    if unknown:
        raise ModelError(f"{name}: unknown option(s) {sorted(unknown)}")
    if in_chans not in (1, 3):
        raise ModelError(f"{name}: in_chans must be 1 or 3, got {in_chans!r}")
    img_kwargs = {"in_chans": in_chans, **(image_backbone_kwargs or {})}
    if image_backbone == "ir50":
        img_kwargs.setdefault("stages", 3)  # POSTER++ truncates IR-50 after stage 3 (no 512-ch stage)
    img = create_model(image_backbone, num_classes=num_classes, pretrained=image_pretrained, **img_kwargs)
    lmk = create_model(landmark_backbone, num_classes=num_classes, pretrained=landmark_pretrained,
                       **{"in_chans": in_chans, **(landmark_backbone_kwargs or {})})
    freeze = (landmark_pretrained is not None) if freeze_landmark is None else bool(freeze_landmark)
    net = GReFELNet(num_classes, img, lmk, in_chans=in_chans, freeze_landmark=freeze, head_kwargs=head_kwargs,
                    image_name=image_backbone, landmark_name=landmark_backbone, **net_kwargs)
    if pretrained is not None:
        state = load_state_file(pretrained)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(f"{pretrained}: not a {name} weight file for this configuration: missing "
                             f"{list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    return net


@register_model("grefel", description="GReFEL (paper size): IR-50 + MobileFaceNet window cross-attention ViT + reliability head")
def grefel(num_classes: int = 7, pretrained: str | None = None, *, image_backbone: str = "ir50",
           landmark_backbone: str = "mobilefacenet", image_pretrained: str | None = None,
           landmark_pretrained: str | None = None, freeze_landmark: bool | None = None,
           image_backbone_kwargs: dict[str, Any] | None = None, landmark_backbone_kwargs: dict[str, Any] | None = None,
           in_chans: int = 3, input_size: int = 112, window_sizes: Sequence[int] = (28, 14, 7),
           num_heads: Sequence[int] = (2, 4, 8), dims: Sequence[int] = (64, 128, 256), embed_dim: int = 768,
           depth: int = 2, vit_heads: int = 8, mlp_ratio: float = 4.0, layer_scale: float | None = 1e-5,
           drop_path_rate: float = 0.5, query_proj: bool = False, reliability: bool = True,
           **head_kwargs: Any) -> GReFELNet:
    """Paper-sized GReFEL. ``pretrained``: a full GReFEL weight file; ``image_pretrained`` /
    ``landmark_pretrained``: local IR-50 (``ir50.pth``) / MobileFaceNet files. The landmark stream is
    frozen when its weights are given (``freeze_landmark`` overrides). Head options: see
    :class:`~fairexpr.models.reliability.ReliabilityHead`."""
    return _build("grefel", num_classes, pretrained, image_backbone=image_backbone,
                  landmark_backbone=landmark_backbone, image_pretrained=image_pretrained,
                  landmark_pretrained=landmark_pretrained, freeze_landmark=freeze_landmark,
                  image_backbone_kwargs=image_backbone_kwargs, landmark_backbone_kwargs=landmark_backbone_kwargs,
                  in_chans=in_chans, head_kwargs=head_kwargs, input_size=input_size, window_sizes=window_sizes,
                  num_heads=num_heads, dims=dims, embed_dim=embed_dim, depth=depth, vit_heads=vit_heads,
                  mlp_ratio=mlp_ratio, layer_scale=layer_scale, drop_path_rate=drop_path_rate,
                  query_proj=query_proj, reliability=reliability)


@register_model("grefel_small", description="GReFEL, CPU size: MobileFaceNet streams, dims 32/64/128, embed 192, depth 1")
def grefel_small(num_classes: int = 7, pretrained: str | None = None, *, image_backbone: str = "mobilefacenet",
                 landmark_backbone: str = "mobilefacenet", image_pretrained: str | None = None,
                 landmark_pretrained: str | None = None, freeze_landmark: bool | None = None,
                 image_backbone_kwargs: dict[str, Any] | None = None,
                 landmark_backbone_kwargs: dict[str, Any] | None = None, in_chans: int = 3, input_size: int = 112,
                 window_sizes: Sequence[int] = (28, 14, 7), num_heads: Sequence[int] = (1, 2, 4),
                 dims: Sequence[int] = (32, 64, 128), embed_dim: int = 192, depth: int = 1, vit_heads: int = 3,
                 mlp_ratio: float = 2.0, layer_scale: float | None = 1e-5, drop_path_rate: float = 0.1,
                 query_proj: bool = False, reliability: bool = True, **head_kwargs: Any) -> GReFELNet:
    """CPU-sized GReFEL: the same architecture with a MobileFaceNet image stream, narrower levels
    (32/64/128, heads 1/2/4), a 192-wide single-block fusion ViT (3 heads, MLP ratio 2)."""
    return _build("grefel_small", num_classes, pretrained, image_backbone=image_backbone,
                  landmark_backbone=landmark_backbone, image_pretrained=image_pretrained,
                  landmark_pretrained=landmark_pretrained, freeze_landmark=freeze_landmark,
                  image_backbone_kwargs=image_backbone_kwargs, landmark_backbone_kwargs=landmark_backbone_kwargs,
                  in_chans=in_chans, head_kwargs=head_kwargs, input_size=input_size, window_sizes=window_sizes,
                  num_heads=num_heads, dims=dims, embed_dim=embed_dim, depth=depth, vit_heads=vit_heads,
                  mlp_ratio=mlp_ratio, layer_scale=layer_scale, drop_path_rate=drop_path_rate,
                  query_proj=query_proj, reliability=reliability)
