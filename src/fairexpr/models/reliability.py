"""Reliability balancing (GReFEL §3.2–3.3, after ARBEx): a head usable on top of *any* embedding.

Given an embedding ``e ∈ R^D`` the head produces

* the primary label distribution ``l = softmax(MLP(e))`` (Eq. 9),
* a geometric correction ``t_g`` from learnable per-class anchors (Eqs. 12–15),
* an attentive correction ``t_a`` from multi-head self-attention over the embedding (Eqs. 16–17),
* their confidence-weighted fusions ``t`` (Eq. 18) and ``L_final`` (Eq. 19); prediction = argmax ``L_final``.

Confidences are ``C_f(p) = 1 − H(p)`` with ``H`` the entropy normalised by ``log N_cls`` (Eqs. 10–11).

Choices where the paper is silent or inconsistent (each documented where it is made):

* Eq. 11 in the paper divides the entropy by ``N_cls`` but states that the normalised entropy is 1 for
  the uniform distribution; only division by ``log N_cls`` has that property (ARBEx's
  ``utils.normalized_entropy`` also divides by ``log N``), so that is what :func:`normalized_entropy` does.
* Anchors are initialised from ``N(0, init_std²)`` by default. ARBEx initialises them to zeros; with all
  anchors equal the anchor-spread loss (Eq. 21) has an identically zero gradient, so zero init is offered
  as ``anchor_init="zeros"`` for fidelity but is not the default. Neither puts the anchors where the
  embeddings are: a pretrained backbone's embeddings can have norms of ~60 while the anchors start at ~1
  (dlib's face ResNet), and the center loss (Eq. 22) then starts large and pulls every embedding towards
  the origin. ``anchor_init="data"`` (a deviation, not in the paper) sets each class's anchors at the mean
  training embedding of that class in the first training batch that contains it, plus Gaussian noise
  (:meth:`AnchorSet.initialize_from`, called by the ``grefel`` method; the data-dependent initialisation
  pattern of weight normalisation and Glow's ActNorm).
* The MHSA correction: a single embedding vector is a sequence of length one, for which self-attention
  degenerates to a linear map, and ARBEx instead attends *across the batch* (so a prediction depends on
  the other images in the batch). Here the embedding is cut into ``T`` contiguous chunks of
  ``mhsa_chunk`` values (default: 64, but at least 4 tokens; zero-padded to a multiple), each chunk is a token embedded to
  ``d_model = mhsa_heads · 64`` with a learned position embedding, and standard MHSA with
  ``d_Q = d_K = d_V = d_model / n_heads = 64`` runs over those tokens; the mean token goes through
  ``W_out`` and a softmax (Eq. 17). The prediction of one image never depends on the rest of its batch.
* The fusion weights add ``eps`` to every confidence so that two zero-confidence (uniform) inputs fuse
  with equal weights instead of dividing by zero.
* With anchors and MHSA both disabled there is no correction and ``L_final = l`` (the "without RB" row
  of the paper's Table 2); with one disabled, ``t`` is the other correction alone.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..ops import normalized_entropy as _normalized_entropy
from .registry import FERModel, ModelError, create_model, load_state_file, register_model

__all__ = [
    "AnchorSet",
    "AttentiveCorrection",
    "PrimaryMLP",
    "ReliabilityBalancedModel",
    "ReliabilityHead",
    "confidence",
    "fuse",
    "normalized_entropy",
    "reliability_balanced",
]

EPS = 1e-8


def normalized_entropy(p: torch.Tensor) -> torch.Tensor:
    """Normalised entropy (Eq. 11) over the last dim, :func:`fairexpr.ops.normalized_entropy` (the one
    definition); a model error for fewer than 2 classes."""
    n = p.shape[-1] if p.ndim else 0
    if n < 2:
        raise ModelError(f"normalized_entropy needs at least 2 classes, got a last dimension of {n}")
    return _normalized_entropy(p, dim=-1)


def confidence(p: torch.Tensor) -> torch.Tensor:
    """Confidence of a distribution (Eq. 10): ``C_f(p) = 1 − H(p)``; shape ``[...]`` (last dim reduced)."""
    return 1.0 - normalized_entropy(p)


def fuse(p: torch.Tensor, q: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Confidence-weighted fusion used by Eqs. 18 and 19.

    ``fuse(p, q) = c_p/(c_p + c_q) · p + c_q/(c_p + c_q) · q`` with ``c = C_f(·) + eps``.
    Eq. 18 is ``t = fuse(t_g, t_a)``; Eq. 19 is ``L_final = fuse(l, t)``. The result is a distribution.
    """
    cp = confidence(p).unsqueeze(-1) + eps
    cq = confidence(q).unsqueeze(-1) + eps
    return (cp * p + cq * q) / (cp + cq)


