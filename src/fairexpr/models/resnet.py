"""ResNet-18/50 (torchvision layout) and CBAM-ResNet-18 (CUCN).

State-dict keys are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc``): the modules
*are* torchvision's (``torchvision.models.resnet``), so torchvision ImageNet files load unchanged.

Options shared by the three builders:

* ``small_input=True`` — CIFAR-style stem for 48x48 faces (FER2013/FER+): a 3x3 stride-1 ``conv1``
  and no max-pool, so the total stride is 8 instead of 32 (48x48 -> 6x6 at ``layer4`` instead of 2x2).
  An ImageNet 7x7 ``conv1`` does not fit this stem and is reported as shape-mismatched (fresh).
* ``in_chans`` 1 or 3, ``head`` ``linear``/``normed``/``uncertainty``, ``drop_rate`` (dropout before
  the classifier; inside the head for ``uncertainty``), ``head_kwargs``.

``pretrained=`` also accepts the MS-Celeb ResNet-18 of SCN/RUL (``resnet18_msceleb.pth``): its
``state_dict`` holds torchvision names (``module.`` stripped) and an identity classifier ``fc``
(dropped: shape mismatch, reported); checkpoints saved from SCN/RUL wrappers that hold the trunk as
``features = nn.Sequential(*list(resnet.children())[:-1 or -2])`` (keys ``features.0.weight``,
``features.4.0.conv1.weight`` ...) are mapped back to torchvision names.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet as tv

from .common import IMAGENET_MEAN, IMAGENET_STD, ZooModel, check_in_chans, load_pretrained, resolve_head_options
from .layers import CBAM, CBAM_INITS
from .registry import ModelError, register_model

#: index in ``nn.Sequential(*resnet.children())`` -> torchvision attribute name
_SEQ_INDEX = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_SEQ_KEY = re.compile(r"^(?:features?|base)\.(\d+)\.(.+)$")


def remap_resnet_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map SCN/RUL ``features.N.*`` Sequential keys to torchvision names; other keys are kept."""
    out: dict[str, torch.Tensor] = {}
    n = 0
    for k, v in sd.items():
        m = _SEQ_KEY.match(k)
        if m and m.group(1) in _SEQ_INDEX:
            out[f"{_SEQ_INDEX[m.group(1)]}.{m.group(2)}"] = v
            n += 1
        else:
            out[k] = v
    return out, ([f"mapped {n} Sequential-trunk keys (features.N.*) to torchvision names"] if n else [])


