"""Helpers of the DIFC tests: a tiny registered backbone, a fake StepContext, configs and batches."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

import fairexpr.models.uda_heads  # noqa: F401  (registers mcd_net / afn_net until zoo.py imports it)
from fairexpr.methods.base import DataInfo, StepContext
from fairexpr.models.registry import _REGISTRY, FERModel, register_model

TINY = "difc_test_tiny"


class TinyNet(FERModel):
    """conv(3x3, 4) -> BN -> ReLU -> global average pool -> 8-d embedding -> linear."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, 8
        self.pretrained_cfg = {"input_size": (16, 16), "in_chans": in_chans, "mean": [0.5] * in_chans,
                               "std": [0.5] * in_chans}
        self.body = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(8, num_classes)


if TINY not in _REGISTRY:
    @register_model(TINY, description="tiny test backbone of the DIFC tests")
    def _tiny(num_classes: int = 7, pretrained: Any = None, in_chans: int = 1, small_input: bool = True) -> TinyNet:
        return TinyNet(num_classes, in_chans)


COUNTS = [40, 5, 20, 80, 30, 25, 60]


def data_info() -> DataInfo:
    from fairexpr.labels import CANONICAL7

    return DataInfo(classes=CANONICAL7, class_counts=list(COUNTS), in_chans=1, image_size=16)


def make_config(method: str, **opts: Any) -> dict[str, Any]:
    return {"model": {"name": TINY, "pretrained": None, "kwargs": {}}, "method": {"name": method, **opts}}


def fake_ctx(optimizers: list[torch.optim.Optimizer], epoch: int = 0, step: int = 0) -> StepContext:
    def step_opt(o: torch.optim.Optimizer) -> None:
        o.step()
        o.zero_grad()

    return StepContext(epoch=epoch, step=step, max_epochs=2, max_steps=10, backward=lambda l: l.backward(),
                       step_optimizer=step_opt, optimizers=optimizers)


def sgd_builder(lr: float = 0.1):
    def build(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)

    build.base_lr = lr  # type: ignore[attr-defined]
    return build


def uda_batch(n: int = 6, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {"source": {"image": torch.randn(n, 1, 16, 16, generator=g), "label": torch.arange(n) % 7,
                       "index": torch.arange(n)},
            "target": {"image": torch.randn(n, 1, 16, 16, generator=g) + 0.5, "index": torch.arange(n)}}