class PrimaryMLP(nn.Module):
    """Primary classifier (Eq. 9): ``l = softmax(MLP(e))``.

    Hidden layers (default two of 64) are ``Linear → ReLU → BatchNorm1d → Dropout(0.5)`` (layer order as
    ARBEx's ``ClassificationHead``); the last layer is a plain ``Linear`` (no batch norm). Returns logits.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] | list[int] = (64, 64),
                 dropout: float = 0.5, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.Dropout(dropout))
            d = h
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e)


class AnchorSet(nn.Module):
    """``K`` learnable anchors per class in embedding space, ``a^{ij}``: parameter ``[C, K, D]`` (Eq. 12).

    The anchor labels ``m^{ij}`` are one-hot in the class index ``i`` (implicit in the first axis).
    """

    def __init__(self, num_classes: int, num_anchors: int, dim: int, init: str = "normal",
                 init_std: float | None = None) -> None:
        super().__init__()
        if num_anchors < 1:
            raise ModelError(f"num_anchors must be >= 1, got {num_anchors}")
        if init not in ("normal", "zeros", "data"):
            raise ModelError(f"anchor_init must be 'normal', 'zeros' or 'data', got {init!r}")
        if init_std is not None and not init_std > 0:
            raise ModelError(f"anchor_init_std must be > 0, got {init_std!r}")
        self.num_classes, self.num_anchors, self.dim = num_classes, num_anchors, dim
        self.init, self.init_std = init, init_std
        self.anchors = nn.Parameter(torch.zeros(num_classes, num_anchors, dim))
        if init == "normal":
            nn.init.normal_(self.anchors, std=init_std if init_std is not None else 1.0 / math.sqrt(dim))
        self._all_initialized = init != "data"  # host-side cache: no device sync per training step once all are set
        if init == "data":  # which classes' anchors have been set from data (saved with the weights: resume keeps it)
            self.register_buffer("initialized", torch.zeros(num_classes, dtype=torch.bool))

    @property
    def needs_init(self) -> bool:
        """True while ``anchor_init="data"`` and some class has not been seen by :meth:`initialize_from`."""
        if not self._all_initialized:
            self._all_initialized = bool(self.initialized.all())
        return not self._all_initialized

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._all_initialized = self.init != "data"  # re-read the loaded flags on the next check

    @torch.no_grad()
    def initialize_from(self, e: torch.Tensor, labels: torch.Tensor) -> list[int]:
        """``anchor_init="data"``: for every class not yet initialised that has samples in this batch, set its
        ``K`` anchors to ``μ_c + σ z_k`` with ``μ_c`` the class's mean embedding in the batch and ``z_k ~ N(0, I)``;
        ``σ = init_std`` if given, else 0.1 × the batch's pooled within-class RMS deviation per coordinate (so the
        ``K`` anchors start apart but inside the class's cloud). Unlabelled samples (label < 0) are ignored. Under
        ``torch.distributed`` the class sums are all-reduced and rank 0's anchors broadcast, so every process
        holds the same anchors. Returns the classes initialised by this call.
        """
        if self.init != "data":
            raise ModelError(f"initialize_from is for anchor_init='data', this anchor set was built with {self.init!r}")
        if e.ndim != 2 or e.shape[1] != self.dim or labels.shape != e.shape[:1]:
            raise ModelError(f"initialize_from expects embeddings [B, {self.dim}] and labels [B], got "
                             f"{tuple(e.shape)} and {tuple(labels.shape)}")
        x = e.detach().float()
        y = labels.long()
        keep = (y >= 0) & (y < self.num_classes)
        x, y = x[keep], y[keep]
        sums = torch.zeros(self.num_classes, self.dim, device=x.device).index_add_(0, y, x)
        counts = torch.bincount(y, minlength=self.num_classes).to(x.dtype)
        sq = x.pow(2).sum()
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed:
            for t in (sums, counts, sq):
                dist.all_reduce(t)
        new = (counts > 0) & ~self.initialized.to(counts.device)
        if not bool(new.any()):
            return []
        seen = counts > 0
        means = sums[seen] / counts[seen].unsqueeze(1)
        # pooled within-class variance per coordinate: (Σ‖x‖² − Σ_c n_c ‖μ_c‖²) / (n · D)
        n = counts.sum()
        within = (sq - (counts[seen].unsqueeze(1) * means.pow(2)).sum()).clamp_min(0.0) / (n * self.dim)
        sigma = float(self.init_std) if self.init_std is not None else 0.1 * float(within.sqrt())
        mu = sums / counts.clamp_min(1.0).unsqueeze(1)
        fresh = mu.unsqueeze(1) + sigma * torch.randn(self.num_classes, self.num_anchors, self.dim, device=x.device)
        if distributed:
            dist.broadcast(fresh, 0)
        idx = new.nonzero().flatten().to(self.anchors.device)
        self.anchors.data[idx] = fresh[new].to(self.anchors.dtype).to(self.anchors.device)
        self.initialized[idx] = True
        return idx.tolist()

    def distances(self, e: torch.Tensor) -> torch.Tensor:
        """Eq. 13: ``d^{ij}(e) = sqrt(Σ_k (a^{ij}_k − e_k)²)``; ``[B, D] -> [B, C, K]``.

        Computed as ``‖e‖² + ‖a‖² − 2 e·a`` (one matrix product, in float32 even under autocast: bf16 would lose
        the difference to cancellation) instead of materialising the ``[B, C, K, D]`` differences, ~30x faster on a
        CPU at D = 256. The squared distance is clamped at 1e-12 before the square root, so it is never negative
        from rounding and the gradient is finite when an embedding sits on an anchor.
        """
        if e.ndim != 2 or e.shape[1] != self.dim:
            raise ModelError(f"anchor distances expect embeddings [B, {self.dim}], got {tuple(e.shape)}")
        flat = self.anchors.reshape(-1, self.dim).float()
        x = e.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            sq = x.pow(2).sum(1, keepdim=True) + flat.pow(2).sum(1) - 2.0 * (x @ flat.T)
        return sq.clamp_min(1e-12).sqrt().reshape(e.shape[0], self.num_classes, self.num_anchors)

    @staticmethod
    def similarities(distances: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
        """Eq. 14: ``s^{ij}(e) = exp(−d^{ij}/δ) / Σ_{k,l} exp(−d^{kl}/δ)`` — softmax over *all* anchors."""
        b, c, k = distances.shape
        return torch.softmax(-distances.reshape(b, c * k) / delta, dim=-1).reshape(b, c, k)

    @staticmethod
    def geometric_correction(similarities: torch.Tensor) -> torch.Tensor:
        """Eq. 15: ``t_g = Σ_{i,j} s^{ij} m^{ij}`` — the similarity mass of each class's anchors; ``[B, C]``."""
        return similarities.sum(-1)