class CBAMBasicBlock(tv.BasicBlock):
    """torchvision ``BasicBlock`` with CBAM applied to the residual branch before the addition:
    ``out = relu(CBAM(bn2(conv2(relu(bn1(conv1(x)))))) + shortcut(x))`` (Woo et al., Fig. 3)."""

    cbam_reduction: int = 16
    cbam_init: str = "paper"

    def __init__(self, inplanes: int, planes: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        self.cbam = CBAM(planes * self.expansion, reduction=self.cbam_reduction, init=self.cbam_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.cbam(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class ResNet(ZooModel):
    """ResNet with torchvision key names; ``forward_features`` -> global-average-pooled ``layer4``."""

    _head_name = "fc"

    def __init__(self, block: type[nn.Module], layers: list[int], *, name: str, num_classes: int = 7,
                 in_chans: int = 3, small_input: bool = False, head: str = "linear",
                 drop_rate: float | None = None, head_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        in_chans = check_in_chans(name, in_chans)
        if not isinstance(small_input, bool):
            raise ModelError(f"{name}: small_input must be true or false, got {small_input!r}")
        self.head_kind, rate, self.head_kwargs = resolve_head_options(name, head, drop_rate, 0.0, head_kwargs)
        net = tv.ResNet(block, layers, num_classes=1000)  # torchvision's init of every layer
        if small_input:
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = net.maxpool
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1, self.relu = net.bn1, net.relu
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.avgpool = net.avgpool
        self.num_features = net.fc.in_features
        self.num_classes = num_classes
        self.small_input = small_input
        self.head_drop = nn.Dropout(rate)
        self.fc = self._make_head(num_classes)
        self._finish_cfg((48, 48) if small_input else (224, 224), in_chans, IMAGENET_MEAN, IMAGENET_STD)

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``layer4`` output ``[B, C, H/s, W/s]`` (s = 8 with ``small_input``, else 32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.forward_feature_map(x)), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head_drop(features))


def _build(name: str, block: type[nn.Module], layers: list[int], num_classes: int, pretrained: str | Path | None,
           fresh: tuple[str, ...] = (), **kwargs: Any) -> ResNet:
    model = ResNet(block, layers, name=name, num_classes=num_classes, **kwargs)
    for m in model.modules():  # torchvision's init loop reset every batch norm's scale to 1: CBAM's own init again,
        if isinstance(m, CBAM):  # before any weights are loaded
            m.reset_gates()
    if pretrained is not None:
        model.load_report = load_pretrained(model, pretrained, first_conv="conv1", in_chans=model.pretrained_cfg["in_chans"],
                                            remap=remap_resnet_keys, fresh_markers=fresh)
    return model


@register_model("resnet18", description="ResNet-18 (torchvision keys; small_input stem for 48x48)",
                input_size=(224, 224), min_input_size=(32, 32))
def resnet18(num_classes: int = 7, pretrained: str | Path | None = None, **kwargs: Any) -> ResNet:
    """ResNet-18 (He et al. 2016), torchvision-compatible weights."""
    return _build("resnet18", tv.BasicBlock, [2, 2, 2, 2], num_classes, pretrained, **kwargs)


@register_model("resnet50", description="ResNet-50 (torchvision keys; small_input stem for 48x48)",
                input_size=(224, 224), min_input_size=(32, 32))
def resnet50(num_classes: int = 7, pretrained: str | Path | None = None, **kwargs: Any) -> ResNet:
    """ResNet-50 (He et al. 2016), torchvision-compatible weights."""
    return _build("resnet50", tv.Bottleneck, [3, 4, 6, 3], num_classes, pretrained, **kwargs)


@register_model("cbam_resnet18", description="ResNet-18 with CBAM in every BasicBlock (CUCN); loads plain ResNet-18 weights",
                input_size=(224, 224), min_input_size=(32, 32))
def cbam_resnet18(num_classes: int = 7, pretrained: str | Path | None = None, cbam_reduction: int = 16,
                  cbam_init: str = "paper", **kwargs: Any) -> ResNet:
    """CBAM-ResNet-18 (Fan et al. 2022): CBAM before the residual addition of every BasicBlock.

    Plain ResNet-18 files (torchvision ImageNet, MS-Celeb ``resnet18_msceleb.pth``) load into the
    trunk; the CBAM parameters stay freshly initialised and are listed in ``load_report.fresh``. ``cbam_init``:
    "paper" (sigmoid gates) or "identity" (gates 2 sigmoid starting at exactly 1, so a pretrained trunk starts as it
    was; :mod:`fairexpr.models.layers`).
    """
    if isinstance(cbam_reduction, bool) or not isinstance(cbam_reduction, int) or cbam_reduction < 1:
        raise ModelError(f"cbam_resnet18: cbam_reduction must be a positive int, got {cbam_reduction!r}")
    if cbam_init not in CBAM_INITS:
        raise ModelError(f"cbam_resnet18: cbam_init must be one of {', '.join(CBAM_INITS)}, got {cbam_init!r}")
    block = type("CBAMBasicBlock", (CBAMBasicBlock,), {"cbam_reduction": cbam_reduction, "cbam_init": cbam_init})
    return _build("cbam_resnet18", block, [2, 2, 2, 2], num_classes, pretrained, fresh=(".cbam.",), **kwargs)
