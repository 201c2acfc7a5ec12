"""SAFN/AFN with a CE | DI | DIFC classification loss (see :mod:`fairexpr.methods.uda`)."""
from __future__ import annotations

from typing import Any

import torch

from ..models import create_model
from ..losses.uda import AdaptiveFeatureNorm, entropy
from .base import DataInfo, StepContext, register_method, strict_load
from .uda import COMMON_DEFAULTS, UDAMethod, _model_args


@register_method("safn")
class SAFN(UDAMethod):
    """Stepwise adaptive feature norm (Xu et al., ICCV 2019):

    ``L = L_cls(S) + w_norm (L_norm(f_s) + L_norm(f_t)) + w_H H(p_t)`` with
    ``L_norm(f) = mean_i (‖f_i‖ − (‖f_i‖^{detached} + Δr))²`` on the AFN bottleneck features.
    """
    #: the AFN bottleneck's parameters are not all used in every step under DDP
    ddp_unused_parameters = True
    #: the AFN bottleneck and the classifier train at ``optim.lr * optim.head_lr_mult`` (Transfer-Learning-Library's
    #: SAFN: backbone at 0.1x the bottleneck/head lr); needed to start a fresh head on a converged ``model.init``
    #: backbone without moving it
    uses_head_lr_mult = True

    option_defaults = {**COMMON_DEFAULTS, "delta_r": 1.0, "afn_weight": 0.05, "entropy_weight": 0.0,
                       "bottleneck_dim": 1000, "dropout": 0.5}

    def __init__(self, config: dict[str, Any], data_info: DataInfo) -> None:
        super().__init__(config, data_info)
        name, pretrained, kw = _model_args(config, data_info)
        o = self.opts
        self.model = create_model("afn_net", num_classes=self.num_classes, pretrained=pretrained, backbone=name,
                                  backbone_kwargs=kw, bottleneck_dim=int(o["bottleneck_dim"]), dropout=float(o["dropout"]))
        self.afn = AdaptiveFeatureNorm(float(o["delta_r"]))
        self.head_lr_mult = float((config.get("optim") or {}).get("head_lr_mult", 1.0))

    def init_from(self, state: dict[str, torch.Tensor], sidecar: dict[str, Any], source: str) -> list[str]:
        """``model.init`` for SAFN: the backbone = the source network (strict); the AFN bottleneck and the classifier
        on it stay freshly initialised (the source classifier acts on the backbone's features, not on the
        bottleneck's, so it has no place to go)."""
        strict_load(self.model.backbone, state, source, "SAFN's backbone")
        return [f"backbone from {source} ({len(state)} tensors, strict)",
                "AFN bottleneck and classifier freshly initialised (the source classifier does not act on the bottleneck)"]

    def parameter_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """The backbone at ``base_lr``; the AFN bottleneck and the classifier at ``base_lr * optim.head_lr_mult``."""
        mult = self.head_lr_mult
        head = [*self.model.bottleneck.parameters(), *self.model.fc.parameters()]
        head_ids = {id(p) for p in head}
        slow = [p for p in self.parameters() if p.requires_grad and id(p) not in head_ids]
        return [{"params": slow, "lr": base_lr}, {"params": [p for p in head if p.requires_grad], "lr": base_lr * mult}]

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        xs, ys, xt = batch["source"]["image"], batch["source"]["label"], batch["target"]["image"]
        n_s = xs.shape[0]
        f = self.features(torch.cat([xs, xt]), self.pair_landmarks(batch))
        logits = self.model.forward_head(f)
        loss_cls = self.classification_loss(logits[:n_s], ys)
        f32 = f.float()
        loss_norm = self.afn(f32[:n_s]) + self.afn(f32[n_s:])
        loss = loss_cls + float(self.opts["afn_weight"]) * loss_norm
        out = {"loss_cls": loss_cls.detach(), "loss_norm": loss_norm.detach(),
               "feature_norm": f32.detach().norm(dim=1).mean()}
        if float(self.opts["entropy_weight"]) > 0:
            h = entropy(logits[n_s:].float().softmax(-1))
            loss = loss + float(self.opts["entropy_weight"]) * h
            out["entropy"] = h.detach()
        out["loss"] = loss
        return out



__all__ = ["SAFN"]
