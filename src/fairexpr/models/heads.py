"""Classifier heads attached to a backbone embedding ``[B, D]``.

* ``linear`` — ``nn.Linear(D, K)``.
* ``normed`` — LDAM-DRW's cosine classifier :class:`NormedLinear` (pair it with the LDAM loss,
  which scales the cosines by ``s``).
* ``uncertainty`` — RUL's two-feature head :class:`UncertaintyHead` (used by CUCN): a discriminative
  feature μ, an uncertainty feature log σ², and a linear classifier on μ.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import ModelError


class NormedLinear(nn.Module):
    r"""Cosine classifier of LDAM-DRW (``models/resnet_cifar.py``).

    .. math:: z_k = \frac{x}{\lVert x\rVert_2} \cdot \frac{w_k}{\lVert w_k\rVert_2} \in [-1, 1]

    ``weight`` has LDAM's layout ``[in_features, out_features]`` (column k is class k), initialised
    uniform in [-1, 1] with every column renormalised to unit length.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0)
            self.weight.div_(self.weight.norm(dim=0, keepdim=True).clamp_min(1e-12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class UncertaintyHead(nn.Module):
    r"""RUL's two-feature head (Zhang et al., NeurIPS 2021, ``src/rul.py``), used by CUCN.

    From the embedding :math:`h` two branches of identical shape compute

    .. math::
        \mu = \mathrm{BN}_{1d}\big(W_\mu\,\mathrm{Drop}_p(\mathrm{BN}^{\text{no-affine}}(h))\big),\qquad
        \log\sigma^2 = \mathrm{BN}_{1d}\big(W_\sigma\,\mathrm{Drop}_p(\mathrm{BN}^{\text{no-affine}}(h))\big)

    (BN eps 2e-5, ``feat_dim`` 64 and p = 0.4 by default, as RUL), and logits
    :math:`z = W_c\,\mu + b_c`. At test time only μ is classified (``forward``); a training recipe uses
    :meth:`features` to get (μ, log σ²), mixes the μs of a batch and calls :meth:`classify` on the mix.

    Difference from RUL: RUL applies the branches to the flattened 512x7x7 map of a 224x224
    ResNet-18 (BatchNorm2d + Linear(25088, 64)); here they take the pooled embedding ``[B, D]`` so the
    head works at any input size (48x48 included) and on every backbone.
    """

    def __init__(self, in_features: int, num_classes: int, feat_dim: int = 64, drop_rate: float = 0.4) -> None:
        super().__init__()
        if feat_dim < 1:
            raise ModelError(f"UncertaintyHead: feat_dim must be >= 1, got {feat_dim}")
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ModelError(f"UncertaintyHead: drop_rate must be in [0, 1), got {drop_rate}")
        self.feat_dim, self.drop_rate = int(feat_dim), float(drop_rate)

        def branch() -> nn.Sequential:
            return nn.Sequential(
                nn.BatchNorm1d(in_features, eps=2e-5, affine=False),
                nn.Dropout(self.drop_rate),
                nn.Linear(in_features, self.feat_dim),
                nn.BatchNorm1d(self.feat_dim, eps=2e-5),
            )

        self.mu = branch()
        self.logvar = branch()
        self.classifier = nn.Linear(self.feat_dim, num_classes)

    def features(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)``, each ``[B, feat_dim]``."""
        return self.mu(h), self.logvar(h)

    def classify(self, mu: torch.Tensor) -> torch.Tensor:
        return self.classifier(mu)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.mu(h))


def build_head(kind: str, in_features: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a head by name (``linear``, ``normed``, ``uncertainty``); ``kwargs`` go to the head."""
    if kind == "linear":
        if kwargs:
            raise ModelError(f"head 'linear' takes no head_kwargs, got {sorted(kwargs)}")
        return nn.Linear(in_features, num_classes)
    if kind == "normed":
        if kwargs:
            raise ModelError(f"head 'normed' takes no head_kwargs, got {sorted(kwargs)}")
        return NormedLinear(in_features, num_classes)
    if kind == "uncertainty":
        unknown = set(kwargs) - {"feat_dim", "drop_rate"}
        if unknown:
            raise ModelError(f"head 'uncertainty': unknown head_kwargs {sorted(unknown)}; known: feat_dim, drop_rate")
        return UncertaintyHead(in_features, num_classes, **kwargs)
    raise ModelError(f"unknown head {kind!r}; known: linear, normed, uncertainty")
