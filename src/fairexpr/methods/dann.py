"""DANN with a CE | DI | DIFC classification loss (see :mod:`fairexpr.methods.uda`)."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..models import create_model
from ..losses.uda import domain_adversarial_loss
from ..models.uda_heads import DomainDiscriminator, WarmStartGradientReverseLayer
from .base import DataInfo, StepContext, register_method
from .uda import COMMON_DEFAULTS, UDAMethod, _model_args


@register_method("dann")
class DANN(UDAMethod):
    """Domain-adversarial training (Ganin et al., JMLR 2016):

    ``min_{F,C} max_D  L_cls(C∘F; S) + λ_t · ½ [BCE(D(R(F x_s)), 1) + BCE(D(R(F x_t)), 0)]``

    implemented as one minimisation through the gradient reversal layer ``R`` (warm-start coefficient).
    ``F`` = the backbone's ``forward_features``; the deployable model is the plain backbone + its head.
    """

    option_defaults = {**COMMON_DEFAULTS, "trade_off": 1.0, "disc_hidden": 1024, "grl_max_iters": 1000.0,
                       "grl_alpha": 1.0}

    def __init__(self, config: dict[str, Any], data_info: DataInfo) -> None:
        super().__init__(config, data_info)
        name, pretrained, kw = _model_args(config, data_info)
        if name in ("mcd_net", "afn_net"):
            raise ConfigError(f"model.name={name!r} is an MCD/SAFN network; DANN takes a plain backbone")
        self.model = create_model(name, num_classes=self.num_classes, pretrained=pretrained, **kw)
        o = self.opts
        self.discriminator = DomainDiscriminator(self.model.num_features, int(o["disc_hidden"]))
        self.grl = WarmStartGradientReverseLayer(alpha=float(o["grl_alpha"]), lo=0.0, hi=1.0,
                                                 max_iters=float(o["grl_max_iters"]), auto_step=False)

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        xs, ys, xt = batch["source"]["image"], batch["source"]["label"], batch["target"]["image"]
        n_s = xs.shape[0]
        f = self.features(torch.cat([xs, xt]), self.pair_landmarks(batch))
        loss_cls = self.classification_loss(self.model.forward_head(f[:n_s]), ys)
        coeff = self.grl.coeff
        d = self.discriminator(self.grl(f).float())
        loss_d, acc = domain_adversarial_loss(d[:n_s], d[n_s:])
        self.grl.step()
        loss = loss_cls + float(self.opts["trade_off"]) * loss_d
        return {"loss": loss, "loss_cls": loss_cls.detach(), "loss_domain": loss_d.detach(), "domain_acc": acc,
                "grl_coeff": coeff}

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "grl_iter": int(self.grl.iter_num)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.grl.iter_num = int(state.get("grl_iter", 0))



__all__ = ["DANN"]
