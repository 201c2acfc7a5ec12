"""MCD with a CE | DI | DIFC classification loss (see :mod:`fairexpr.methods.uda`)."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import ConfigError
from ..models import create_model
from ..losses.uda import classifier_discrepancy, entropy
from .base import DataInfo, StepContext, register_method
from .uda import COMMON_DEFAULTS, UDAMethod, _model_args


@register_method("mcd")
class MCD(UDAMethod):
    """Maximum classifier discrepancy (Saito et al., CVPR 2018; DIFC Eq. 7), three steps per batch:

    * A: ``min_{F,C1,C2} L_cls(C1∘F; S) + L_cls(C2∘F; S) + w_H (H(p1_t) + H(p2_t))``
    * B: ``min_{C1,C2} L_cls(S) − λ d(p1_t, p2_t) + w_H (H(p1_t) + H(p2_t))`` with ``F`` fixed
    * C: ``min_F λ d(p1_t, p2_t)`` with ``C1, C2`` fixed, repeated ``num_k`` times (target batch only,
      as in MCD_DA)

    ``d`` = :func:`~fairexpr.losses.uda.classifier_discrepancy`, ``H`` = mean entropy. Two optimizers:
    ``F`` (backbone) and ``C1 + C2``. ``L_cls`` is CE, DI or DIFC. Prediction = averaged softmax (Eq. 8).
    """

    automatic_optimization = False
    option_defaults = {**COMMON_DEFAULTS, "num_k": 4, "trade_off": 1.0, "entropy_weight": 0.01,
                       "head_hidden": 0, "dropout": 0.5}

    def __init__(self, config: dict[str, Any], data_info: DataInfo) -> None:
        super().__init__(config, data_info)
        o = self.opts
        if isinstance(o["num_k"], bool) or not isinstance(o["num_k"], int) or o["num_k"] < 1:
            raise ConfigError(f"method.num_k must be an integer >= 1, got {o['num_k']!r}")
        name, pretrained, kw = _model_args(config, data_info)
        self.model = create_model("mcd_net", num_classes=self.num_classes, pretrained=pretrained, backbone=name,
                                  backbone_kwargs=kw, head_hidden=int(o["head_hidden"]), dropout=float(o["dropout"]))

    def configure_optimizers(self, build_optimizer: Callable[..., torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
        lr = build_optimizer.base_lr  # type: ignore[attr-defined]
        m = self.model
        opt_g = build_optimizer([{"params": [p for p in m.backbone.parameters() if p.requires_grad], "lr": lr}])
        opt_f = build_optimizer([{"params": list(m.c1.parameters()) + list(m.c2.parameters()), "lr": lr}])
        self._opts_gf = (opt_g, opt_f)
        return [opt_g, opt_f]

    def _optimizers(self, ctx: StepContext) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        if len(ctx.optimizers) >= 2:
            return ctx.optimizers[0], ctx.optimizers[1]
        return self._opts_gf

    def _heads(self, f: torch.Tensor, n_s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        z1, z2 = self.model.forward_heads(f)
        p1_t, p2_t = z1[n_s:].float().softmax(-1), z2[n_s:].float().softmax(-1)
        return z1[:n_s], z2[:n_s], p1_t, p2_t

    def _loss_ab(self, x: torch.Tensor, ys: torch.Tensor, n_s: int, features_grad: bool,
                 lm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Source classification loss of both classifiers, target entropy term and discrepancy."""
        if features_grad:
            f = self.features(x, lm)
        else:
            with torch.no_grad():
                f = self.features(x, lm)
        z1_s, z2_s, p1_t, p2_t = self._heads(f, n_s)
        loss_cls = self.classification_loss(z1_s, ys) + self.classification_loss(z2_s, ys)
        ent = float(self.opts["entropy_weight"]) * (entropy(p1_t) + entropy(p2_t))
        return loss_cls, ent, classifier_discrepancy(p1_t, p2_t)

    def step_a(self, x: torch.Tensor, ys: torch.Tensor, n_s: int, ctx: StepContext,
               lm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Step A: update F, C1, C2 on ``L_cls(S) + w_H H(T)``."""
        opt_g, opt_f = self._optimizers(ctx)
        opt_g.zero_grad(set_to_none=True)
        opt_f.zero_grad(set_to_none=True)
        loss_cls, ent, _ = self._loss_ab(x, ys, n_s, features_grad=True, lm=lm)
        loss = loss_cls + ent
        ctx.backward(loss)
        ctx.step_optimizer(opt_g)
        ctx.step_optimizer(opt_f)
        return loss.detach(), loss_cls.detach()

    def step_b(self, x: torch.Tensor, ys: torch.Tensor, n_s: int, ctx: StepContext,
               lm: torch.Tensor | None = None) -> torch.Tensor:
        """Step B: ``F`` fixed (no gradient reaches it), update C1, C2 on ``L_cls(S) + w_H H(T) − λ d(T)``."""
        _, opt_f = self._optimizers(ctx)
        opt_f.zero_grad(set_to_none=True)
        loss_cls, ent, disc = self._loss_ab(x, ys, n_s, features_grad=False, lm=lm)
        ctx.backward(loss_cls + ent - float(self.opts["trade_off"]) * disc)
        ctx.step_optimizer(opt_f)
        return disc.detach()

    def step_c(self, xt: torch.Tensor, ctx: StepContext, lm_t: torch.Tensor | None = None) -> torch.Tensor:
        """Step C: C1, C2 fixed (their parameters get no gradient), update F on ``λ d(T)``, ``num_k`` times."""
        opt_g, _ = self._optimizers(ctx)
        lam = float(self.opts["trade_off"])
        head_params = list(self.model.c1.parameters()) + list(self.model.c2.parameters())
        flags = [p.requires_grad for p in head_params]
        for p in head_params:
            p.requires_grad_(False)
        disc = torch.zeros(())
        try:
            for _ in range(int(self.opts["num_k"])):
                opt_g.zero_grad(set_to_none=True)
                z1_t, z2_t = self.model.forward_heads(self.features(xt, lm_t))
                disc = classifier_discrepancy(z1_t.float().softmax(-1), z2_t.float().softmax(-1))
                ctx.backward(lam * disc)
                ctx.step_optimizer(opt_g)
        finally:
            for p, flag in zip(head_params, flags):
                p.requires_grad_(flag)
        return disc.detach()

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        xs, ys, xt = batch["source"]["image"], batch["source"]["label"], batch["target"]["image"]
        x = torch.cat([xs, xt])
        lm = self.pair_landmarks(batch)
        loss_a, loss_cls = self.step_a(x, ys, xs.shape[0], ctx, lm)
        disc_b = self.step_b(x, ys, xs.shape[0], ctx, lm)
        disc_c = self.step_c(xt, ctx, None if lm is None else lm[xs.shape[0]:])
        return {"loss": loss_a, "loss_cls": loss_cls, "discrepancy_b": disc_b, "discrepancy_c": disc_c}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Eq. 8: ``p = ½ (softmax(C1 F x) + softmax(C2 F x))``; ``logits = log p``."""
        f = self.features(images, landmarks)
        p = self.model.averaged_probs(f)
        return {"logits": p.clamp_min(1e-12).log(), "probs": p, "embedding": f}



__all__ = ["MCD"]
