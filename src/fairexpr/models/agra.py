"""The AGRA / DIFC global + local landmark head (Xie et al., "Adversarial Graph Representation Adaptation for
Cross-Domain FER", ACM MM 2020; used unchanged by Sreenivas et al., DIFC, ECCVW 2022).

On a backbone with four stages (``ir50``, ``resnet18/34/50``, ``cbam_resnet18``):

* **global** feature: ``GAP(ReLU(Conv3x3_{C4→64}(stage4)))`` — 64-d;
* **local** features: for each of the five facial landmarks (eye, eye, nose, mouth corner, mouth corner) a
  ``crop × crop`` window (7 × 7) of the stage-2 map centred on the landmark, zero outside the map, goes through
  its own crop net — two IR units ``C2→256`` (the first with stride 2), two IR units ``256→512`` (the first with
  stride 2), ``Conv3x3_{512→64}`` + ReLU — and GAP: 5 × 64 = 320-d;
* the feature is ``[global, local_1..local_5]`` — 384-d (``forward_features``).

Landmarks are ``[B, 5, 2]`` tensors of ``(x, y)`` in fractions of the input width/height (0..1), ordered
``IMAGE_LEFT_EYE, IMAGE_RIGHT_EYE, NOSE, IMAGE_LEFT_MOUTH, IMAGE_RIGHT_MOUTH`` (image-left = smaller x, so a
horizontal flip swaps 0↔1 and 3↔4; ``fairexpr.data.landmarks``). The crop centre on an ``L × L`` map is the
cell ``floor(x · L)`` (clamped to the map), i.e. the authors' integer map locations (their landmarks ÷ stride).

``landmarks="data"`` expects them as ``forward_features(x, landmarks=...)`` — the training engine passes the
dataset's landmarks (``data.<role>_options.landmarks``); a call without landmarks (inference, ONNX export, a
dataset without them) uses the fixed ``template`` (default: the ArcFace 5-point alignment template, a good
prior for aligned face crops). ``landmarks="template"`` always uses the template. ``landmarks="none"`` is the
global head alone (64-d), the issue's "without landmarks" setting.

Deviation from the authors' model: their crop nets cut integer windows sample by sample in a Python loop; here
one batched gather does the same (identical output, tested against a loop).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ir50 import BottleneckIR
from .registry import FERModel, ModelError, create_model, register_model

#: ArcFace 112 × 112 five-point alignment template (insightface ``arcface_dst``), as fractions of the side
ARCFACE_TEMPLATE: tuple[tuple[float, float], ...] = tuple(
    (x / 112.0, y / 112.0) for x, y in ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
                                        (41.5493, 92.3655), (70.7299, 92.2041)))
LANDMARK_MODES = ("data", "template", "none")


def crop_windows(fmap: torch.Tensor, landmarks: torch.Tensor, size: int = 7) -> torch.Tensor:
    """``size × size`` windows of ``fmap [B, C, H, W]`` centred on ``landmarks [B, K, 2]`` (fractions of
    width/height) -> ``[B, K, C, size, size]``; cells outside the map are 0 (the authors' zero-filled grid).

    Centre cell = ``(floor(y·H), floor(x·W))`` clamped to the map; the window spans ``centre ± size // 2``.
    """
    if fmap.dim() != 4 or landmarks.dim() != 3 or landmarks.shape[-1] != 2 or landmarks.shape[0] != fmap.shape[0]:
        raise ModelError(f"crop_windows: expected fmap [B,C,H,W] and landmarks [B,K,2], got {tuple(fmap.shape)} "
                         f"and {tuple(landmarks.shape)}")
    b, c, h, w = fmap.shape
    k, r = landmarks.shape[1], size // 2
    cx = (landmarks[..., 0].float() * w).floor().long().clamp(0, w - 1)  # [B, K]
    cy = (landmarks[..., 1].float() * h).floor().long().clamp(0, h - 1)
    padded = F.pad(fmap, (r, size - 1 - r, r, size - 1 - r))  # zeros outside the map
    offs = torch.arange(size, device=fmap.device)
    rows = (cy.unsqueeze(-1) + offs).view(b, k, size, 1).expand(b, k, size, size)  # padded coords = centre - r + offs + r
    cols = (cx.unsqueeze(-1) + offs).view(b, k, 1, size).expand(b, k, size, size)
    bidx = torch.arange(b, device=fmap.device).view(b, 1, 1, 1).expand(b, k, size, size)
    win = padded.permute(0, 2, 3, 1)[bidx, rows, cols]  # [B, K, size, size, C]
    return win.permute(0, 1, 4, 2, 3).contiguous()


def _crop_net(in_ch: int, width: int = 256, out_ch: int = 64) -> nn.Sequential:
    """The authors' ``Crop_Net``: IR units in→w (stride 2), w→w, w→2w (stride 2), 2w→2w, Conv3x3 2w→out, ReLU."""
    return nn.Sequential(BottleneckIR(in_ch, width, 2), BottleneckIR(width, width, 1),
                         BottleneckIR(width, 2 * width, 2), BottleneckIR(2 * width, 2 * width, 1),
                         nn.Conv2d(2 * width, out_ch, 3, 1, 1), nn.ReLU())


def _stage_maps(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(stage-2 map, stage-4 map) of a ResNet-style (``layer1..4``) or IR-50 (``body``) backbone."""
    if all(hasattr(backbone, f"layer{i}") for i in range(1, 5)) and hasattr(backbone, "conv1"):
        y = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
        s2 = backbone.layer2(backbone.layer1(y))
        return s2, backbone.layer4(backbone.layer3(s2))
    from .ir50 import STAGE_OFFSETS, STAGE_UNITS

    y = backbone.input_layer(x)
    s2 = backbone.body[: STAGE_OFFSETS[1] + STAGE_UNITS[1]](y)
    return s2, backbone.body[STAGE_OFFSETS[1] + STAGE_UNITS[1]:](s2)


def _stage_channels(backbone: nn.Module, in_chans: int, size: int) -> tuple[int, int]:
    with torch.no_grad():
        was = backbone.training
        backbone.eval()
        s2, s4 = _stage_maps(backbone, torch.zeros(1, in_chans, size, size))
        backbone.train(was)
    return int(s2.shape[1]), int(s4.shape[1])


class AGRANet(FERModel):
    """Backbone + AGRA global/local head + linear classifier (module docstring)."""

    uses_landmarks = True

    def __init__(self, backbone: FERModel, num_classes: int, landmarks: str = "data",
                 template: Sequence[Sequence[float]] = ARCFACE_TEMPLATE, crop: int = 7, local_dim: int = 64,
                 global_dim: int = 64, crop_width: int = 256) -> None:
        super().__init__()
        if landmarks not in LANDMARK_MODES:
            raise ModelError(f"agra_net: landmarks must be one of {'|'.join(LANDMARK_MODES)}, got {landmarks!r}")
        tmpl = torch.as_tensor(template, dtype=torch.float32)
        if tmpl.shape != (5, 2) or not bool(((tmpl >= 0) & (tmpl <= 1)).all()):
            raise ModelError(f"agra_net: template must be 5 (x, y) pairs in [0, 1], got shape {tuple(tmpl.shape)}")
        if crop < 1:
            raise ModelError(f"agra_net: crop must be >= 1, got {crop}")
        self.backbone = backbone
        self.num_classes, self.mode, self.crop = num_classes, landmarks, int(crop)
        self.uses_landmarks = landmarks == "data"
        self.pretrained_cfg = dict(backbone.pretrained_cfg)
        in_chans = int(self.pretrained_cfg.get("in_chans", 3))
        size = int((self.pretrained_cfg.get("input_size") or (3, 112, 112))[-1])
        c2, c4 = _stage_channels(backbone, in_chans, max(size, 32))
        self.register_buffer("template", tmpl, persistent=False)
        self.global_head = nn.Sequential(nn.Conv2d(c4, global_dim, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                         nn.Flatten())
        self.crop_nets = nn.ModuleList([_crop_net(c2, crop_width, local_dim) for _ in range(5)]) \
            if landmarks != "none" else nn.ModuleList()
        self.num_features = global_dim + (5 * local_dim if landmarks != "none" else 0)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        s2, s4 = _stage_maps(self.backbone, x)
        g = self.global_head(s4)
        if self.mode == "none":
            return g
        if landmarks is None or self.mode == "template":
            landmarks = self.template.to(x.device).unsqueeze(0).expand(x.shape[0], 5, 2)
        elif landmarks.shape[0] != x.shape[0] or tuple(landmarks.shape[1:]) != (5, 2):
            raise ModelError(f"agra_net: landmarks must be [B, 5, 2] for a batch of {x.shape[0]}, "
                             f"got {tuple(landmarks.shape)}")
        win = crop_windows(s2, landmarks.to(s2.device), self.crop)  # [B, 5, C, crop, crop]
        locs = [net(win[:, i]).mean(dim=(2, 3)) for i, net in enumerate(self.crop_nets)]
        return torch.cat([g, *locs], dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return self.forward_head(self.forward_features(x, landmarks))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)


@register_model("agra_net", description="AGRA/DIFC global (64) + five landmark-crop local (5x64) head on a "
                                        "four-stage backbone (ir50/resnet); 384-d feature")
def agra_net(num_classes: int = 7, pretrained: str | None = None, backbone: str = "ir50",
             backbone_kwargs: dict[str, Any] | None = None, in_chans: int | None = None, landmarks: str = "data",
             template: Sequence[Sequence[float]] | None = None, crop: int = 7, crop_width: int = 256,
             **backbone_options: Any) -> AGRANet:
    """AGRA head on any four-stage registered ``backbone`` (``ir50``, ``resnet18/34/50``, ``cbam_resnet18``).

    ``pretrained`` is a local weight file for the backbone alone (e.g. the MS-Celeb IR-50 the authors start
    from), or a whole ``agra_net`` state (keys ``backbone.*`` and ``global_head.*``), loaded strictly.
    Other keyword options (e.g. ``small_input``) go to the backbone, like ``backbone_kwargs``.
    """
    from .uda_heads import _backbone_kwargs, _load_whole, _record, _split_pretrained

    if backbone in ("mcd_net", "afn_net", "agra_net"):
        raise ModelError(f"agra_net: backbone {backbone!r} is a wrapper; name a plain backbone (ir50, resnet18, ...)")
    bkw = _backbone_kwargs("agra_net", {**backbone_options, **(backbone_kwargs or {})}, in_chans)
    backbone_file, state = _split_pretrained(pretrained, ("global_head.",), backbone)
    base = create_model(backbone, num_classes=num_classes, pretrained=backbone_file, **bkw)
    if not (hasattr(base, "body") and hasattr(base, "input_layer")) and \
            not all(hasattr(base, f"layer{i}") for i in range(1, 5)):
        raise ModelError(f"agra_net: backbone {backbone!r} has no four ResNet/IR stages (use ir50, resnet18/34/50 "
                         "or cbam_resnet18)")
    net = AGRANet(base, num_classes, landmarks, template if template is not None else ARCFACE_TEMPLATE, crop,
                  crop_width=crop_width)
    if state is not None:
        _load_whole(net, state, pretrained, "agra_net")
    _record(net, "agra_net", backbone=backbone, backbone_kwargs=bkw, landmarks=landmarks,
            template=[list(p) for p in (template if template is not None else ARCFACE_TEMPLATE)], crop=crop,
            crop_width=crop_width)
    return net


__all__ = ["ARCFACE_TEMPLATE", "AGRANet", "LANDMARK_MODES", "agra_net", "crop_windows"]
