"""MCD with a CE | DI | DIFC classification loss (see :mod:`fairexpr.methods.uda`)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..models import create_model
from ..losses.uda import classifier_discrepancy, entropy
from .base import DataInfo, StepContext, register_method, strict_load
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
    # head: linear | normed (LDAM-DRW's cosine classifier, e.g. to start C1 and C2 from a normed-head source model);
    # init_noise: with model.init, C2 = C1 + init_noise * std(weight) * N(0, 1) per tensor, so the two classifiers
    # start from the source classifier but disagree (MCD's discrepancy needs two different classifiers)
    option_defaults = {**COMMON_DEFAULTS, "num_k": 4, "trade_off": 1.0, "entropy_weight": 0.01,
                       "head_hidden": 0, "dropout": 0.5, "head": "linear", "init_noise": 0.05}

    def __init__(self, config: dict[str, Any], data_info: DataInfo) -> None:
        super().__init__(config, data_info)
        o = self.opts
        if isinstance(o["num_k"], bool) or not isinstance(o["num_k"], int) or o["num_k"] < 1:
            raise ConfigError(f"method.num_k must be an integer >= 1, got {o['num_k']!r}")
        if o["head"] not in ("linear", "normed"):
            raise ConfigError(f"method.head must be linear or normed, got {o['head']!r}")
        if isinstance(o["init_noise"], bool) or not isinstance(o["init_noise"], (int, float)) or o["init_noise"] < 0:
            raise ConfigError(f"method.init_noise must be a number >= 0, got {o['init_noise']!r}")
        name, pretrained, kw = _model_args(config, data_info)
        self.model = create_model("mcd_net", num_classes=self.num_classes, pretrained=pretrained, backbone=name,
                                  backbone_kwargs=kw, head_hidden=int(o["head_hidden"]), dropout=float(o["dropout"]),
                                  head=o["head"], logit_scale=float(o["s"]) if o["head"] == "normed" else 1.0)

    def init_from(self, state: dict[str, torch.Tensor], sidecar: dict[str, Any], source: str) -> list[str]:
        """``model.init`` for MCD: ``F`` = the source network (loaded strictly; its own classifier stays unused),
        ``C1`` = the source classifier, ``C2`` = the source classifier plus noise (``method.init_noise`` times each
        tensor's standard deviation, drawn from the run's seeded generator)."""
        from ..models.heads import NormedLinear

        if int(self.opts["head_hidden"]):
            raise ConfigError("model.init: MCD's classifiers start from the source classifier only with "
                              f"method.head_hidden=0 (got {self.opts['head_hidden']})")
        backbone = self.model.backbone
        strict_load(backbone, state, source, "MCD's backbone F")
        src_head = backbone.get_classifier()
        last1, last2 = self.model.c1.net[-1], self.model.c2.net[-1]
        want = "normed" if isinstance(src_head, NormedLinear) else "linear" if isinstance(src_head, nn.Linear) else None
        if want is None:
            raise ConfigError(f"model.init: the source classifier of {source} is a {type(src_head).__name__}; MCD's "
                              "classifiers can start from a linear or normed (cosine) classifier only")
        if want != self.opts["head"]:
            raise ConfigError(f"model.init: {source} has a {want} classifier; set method.head={want} so C1 and C2 can "
                              "start from it (fairexpr adapt --init sets it)")
        sd = src_head.state_dict()
        last1.load_state_dict(sd)
        # the source's forward_head must be its classifier and nothing else (dropout aside), or C1 is not the source
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            f = torch.randn(4, int(self.model.num_features), generator=torch.Generator().manual_seed(0))
            same = torch.allclose(backbone.forward_head(f), self.model.c1(f), atol=1e-5, rtol=1e-4)
        self.model.train(was)
        if not same:
            raise ConfigError(f"model.init: the classifier of {source} ({type(backbone).__name__}.forward_head) does more "
                              "than its last layer; MCD's classifiers cannot reproduce it")
        noise = float(self.opts["init_noise"])
        last2.load_state_dict({k: v + noise * v.float().std() * torch.randn_like(v) if v.numel() > 1 else v.clone()
                               for k, v in sd.items()})
        return [f"F from {source} ({len(state)} tensors, strict)",
                f"C1 = its {want} classifier, C2 = the same + {noise:g} x std noise"]

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
        p1_t, p2_t = self.model.probs(z1[n_s:]), self.model.probs(z2[n_s:])
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
                disc = classifier_discrepancy(self.model.probs(z1_t), self.model.probs(z2_t))
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
