"""MobileNetV2 (Sandler et al. 2018) with torchvision's state-dict keys (``features.N...``,
``classifier.1``), so ``mobilenet_v2-b0353104.pth`` loads unchanged.

``small_input=True`` sets the stride of the first 3x3 convolution to 1 (total stride 16 instead of
32): a 48x48 face then ends in a 3x3 map instead of 2x2, and 112x112 in 7x7 instead of 4x4. The
weights are the same shape, so ImageNet files still load completely. Works at 48x48, 112x112 and
224x224 (any size >= 32, or >= 16 with ``small_input``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import mobilenetv2 as tvm

from .common import IMAGENET_MEAN, IMAGENET_STD, ZooModel, check_in_chans, load_pretrained, resolve_head_options
from .registry import ModelError, register_model


class MobileNetV2(ZooModel):
    """MobileNetV2; ``forward_features`` -> global-average-pooled 1280-d embedding."""

    _head_name = "classifier.1"

    def __init__(self, num_classes: int = 7, in_chans: int = 3, small_input: bool = False, width_mult: float = 1.0,
                 head: str = "linear", drop_rate: float | None = None, head_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        name = "mobilenet_v2"
        in_chans = check_in_chans(name, in_chans)
        if not isinstance(small_input, bool):
            raise ModelError(f"{name}: small_input must be true or false, got {small_input!r}")
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
            raise ModelError(f"{name}: width_mult must be a positive number, got {width_mult!r}")
        # torchvision's classifier dropout is 0.2; keep that default for the linear/normed heads
        self.head_kind, rate, self.head_kwargs = resolve_head_options(name, head, drop_rate, 0.2, head_kwargs)
        net = tvm.MobileNetV2(num_classes=1000, width_mult=float(width_mult))
        stem: nn.Conv2d = net.features[0][0]
        if in_chans != 3 or small_input:
            new = nn.Conv2d(in_chans, stem.out_channels, 3, stride=1 if small_input else 2, padding=1, bias=False)
            nn.init.kaiming_normal_(new.weight, mode="fan_out")
            net.features[0][0] = new
        self.features = net.features
        self.num_features = net.last_channel
        self.num_classes = num_classes
        self.small_input = small_input
        self.classifier = nn.Sequential(nn.Dropout(rate), self._make_head(num_classes))
        self._finish_cfg((48, 48) if small_input else (224, 224), in_chans, IMAGENET_MEAN, IMAGENET_STD)

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


@register_model("mobilenet_v2", description="MobileNetV2 (torchvision keys; small_input halves the stem stride)",
                input_size=(224, 224), min_input_size=(32, 32))
def mobilenet_v2(num_classes: int = 7, pretrained: str | Path | None = None, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2, torchvision-compatible weights (e.g. ``mobilenet_v2-b0353104.pth``)."""
    model = MobileNetV2(num_classes=num_classes, **kwargs)
    if pretrained is not None:
        model.load_report = load_pretrained(model, pretrained, first_conv="features.0.0", in_chans=model.pretrained_cfg["in_chans"])
    return model
