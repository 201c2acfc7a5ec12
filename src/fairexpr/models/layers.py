"""Attention layers shared by the backbones: CBAM (Woo et al., ECCV 2018).

Structure follows timm's ``timm/layers/cbam.py`` (and the authors' ``attention-module``):
channel attention, then spatial attention, each a sigmoid gate multiplied onto the input.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import ModelError


class ChannelAttention(nn.Module):
    r"""CBAM channel attention.

    .. math::
        M_c(F) = \sigma\big(\mathrm{MLP}(\mathrm{AvgPool}(F)) + \mathrm{MLP}(\mathrm{MaxPool}(F))\big),
        \qquad \mathrm{MLP}(z) = W_1\,\mathrm{ReLU}(W_0 z + b_0) + b_1,

    with one MLP shared by both descriptors, hidden width ``max(channels // reduction, min_hidden)``.
    ``forward`` returns :math:`F \odot M_c(F)` (``M_c`` broadcast over H, W); :meth:`gate` returns
    :math:`M_c` of shape ``[B, C, 1, 1]``.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 1) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ModelError(f"ChannelAttention: channels and reduction must be >= 1, got {channels}, {reduction}")
        hidden = max(channels // reduction, min_hidden)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def mlp(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(z)))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SpatialAttention(nn.Module):
    r"""CBAM spatial attention.

    .. math::
        M_s(F) = \sigma\big(\mathrm{BN}(f^{k\times k}([\mathrm{mean}_c F;\ \max_c F]))\big),

    a ``k x k`` (default 7) convolution without bias, followed by batch norm as in CBAM's
    ``BasicConv(relu=False)`` and timm's ``ConvNormAct(apply_act=False)``, over the channel-wise
    mean and max maps (stacked in that order, timm's order). ``forward`` returns :math:`F \odot M_s(F)`;
    :meth:`gate` returns :math:`M_s` of shape ``[B, 1, H, W]``.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ModelError(f"SpatialAttention: kernel_size must be odd and >= 1, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CBAM(nn.Module):
    r"""Convolutional Block Attention Module: :math:`F' = M_c(F) \odot F`, :math:`F'' = M_s(F') \odot F'`."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
