"""GReFEL losses (Eqs. 20–23): classification on ``L_final``, anchor spread, anchor center.

Each loss is a plain ``nn.Module`` usable outside the toolkit.

Normalisation (the paper only says "normalised" for Eq. 21): both anchor losses divide by ``sqrt(D)``
(``D`` = embedding size), the factor ARBEx's ``loss.py`` uses for its anchor and center losses, and
average over pairs / samples so their scale does not grow with ``C``, ``K`` or the batch size.
ARBEx's anchor loss flattens each class's anchors into one vector and so only compares anchors with the
same index ``j`` across classes; Eq. 21 sums over all anchor pairs, which is what ``pairs="all"`` does
(``pairs="inter_class"`` keeps only pairs from different classes).

Bounded spread (a deviation, off by default): Eq. 21 has no lower bound, so under an optimiser that normalises
step sizes (Adam) the anchors drift apart at a constant speed for as long as training runs (measured on
``configs/grefel_cpu.yaml``: L_a −0.7 → −73.9 in 8 epochs, anchor norm 30). ``margin=m`` caps each pair's squared
distance at ``m²`` — ``−(1/(|P| √D)) Σ min(‖a − a'‖², m²)``: identical to Eq. 21 while a pair is closer than ``m``,
and that pair's gradient is zero once it is ``m`` apart, so ``L_a ≥ −m²/√D``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["AnchorCenterLoss", "AnchorSpreadLoss", "GReFELLoss", "ReliableClassificationLoss"]


class ReliableClassificationLoss(nn.Module):
    """Eq. 20: ``L_cls = −(1/B) Σ_b Σ_c y_bc log L_final,bc``.

    ``target`` is either class indices ``[B]`` (one-hot ``y``, optionally label-smoothed:
    ``y = (1 − ε) onehot + ε / C``) or a distribution ``[B, C]`` (soft labels, e.g. FER+ votes).
    """

    def __init__(self, label_smoothing: float = 0.0, eps: float = 1e-12) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing, self.eps = float(label_smoothing), eps

    def forward(self, final: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b, c = final.shape
        if target.ndim == 1:
            y = torch.zeros_like(final).scatter_(1, target.long().view(-1, 1), 1.0)
        elif target.shape == final.shape:
            y = target.to(final.dtype)
        else:
            raise ValueError(f"target must be [B] class indices or [B, {c}] distributions, got {tuple(target.shape)}")
        if self.label_smoothing:
            y = (1.0 - self.label_smoothing) * y + self.label_smoothing / c
        return -(y * final.clamp_min(self.eps).log()).sum(1).mean()


class AnchorSpreadLoss(nn.Module):
    """Eq. 21 (normalised): ``L_a = −(1/(|P| √D)) Σ_{(ij),(kl) ∈ P} ‖a^{ij} − a^{kl}‖²``.

    ``P`` is the set of ordered pairs of distinct anchors (``pairs="all"``) or of anchors from different
    classes (``pairs="inter_class"``). Minimising ``L_a`` pushes anchors apart. ``margin`` (``None`` = Eq. 21)
    caps each pair's squared distance at ``margin²``, bounding ``L_a`` below (module docstring).
    """

    def __init__(self, pairs: str = "all", normalize: bool = True, margin: float | None = None) -> None:
        super().__init__()
        if pairs not in ("all", "inter_class"):
            raise ValueError(f"pairs must be 'all' or 'inter_class', got {pairs!r}")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                                   or not math.isfinite(margin) or margin <= 0):
            raise ValueError(f"margin must be a number > 0 or None, got {margin!r}")
        self.pairs, self.normalize = pairs, normalize
        self.margin = None if margin is None else float(margin)

    def forward(self, anchors: torch.Tensor) -> torch.Tensor:
        if anchors.ndim != 3:
            raise ValueError(f"anchors must be [C, K, D], got {tuple(anchors.shape)}")
        c, k, d = anchors.shape
        flat = anchors.reshape(c * k, d)
        flat = flat.float()
        with torch.autocast(device_type=flat.device.type, enabled=False):  # float32: bf16 would cancel away
            norms = flat.pow(2).sum(1)
            sq = (norms.unsqueeze(0) + norms.unsqueeze(1) - 2.0 * flat @ flat.T).clamp_min(0.0)  # [CK, CK] ‖a − a'‖²
            if self.margin is not None:
                sq = sq.clamp_max(self.margin ** 2)
        cls = torch.arange(c, device=anchors.device).repeat_interleave(k)
        if self.pairs == "inter_class":
            mask = cls.unsqueeze(0) != cls.unsqueeze(1)
        else:
            mask = ~torch.eye(c * k, dtype=torch.bool, device=anchors.device)
        n = int(mask.sum())
        if n == 0:
            return anchors.sum() * 0.0
        loss = -(sq * mask).sum() / n
        return loss / math.sqrt(d) if self.normalize else loss


class AnchorCenterLoss(nn.Module):
    """Eq. 22: ``L_c = (1/(B √D)) Σ_b min_k ‖e_b − a^{y_b k}‖²`` — pulls each embedding to the nearest
    anchor of its own class (and that anchor to it).

    Accepts either the anchor distances ``[B, C, K]`` of :meth:`AnchorSet.distances` (``from_distances``)
    or embeddings ``[B, D]`` with anchors ``[C, K, D]``.
    """

    def __init__(self, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, embeddings: torch.Tensor, anchors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.ndim != 2 or anchors.ndim != 3 or embeddings.shape[1] != anchors.shape[2]:
            raise ValueError(f"expected embeddings [B, D] and anchors [C, K, D], got {tuple(embeddings.shape)} "
                             f"and {tuple(anchors.shape)}")
        own = anchors[labels.long()]  # [B, K, D]
        sq = (own - embeddings.unsqueeze(1)).pow(2).sum(-1)  # [B, K]
        return self._reduce(sq.min(1).values, embeddings.shape[1])

    def from_distances(self, distances: torch.Tensor, labels: torch.Tensor, dim: int) -> torch.Tensor:
        own = distances[torch.arange(distances.shape[0], device=distances.device), labels.long()]  # [B, K]
        return self._reduce(own.min(1).values.pow(2), dim)

    def _reduce(self, per_sample: torch.Tensor, dim: int) -> torch.Tensor:
        loss = per_sample.mean()
        return loss / math.sqrt(dim) if self.normalize else loss


class GReFELLoss(nn.Module):
    """Eq. 23: ``L = λ_cls L_cls + λ_a L_a + λ_c L_c`` over a :class:`ReliabilityHead` output dict.

    Returns ``{"loss", "l_cls", "l_anchor", "l_center"}``; the anchor terms are zero when the head has
    no anchors. Samples with label ``-1`` (unlabelled) are an error here: GReFEL is fully supervised.
    """

    def __init__(self, lambda_cls: float = 1.0, lambda_anchor: float = 1.0, lambda_center: float = 1.0,
                 label_smoothing: float = 0.0, anchor_pairs: str = "all", normalize: bool = True,
                 anchor_margin: float | None = None) -> None:
        super().__init__()
        self.lambda_cls, self.lambda_anchor, self.lambda_center = lambda_cls, lambda_anchor, lambda_center
        self.cls = ReliableClassificationLoss(label_smoothing)
        self.spread = AnchorSpreadLoss(anchor_pairs, normalize, anchor_margin)
        self.center = AnchorCenterLoss(normalize)

    def forward(self, out: dict, labels: torch.Tensor, anchors: torch.Tensor | None,
                soft_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError("GReFEL loss got unlabelled samples (label -1); it needs labelled batches")
        l_cls = self.cls(out["final"], soft_labels if soft_labels is not None else labels)
        zero = out["final"].new_zeros(())
        if anchors is not None and out.get("distances") is not None:
            l_a = self.spread(anchors)
            l_c = self.center.from_distances(out["distances"], labels, anchors.shape[-1])
        else:
            l_a = l_c = zero
        loss = self.lambda_cls * l_cls + self.lambda_anchor * l_a + self.lambda_center * l_c
        return {"loss": loss, "l_cls": l_cls.detach(), "l_anchor": l_a.detach(), "l_center": l_c.detach()}
