r"""Attention layers shared by the backbones: CBAM (Woo et al., ECCV 2018).

Structure follows timm's ``timm/layers/cbam.py`` (and the authors' ``attention-module``):
channel attention, then spatial attention, each a sigmoid gate multiplied onto the input.

``init="identity"`` (not in the paper; for CBAM inserted into a *pretrained* network): each gate is
:math:`2\sigma(z)` instead of :math:`\sigma(z)`, with the layer that produces ``z`` zero-initialised (the channel
MLP's last layer, the spatial branch's batch-norm scale), so both gates are exactly 1 at the first step and the
network computes what the pretrained one did; the gates then learn in (0, 2). The paper's gates start near 0.5 each,
which scales every residual branch by ~1/4 and throws away much of what the pretrained weights knew
(``docs/methods.md``, CUCN). The same zero-init idea as Goyal et al. 2017's zero-gamma residual blocks.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import ModelError

#: ``CBAM(init=...)``: "paper" = sigmoid gates, default initialisation (Woo et al.); "identity" = 2 sigmoid gates that
#: start at exactly 1 (see the module docstring)
CBAM_INITS = ("paper", "identity")


def _check_init(init: str) -> float:
    if init not in CBAM_INITS:
        raise ModelError(f"CBAM: init must be one of {', '.join(CBAM_INITS)}, got {init!r}")
    return 2.0 if init == "identity" else 1.0


class ChannelAttention(nn.Module):
    r"""CBAM channel attention.

    .. math::
        M_c(F) = \sigma\big(\mathrm{MLP}(\mathrm{AvgPool}(F)) + \mathrm{MLP}(\mathrm{MaxPool}(F))\big),
        \qquad \mathrm{MLP}(z) = W_1\,\mathrm{ReLU}(W_0 z + b_0) + b_1,

    with one MLP shared by both descriptors, hidden width ``max(channels // reduction, min_hidden)``.
    ``forward`` returns :math:`F \odot M_c(F)` (``M_c`` broadcast over H, W); :meth:`gate` returns
    :math:`M_c` of shape ``[B, C, 1, 1]``. ``init="identity"``: :math:`M_c = 2\sigma(\cdot)` with :math:`W_1, b_1 = 0`
    at the start (gate exactly 1).
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 1, init: str = "paper") -> None:
        super().__init__()
        self.init = init
        self.scale = _check_init(init)
        if channels < 1 or reduction < 1:
            raise ModelError(f"ChannelAttention: channels and reduction must be >= 1, got {channels}, {reduction}")
        hidden = max(channels // reduction, min_hidden)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)
        self.reset_gate()

    def reset_gate(self) -> None:
        """``init="identity"``: zero the MLP's last layer so the gate is exactly 1 (a no-op for "paper")."""
        if self.init == "identity":
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def mlp(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(z)))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        g = torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        return g if self.scale == 1.0 else self.scale * g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SpatialAttention(nn.Module):
    r"""CBAM spatial attention.

    .. math::
        M_s(F) = \sigma\big(\mathrm{BN}(f^{k\times k}([\mathrm{mean}_c F;\ \max_c F]))\big),

    a ``k x k`` (default 7) convolution without bias, followed by batch norm as in CBAM's
    ``BasicConv(relu=False)`` and timm's ``ConvNormAct(apply_act=False)``, over the channel-wise
    mean and max maps (stacked in that order, timm's order). ``forward`` returns :math:`F \odot M_s(F)`;
    :meth:`gate` returns :math:`M_s` of shape ``[B, 1, H, W]``. ``init="identity"``: :math:`M_s = 2\sigma(\cdot)`
    with the batch norm's scale and shift 0 at the start (gate exactly 1; the convolution keeps its random weights,
    so the scale has a gradient).
    """

    def __init__(self, kernel_size: int = 7, init: str = "paper") -> None:
        super().__init__()
        self.init = init
        self.scale = _check_init(init)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ModelError(f"SpatialAttention: kernel_size must be odd and >= 1, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.reset_gate()

    def reset_gate(self) -> None:
        """``init="identity"``: zero the batch norm's scale and shift so the gate is exactly 1 (no-op for "paper")."""
        if self.init == "identity":
            nn.init.zeros_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        g = torch.sigmoid(self.bn(self.conv(pooled)))
        return g if self.scale == 1.0 else self.scale * g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CBAM(nn.Module):
    r"""Convolutional Block Attention Module: :math:`F' = M_c(F) \odot F`, :math:`F'' = M_s(F') \odot F'`."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, init: str = "paper") -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, init=init)
        self.spatial = SpatialAttention(kernel_size, init=init)

    def reset_gates(self) -> None:
        """Re-apply ``init`` to both gates (after a whole-network initialisation loop has overwritten them)."""
        self.channel.reset_gate()
        self.spatial.reset_gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
