"""Helpers of the Meta-Face2Exp tests: tiny registered models, a fake StepContext, configs."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fairexpr.labels import CANONICAL7
from fairexpr.methods.base import DataInfo, StepContext
from fairexpr.models.registry import _REGISTRY, FERModel, register_model

LINEAR = "face2exp_test_linear"
TINY = "face2exp_test_tiny"


class LinearNet(FERModel):
    """logits = W · flatten(x) + b: the toy linear model of the feedback-factor tests."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, size: int = 2) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, in_chans * size * size
        self.pretrained_cfg = {"input_size": (size, size), "in_chans": in_chans, "mean": [0.5] * in_chans,
                               "std": [0.5] * in_chans}
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)


class TinyNet(FERModel):
    """conv(3x3, 8, stride 2) -> BN -> ReLU -> global average pool -> linear."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, 8
        self.pretrained_cfg = {"input_size": (32, 32), "in_chans": in_chans, "mean": [0.5] * in_chans,
                               "std": [0.5] * in_chans}
        self.body = nn.Sequential(nn.Conv2d(in_chans, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(8, num_classes)


if LINEAR not in _REGISTRY:
    @register_model(LINEAR, description="toy linear model of the Face2Exp tests")
    def _linear(num_classes: int = 7, pretrained: Any = None, in_chans: int = 1, size: int = 2) -> LinearNet:
        return LinearNet(num_classes, in_chans, size)

if TINY not in _REGISTRY:
    @register_model(TINY, description="tiny conv model of the Face2Exp tests")
    def _tiny(num_classes: int = 7, pretrained: Any = None, in_chans: int = 1, small_input: bool = True) -> TinyNet:
        return TinyNet(num_classes, in_chans)


def data_info(num_classes: int = 7, in_chans: int = 1, size: int = 32) -> DataInfo:
    return DataInfo(classes=CANONICAL7[:num_classes], class_counts=[10] * num_classes, in_chans=in_chans, image_size=size)


def make_config(model: str = LINEAR, model_kwargs: dict | None = None, **opts: Any) -> dict[str, Any]:
    return {"model": {"name": model, "pretrained": None, "kwargs": dict(model_kwargs or {})},
            "loss": {"name": "ce", "kwargs": {}}, "method": {"name": "face2exp", **opts},
            "train": {"precision": "32-true"}}


def fake_ctx(optimizers: list[torch.optim.Optimizer], step: int = 0) -> StepContext:
    def step_opt(o: torch.optim.Optimizer) -> None:
        o.step()
        o.zero_grad(set_to_none=True)

    return StepContext(epoch=0, step=step, max_epochs=1, max_steps=10, backward=lambda loss: loss.backward(),
                       step_optimizer=step_opt, optimizers=optimizers)


def plain_sgd(lr: float):
    def build(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        return torch.optim.SGD(groups, lr=lr, momentum=0.0, weight_decay=0.0)

    build.base_lr = lr  # type: ignore[attr-defined]
    return build


def engine_overrides(epochs: int = 2, **method: Any) -> list[str]:
    """Tiny synthetic FER2013-profile training (420 images, 30 % of the labels, 32x32) with a tiny conv net."""
    ov = ["data.train=synthetic:fer2013", "data.train_split=train", "data.train_options={total: 420, size: 32}",
          "data.val=null", "data.test=null", "data.image_size=32", "data.channels=1", "data.label_fraction=0.3",
          f"model.name={TINY}", "model.kwargs={}", f"train.epochs={epochs}", "train.batch_size=16",
          "train.eval_batch_size=256", "train.progress=false", "train.max_minutes=null", "schedule.name=cosine",
          "optim.lr=0.05", "method.unlabelled_ratio=2", "method.threshold=0.5"]
    ov += [f"method.{k}={v}" for k, v in method.items()]
    return ov
