"""MobileFaceNet (Chen et al. 2018) as the facial-landmark stream of POSTER++ / ARBEx / GReFEL.

Layout and key names follow POSTER++ ``models/mobilefacenet.py`` (``conv1``, ``conv2_dw``,
``conv_23``, ``conv_3.model.i``, ``conv_34``, ``conv_4``, ``conv_45``, ``conv_5``, ``conv_6_sep``,
``output_layer.{conv_6_dw,linear,bn}``), so the POSTER++ checkpoint
``mobilefacenet_model_best.pth.tar`` (a dict with ``state_dict``, 136-d landmark output) loads as is.

Blocks: ``ConvBlock`` = Conv (no bias) -> BN -> PReLU; ``LinearBlock`` = Conv -> BN;
``DepthWise(in, out, groups=g)`` = ConvBlock 1x1 (in->g) -> depthwise ConvBlock 3x3 (g, stride) ->
LinearBlock 1x1 (g->out), plus the input when residual. The GDC output layer is a 7x7 depthwise
LinearBlock -> Linear(512, embedding_size, no bias) -> BN1d, hence the fixed 112x112 input.

Maps at 112x112 (:meth:`MobileFaceNet.forward_features_multiscale`, what POSTER++ returns):
``conv_3`` 28x28x64, ``conv_4`` 14x14x128, ``conv_6_sep`` 7x7x512 (POSTER++ reduces the last to 256
channels with its own 3x3 conv ``last_face_conv``). Normalisation: ImageNet statistics, because
POSTER++ feeds this network the same ImageNet-normalised tensor as its image stream.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .common import IMAGENET_MEAN, IMAGENET_STD, ZooModel, check_in_chans, load_pretrained, resolve_head_options
from .registry import ModelError, register_model


class ConvBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.prelu = nn.PReLU(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class LinearBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class DepthWise(nn.Module):
    """Inverted bottleneck: expand 1x1 (to ``groups``) -> depthwise 3x3 -> linear project 1x1."""

    def __init__(self, in_c: int, out_c: int, groups: int, stride: int = 2, residual: bool = False) -> None:
        super().__init__()
        self.conv = ConvBlock(in_c, groups)
        self.conv_dw = ConvBlock(groups, groups, 3, stride, 1, groups=groups)
        self.project = LinearBlock(groups, out_c)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class Residual(nn.Module):
    def __init__(self, c: int, num_block: int, groups: int) -> None:
        super().__init__()
        self.model = nn.Sequential(*[DepthWise(c, c, groups, stride=1, residual=True) for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class GDC(nn.Module):
    """Global depthwise convolution output: 7x7 depthwise LinearBlock -> Linear -> BN1d."""

    def __init__(self, embedding_size: int) -> None:
        super().__init__()
        self.conv_6_dw = LinearBlock(512, 512, 7, 1, 0, groups=512)
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(torch.flatten(self.conv_6_dw(x), 1)))


class MobileFaceNet(ZooModel):
    """MobileFaceNet; ``forward_features`` -> the GDC embedding ``[B, embedding_size]`` (136 = 68
    landmarks x 2 for the POSTER++ checkpoint)."""

    _head_name = "fc"

    def __init__(self, num_classes: int = 7, in_chans: int = 3, embedding_size: int = 136, head: str = "linear",
                 drop_rate: float | None = None, head_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        name = "mobilefacenet"
        in_chans = check_in_chans(name, in_chans)
        if isinstance(embedding_size, bool) or not isinstance(embedding_size, int) or embedding_size < 1:
            raise ModelError(f"{name}: embedding_size must be a positive int, got {embedding_size!r}")
        self.head_kind, rate, self.head_kwargs = resolve_head_options(name, head, drop_rate, 0.0, head_kwargs)
        self.conv1 = ConvBlock(in_chans, 64, 3, 2, 1)
        self.conv2_dw = ConvBlock(64, 64, 3, 1, 1, groups=64)
        self.conv_23 = DepthWise(64, 64, groups=128)
        self.conv_3 = Residual(64, 4, groups=128)
        self.conv_34 = DepthWise(64, 128, groups=256)
        self.conv_4 = Residual(128, 6, groups=256)
        self.conv_45 = DepthWise(128, 128, groups=512)
        self.conv_5 = Residual(128, 2, groups=256)
        self.conv_6_sep = ConvBlock(128, 512)
        self.output_layer = GDC(embedding_size)
        for m in self.modules():  # POSTER++'s _initialize_weights
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.num_features = embedding_size
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(rate)
        self.fc = self._make_head(num_classes)
        self._finish_cfg((112, 112), in_chans, IMAGENET_MEAN, IMAGENET_STD)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (112, 112):
            raise ModelError(f"mobilefacenet expects [B, C, 112, 112] input (its GDC layer is a 7x7 kernel), "
                             f"got {tuple(x.shape)}; resize faces to 112x112 first")

    def forward_features_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B,64,28,28]`` (conv_3), ``[B,128,14,14]`` (conv_4), ``[B,512,7,7]`` (conv_6_sep)."""
        self._check(x)
        out3 = self.conv_3(self.conv_23(self.conv2_dw(self.conv1(x))))
        out4 = self.conv_4(self.conv_34(out3))
        out6 = self.conv_6_sep(self.conv_5(self.conv_45(out4)))
        return [out3, out4, out6]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.forward_features_multiscale(x)[-1])

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head_drop(features))


@register_model("mobilefacenet", description="MobileFaceNet landmark stream of POSTER++ (112x112; multiscale maps)",
                input_size=(112, 112), min_input_size=(112, 112))
def mobilefacenet(num_classes: int = 7, pretrained: str | Path | None = None, **kwargs: Any) -> MobileFaceNet:
    """MobileFaceNet with the POSTER++ checkpoint layout (``mobilefacenet_model_best.pth.tar``)."""
    model = MobileFaceNet(num_classes=num_classes, **kwargs)
    if pretrained is not None:
        model.load_report = load_pretrained(model, pretrained, first_conv="conv1.conv", in_chans=model.pretrained_cfg["in_chans"])
    return model
