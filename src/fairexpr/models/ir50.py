"""IR-50: the face-recognition ResNet of ArcFace/face.evoLVe used by AGRA/DIFC, POSTER++, ARBEx, GReFEL.

Architecture (face.evoLVe ``Backbone(50, mode='ir')``): stem ``input_layer`` = 3x3/1 conv (64) + BN +
PReLU, then 24 ``bottleneck_IR`` units in 4 stages of [3, 4, 14, 3] units with depths
[64, 128, 256, 512], the first unit of each stage having stride 2. A unit is

    res_layer      = BN -> Conv3x3(s=1) -> PReLU -> Conv3x3(s=stride) -> BN
    shortcut_layer = MaxPool(1, stride)                    if in == depth
                     Conv1x1(s=stride) -> BN               otherwise
    out            = res_layer(x) + shortcut_layer(x)

Key names are face.evoLVe's (``input_layer.*``, ``body.N.res_layer.*``, ``body.N.shortcut_layer.*``,
``output_layer.*``), so ``backbone_ir50_ms1m_epoch120.pth`` loads as is. Other layouts are remapped
(:func:`remap_ir50_keys`): POSTER++ ``ir50.pth``/its ``Backbone`` (``body1.i``, ``body2.i``,
``body3.i`` — stage-local indices; stage 4 absent), AGRA/DIFC's ``ResNet`` (``layer1.i`` ...) and
ARBEx (``net_1.net.i.res``/``shortcut``).

Resolution at a 112x112 input: stem 112 -> stage 1 56x56x64 -> stage 2 28x28x128 -> stage 3
14x14x256 -> stage 4 7x7x512. :meth:`IR50.forward_features_multiscale` returns the outputs of stages
1-3 (56/28/14). POSTER++ obtains its 28x28/14x14/7x7 maps from these by its *own* stride-2 3x3
convolutions (``conv1/2/3`` in ``PosterV2_7cls.py``), which belong to the fusion model, not to IR-50.

Options: ``stages`` 4 (default) or 3 (POSTER++'s truncated backbone: embedding = stage-3 256-d),
``pool`` ``'avg'`` (default; global average pooling, any input size >= 16) or ``'output_layer'``
(face.evoLVe's BN -> Dropout -> Flatten -> Linear(512*7*7, 512) -> BN1d; needs 112x112 and 4 stages).
Default normalisation is face.evoLVe's (mean = std = 0.5 per channel).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .common import ZooModel, check_in_chans, load_pretrained, resolve_head_options
from .registry import ModelError, register_model

STAGE_UNITS = (3, 4, 14, 3)
STAGE_DEPTHS = (64, 128, 256, 512)
STAGE_OFFSETS = (0, 3, 7, 21)  # index in ``body`` of each stage's first unit


class BottleneckIR(nn.Module):
    """face.evoLVe ``bottleneck_IR`` (BN-Conv-PReLU-Conv-BN residual + max-pool/1x1-conv shortcut)."""

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


_STAGE_KEY = re.compile(r"^(?:body|layer)([1-4])\.(\d+)\.(.+)$")
_ARBEX_KEY = re.compile(r"^net_([1-4])\.net\.(\d+)\.(res|shortcut)\.(.+)$")


def remap_ir50_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Translate IR-50 checkpoints to face.evoLVe names (``body.N.*`` with N the global unit index).

    * POSTER++ ``body{s}.{i}.*`` and AGRA/DIFC ``layer{s}.{i}.*`` -> ``body.{offset_s + i}.*``
    * ARBEx ``net_{s}.net.{i}.res|shortcut.*`` -> ``body.{offset_s + i}.res_layer|shortcut_layer.*``
    * face.evoLVe keys (``input_layer``, ``body.N``, ``output_layer``) are unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    counts = {"poster/agra": 0, "arbex": 0}
    for k, v in sd.items():
        m = _STAGE_KEY.match(k)
        a = _ARBEX_KEY.match(k)
        if m:
            s, i, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            out[f"body.{STAGE_OFFSETS[s - 1] + i}.{rest}"] = v
            counts["poster/agra"] += 1
        elif a:
            s, i, part, rest = int(a.group(1)), int(a.group(2)), a.group(3), a.group(4)
            out[f"body.{STAGE_OFFSETS[s - 1] + i}.{part}_layer.{rest}"] = v
            counts["arbex"] += 1
        else:
            out[k] = v
    notes = []
    if counts["poster/agra"]:
        notes.append(f"mapped {counts['poster/agra']} stage-local keys (body1../layer1..) to face.evoLVe body.N")
    if counts["arbex"]:
        notes.append(f"mapped {counts['arbex']} ARBEx keys (net_s.net.i) to face.evoLVe body.N")
    return out, notes


class IR50(ZooModel):
    """IR-50 backbone + classifier; ``forward_features`` -> ``[B, 512]`` (``[B, 256]`` with 3 stages)."""

    _head_name = "fc"

    def __init__(self, num_classes: int = 7, in_chans: int = 3, stages: int = 4, pool: str = "avg",
                 head: str = "linear", drop_rate: float | None = None, head_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        name = "ir50"
        in_chans = check_in_chans(name, in_chans)
        if stages not in (3, 4) or isinstance(stages, bool):
            raise ModelError(f"{name}: stages must be 3 (POSTER++ truncated) or 4, got {stages!r}")
        if pool not in ("avg", "output_layer"):
            raise ModelError(f"{name}: pool must be 'avg' or 'output_layer', got {pool!r}")
        if pool == "output_layer" and stages != 4:
            raise ModelError(f"{name}: pool='output_layer' needs stages=4 (it flattens the 512x7x7 stage-4 map)")
        self.head_kind, rate, self.head_kwargs = resolve_head_options(name, head, drop_rate, 0.0, head_kwargs)
        self.stages, self.pool = int(stages), pool
        self.input_layer = nn.Sequential(nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units: list[nn.Module] = []
        in_c = 64
        for units_n, depth in list(zip(STAGE_UNITS, STAGE_DEPTHS))[: self.stages]:
            for j in range(units_n):
                units.append(BottleneckIR(in_c, depth, 2 if j == 0 else 1))
                in_c = depth
        self.body = nn.Sequential(*units)
        if pool == "output_layer":
            self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.0), nn.Flatten(),
                                              nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))
        self.num_features = 512 if (pool == "output_layer" or self.stages == 4) else STAGE_DEPTHS[self.stages - 1]
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(rate)
        self.fc = self._make_head(num_classes)
        self._finish_cfg((112, 112), in_chans, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])

    def forward_features_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of stages 1-3: ``[B,64,H/2,W/2]``, ``[B,128,H/4,W/4]``, ``[B,256,H/8,W/8]``
        (56/28/14 at 112x112 — the maps POSTER++ takes from IR-50 before its own stride-2 convs)."""
        x = self.input_layer(x)
        outs = []
        for s in range(3):
            x = self.body[STAGE_OFFSETS[s]: STAGE_OFFSETS[s] + STAGE_UNITS[s]](x)
            outs.append(x)
        return outs

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.input_layer(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.forward_feature_map(x)
        if self.pool == "output_layer":
            if fmap.shape[-2:] != (7, 7):
                raise ModelError(f"ir50 with pool='output_layer' needs 112x112 input (7x7 stage-4 map), got input "
                                 f"{tuple(x.shape[-2:])}; use pool='avg' for other sizes")
            return self.output_layer(fmap)
        return fmap.mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head_drop(features))


@register_model("ir50", description="IR-50 face-recognition ResNet (face.evoLVe/POSTER++ weights; multiscale maps)",
                input_size=(112, 112), min_input_size=(32, 32))
def ir50(num_classes: int = 7, pretrained: str | Path | None = None, **kwargs: Any) -> IR50:
    """IR-50 (ArcFace/face.evoLVe) with loaders for ``backbone_ir50_ms1m_epoch120.pth`` and POSTER++ ``ir50.pth``."""
    model = IR50(num_classes=num_classes, **kwargs)
    if pretrained is not None:
        model.load_report = load_pretrained(model, pretrained, first_conv="input_layer.0",
                                            in_chans=model.pretrained_cfg["in_chans"], remap=remap_ir50_keys)
    return model
