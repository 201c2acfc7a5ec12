"""Plain supervised training: one network, one loss (CE, weighted CE, LDAM(-DRW), focal, logit-adjusted,
balanced softmax, soft-label CE). The baseline every published method is compared with."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..losses import build_loss
from ..models import create_model
from .base import DataInfo, Method, StepContext, register_method


def build_network(config: dict[str, Any], info: DataInfo, **extra: Any):
    """The configured registered model for this data (classes, channels)."""
    m = config["model"]
    kwargs = dict(m.get("kwargs") or {})
    kwargs.setdefault("in_chans", info.in_chans)
    kwargs.update(extra)
    net = create_model(m["name"], num_classes=info.num_classes, pretrained=m.get("pretrained"), **kwargs)
    net.registry_name = m["name"]  # type: ignore[attr-defined]
    net.build_kwargs = kwargs  # type: ignore[attr-defined]
    return net


@register_method("supervised")
class Supervised(Method):
    """``loss(model(x), y)``; with ``data.label_mode=soft`` the target is the vote distribution."""

    option_defaults: dict[str, Any] = {}
    accepts_landmarks = True
    #: the classifier (``model.get_classifier()``) trains at ``optim.lr * optim.head_lr_mult``: a pretrained trunk that
    #: needs a small learning rate (dlib's face ResNet has no BatchNorm and diverges at 1e-3) with a fresh head that
    #: learns at a normal one
    uses_head_lr_mult = True

    def __init__(self, config: dict[str, Any], info: DataInfo) -> None:
        super().__init__()
        self.model = build_network(config, info)
        self.head_lr_mult = float((config.get("optim") or {}).get("head_lr_mult", 1.0))
        lc = config["loss"]
        self.loss = build_loss(lc["name"], class_counts=info.class_counts, **(lc.get("kwargs") or {}))
        self.soft = config["data"]["label_mode"] == "soft"

    def parameter_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Every parameter at ``base_lr``; with ``optim.head_lr_mult != 1`` the classifier gets its own group at
        ``base_lr * head_lr_mult``."""
        params = [p for p in self.parameters() if p.requires_grad]
        if self.head_lr_mult == 1.0:
            return [{"params": params, "lr": base_lr}]
        try:
            head_module = self.model.get_classifier()
        except Exception as e:  # noqa: BLE001 - a network without a named classifier cannot split
            raise ConfigError(f"optim.head_lr_mult={self.head_lr_mult}: model "
                              f"{getattr(self.model, 'registry_name', type(self.model).__name__)!r} does not name its "
                              f"classifier ({' '.join(str(e).split())}); leave head_lr_mult at 1") from None
        head_ids = {id(p) for p in head_module.parameters() if p.requires_grad}
        if not head_ids:
            raise ConfigError(f"optim.head_lr_mult={self.head_lr_mult}: the model's classifier has no trainable parameters")
        return [{"params": [p for p in params if id(p) not in head_ids], "lr": base_lr, "name": "backbone"},
                {"params": [p for p in params if id(p) in head_ids], "lr": base_lr * self.head_lr_mult, "name": "head"}]

    def on_train_epoch_start(self, epoch: int, engine: Any) -> dict[str, Any] | None:
        if hasattr(self.loss, "set_epoch"):
            self.loss.set_epoch(epoch)
            return {"loss_reweighted": int(getattr(self.loss, "weight", None) is not None)}
        return None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        lm = batch.get("landmarks")
        logits = self.model(batch["image"]) if lm is None else self.model.forward_head(self.features(batch["image"], lm))
        target = batch["soft_label"] if self.soft else batch["label"]
        loss = self.loss(logits.float(), target)
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        return {"loss": loss, "acc": acc}