class AttentiveCorrection(nn.Module):
    """Attentive correction (Eqs. 16–17): MHSA over the embedding, ``t_a = softmax(W_out · MHSA(e))``.

    The embedding ``[B, D]`` is zero-padded to ``T · mhsa_chunk`` and cut into ``T`` tokens of
    ``mhsa_chunk`` values; tokens are embedded to ``d_model = num_heads · head_dim`` (+ learned
    position embedding). Per head ``h``: ``Q_h = X W_Q^h, K_h = X W_K^h, V_h = X W_V^h`` with
    ``d_Q = d_K = d_V = head_dim = 64`` (Eq. 16), ``head_h = softmax(Q_h K_hᵀ / √d_K) V_h``,
    ``MHSA(X) = concat(head_1..head_n) W_O``. The token mean is mapped by ``W_out`` to class logits and
    ``t_a`` is their softmax (Eq. 17).
    """

    def __init__(self, dim: int, num_classes: int, num_heads: int = 4, head_dim: int = 64, chunk: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if chunk is None:  # 64-value tokens, but at least 4 tokens (attention over one token is the identity)
            chunk = math.ceil(dim / max(4, math.ceil(dim / 64)))
        if num_heads < 1 or head_dim < 1 or chunk < 1:
            raise ModelError(f"mhsa_heads, head_dim and mhsa_chunk must be >= 1, got {num_heads}, {head_dim}, {chunk}")
        self.dim, self.chunk, self.num_heads, self.head_dim = dim, chunk, num_heads, head_dim
        self.num_tokens = math.ceil(dim / chunk)
        if self.num_tokens < 2:
            raise ModelError(f"mhsa_chunk={chunk} leaves a single token for a {dim}-d embedding; self-attention over "
                             "one token is the identity — use a smaller chunk")
        self.d_model = num_heads * head_dim
        self.token_embed = nn.Linear(chunk, self.d_model)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, self.d_model))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.norm = nn.LayerNorm(self.d_model)
        self.w_q = nn.Linear(self.d_model, self.d_model)
        self.w_k = nn.Linear(self.d_model, self.d_model)
        self.w_v = nn.Linear(self.d_model, self.d_model)
        self.w_o = nn.Linear(self.d_model, self.d_model)
        self.attn_drop = nn.Dropout(dropout)
        self.w_out = nn.Linear(self.d_model, num_classes)

    def tokens(self, e: torch.Tensor) -> torch.Tensor:
        """``[B, D] -> [B, T, d_model]`` token sequence (chunks + position embedding)."""
        if e.ndim != 2 or e.shape[1] != self.dim:
            raise ModelError(f"attentive correction expects embeddings [B, {self.dim}], got {tuple(e.shape)}")
        pad = self.num_tokens * self.chunk - self.dim
        if pad:
            e = F.pad(e, (0, pad))
        return self.token_embed(e.view(e.shape[0], self.num_tokens, self.chunk)) + self.pos_embed

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head ``Q, K, V``, each ``[B, n_heads, T, 64]`` (Eq. 16)."""
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        return split(self.w_q(x)), split(self.w_k(x)), split(self.w_v(x))

    def forward(self, e: torch.Tensor, return_attention: bool = False) -> Any:
        x = self.norm(self.tokens(e))
        q, k, v = self.heads(x)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
        out = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], self.d_model)
        out = x + self.w_o(out)
        t_a = torch.softmax(self.w_out(out.mean(1)), dim=-1)
        return (t_a, attn) if return_attention else t_a


class ReliabilityHead(nn.Module):
    """The reliability-balancing head: embedding ``e`` → ``{l, t_g, t_a, t, final, confidences, ...}``.

    ``forward(e)`` returns a dict:

    * ``logits`` — MLP logits (pre-softmax of ``l``), ``l`` — primary distribution (Eq. 9),
    * ``t_g`` (Eq. 15) / ``t_a`` (Eq. 17) — corrections, ``None`` when disabled,
    * ``t`` (Eq. 18), ``None`` when both corrections are disabled,
    * ``final`` — ``L_final`` (Eq. 19),
    * ``confidences`` — dict of ``c_l, c_g, c_a, c_t`` (``[B]`` each, present when defined),
    * ``distances`` — ``[B, C, K]`` anchor distances (for the center loss), ``None`` without anchors,
    * ``embedding`` — ``e``.
    """

    def __init__(self, in_features: int, num_classes: int, *, num_anchors: int = 10, use_anchors: bool = True,
                 use_mhsa: bool = True, delta: float = 1.0, hidden: tuple[int, ...] | list[int] = (64, 64),
                 dropout: float = 0.5, batch_norm: bool = True, mhsa_heads: int = 4, mhsa_head_dim: int = 64,
                 mhsa_chunk: int | None = None, anchor_init: str = "normal", anchor_init_std: float | None = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ModelError(f"the reliability head needs at least 2 classes, got {num_classes}")
        if delta <= 0:
            raise ModelError(f"delta (anchor similarity temperature) must be > 0, got {delta}")
        self.in_features, self.num_classes, self.delta = in_features, num_classes, float(delta)
        self.use_anchors, self.use_mhsa = bool(use_anchors), bool(use_mhsa)
        self.mlp = PrimaryMLP(in_features, num_classes, hidden, dropout, batch_norm)
        self.anchors = AnchorSet(num_classes, num_anchors, in_features, anchor_init, anchor_init_std) if use_anchors else None
        self.attention = (AttentiveCorrection(in_features, num_classes, mhsa_heads, mhsa_head_dim, mhsa_chunk)
                          if use_mhsa else None)

    def forward(self, e: torch.Tensor) -> dict[str, Any]:
        logits = self.mlp(e)
        l = torch.softmax(logits, dim=-1)  # noqa: E741 - the paper's name
        conf: dict[str, torch.Tensor] = {"c_l": confidence(l)}
        t_g = t_a = t = distances = None
        if self.anchors is not None:
            distances = self.anchors.distances(e)
            t_g = AnchorSet.geometric_correction(AnchorSet.similarities(distances, self.delta))
            conf["c_g"] = confidence(t_g)
        if self.attention is not None:
            t_a = self.attention(e)
            conf["c_a"] = confidence(t_a)
        if t_g is not None and t_a is not None:
            t = fuse(t_g, t_a)  # Eq. 18
        else:
            t = t_g if t_g is not None else t_a
        if t is not None:
            conf["c_t"] = confidence(t)
            final = fuse(l, t)  # Eq. 19
        else:
            final = l
        return {"logits": logits, "l": l, "t_g": t_g, "t_a": t_a, "t": t, "final": final,
                "confidences": conf, "distances": distances, "embedding": e}

    @staticmethod
    def log_final(out: dict[str, Any], eps: float = 1e-12) -> torch.Tensor:
        """``log L_final`` — the deployable network's logits (``softmax`` of them gives ``L_final`` back)."""
        return out["final"].clamp_min(eps).log()


class ReliabilityBalancedModel(FERModel):
    """Any registered backbone's ``forward_features`` followed by a :class:`ReliabilityHead`.

    ``forward(x)`` returns ``log L_final`` (so ``softmax(forward(x)) = L_final`` and ``argmax`` is the
    paper's prediction); ``forward_reliability(x)`` returns the head's full output dict.
    """

    def __init__(self, backbone: FERModel, num_classes: int, **head_kwargs: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = int(backbone.num_features)
        self.num_classes = num_classes
        self.pretrained_cfg = dict(backbone.pretrained_cfg)
        self._head_kwargs = dict(head_kwargs)
        self.rb_head = ReliabilityHead(self.num_features, num_classes, **head_kwargs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_reliability(self, x: torch.Tensor) -> dict[str, Any]:
        return self.rb_head(self.forward_features(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return ReliabilityHead.log_final(self.rb_head(features))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.rb_head = ReliabilityHead(self.num_features, num_classes, **self._head_kwargs)


#: reliability-head options accepted by every reliability-balanced builder (and the ``grefel`` method)
HEAD_OPTIONS = ("num_anchors", "use_anchors", "use_mhsa", "delta", "hidden", "dropout", "batch_norm",
                "mhsa_heads", "mhsa_head_dim", "mhsa_chunk", "anchor_init", "anchor_init_std")


@register_model("reliability_balanced",
                description="any registered backbone + GReFEL reliability-balancing head (anchors + MHSA)")
def reliability_balanced(num_classes: int = 7, pretrained: str | None = None, backbone: str = "resnet18",
                         backbone_kwargs: dict[str, Any] | None = None, in_chans: int | None = None,
                         **head_kwargs: Any) -> ReliabilityBalancedModel:
    """``backbone`` is any registered model name (built with ``backbone_kwargs``; ``in_chans`` is passed on).

    ``pretrained`` is a local weight file: either a whole reliability-balanced model (keys ``backbone.*`` and
    ``rb_head.*``, e.g. a fairexpr checkpoint), loaded strictly, or weights of the backbone alone, handed to
    the backbone's own loader. Head options: see :class:`ReliabilityHead`. The checkpoint sidecar records
    ``{"name": "reliability_balanced", "kwargs": {"backbone": ..., "backbone_kwargs": ..., <head options>}}``,
    all :func:`fairexpr.checkpoint.load_model` needs to rebuild the network.
    """
    if backbone in ("reliability_balanced", "grefel", "grefel_small"):
        raise ModelError(f"reliability_balanced: backbone must be a plain backbone, got {backbone!r} "
                         "(grefel models already carry the reliability head)")
    unknown = set(head_kwargs) - set(HEAD_OPTIONS)
    if unknown:
        raise ModelError(f"reliability_balanced: unknown option(s) {sorted(unknown)}; known: backbone, "
                         f"backbone_kwargs, in_chans, {', '.join(HEAD_OPTIONS)}")
    if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
        raise ModelError(f"reliability_balanced: backbone_kwargs must be a mapping, got {type(backbone_kwargs).__name__}")
    bkw = dict(backbone_kwargs or {})
    if in_chans is not None:
        bkw["in_chans"] = in_chans
    state = None
    from .registry import is_named_pretrained

    if pretrained is not None and not is_named_pretrained(backbone, pretrained):
        sd = load_state_file(pretrained)
        if any(k.startswith("rb_head.") for k in sd):
            state, pretrained = sd, None
    net = create_model(backbone, num_classes=num_classes, pretrained=pretrained, **bkw)
    if not isinstance(getattr(net, "num_features", None), int):
        raise ModelError(f"reliability_balanced: backbone {backbone!r} has no integer num_features")
    model = ReliabilityBalancedModel(net, num_classes, **head_kwargs)
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(f"reliability_balanced: weight file does not match backbone {backbone!r} with these "
                             f"options: missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    return model
