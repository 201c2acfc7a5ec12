"""GReFEL training recipe (Wasi et al. 2024): reliability balancing + anchor/center losses (Eq. 23).

The deployable network ``self.model`` is a reliability-balanced :class:`~fairexpr.models.FERModel`
whose ``forward`` returns ``log L_final``:

* ``model.name`` = ``grefel`` / ``grefel_small`` / ``reliability_balanced``: built as named, with the
  method's head options (``num_anchors``, ``use_anchors``, ``use_mhsa``, ``delta``) added to the
  model kwargs;
* any other registered backbone ``B``: built as ``reliability_balanced(backbone=B, backbone_kwargs=...)``
  so the RB head sits on ``B.forward_features``; ``model.kwargs`` keys that are reliability-head options
  (``anchor_init``, ``anchor_init_std``, ``dropout``, ``hidden``, ...) go to the head, the rest to ``B``.

``self.model_spec`` (``{"name", "kwargs"}``) is what the checkpoint sidecar must record for
:func:`fairexpr.checkpoint.load_model` to rebuild the network.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ConfigError
from ..losses.grefel import GReFELLoss
from ..models import create_model
from .base import DataInfo, Method, StepContext, register_method

RB_MODELS = ("grefel", "grefel_small", "reliability_balanced")


@register_method("grefel")
class GReFELMethod(Method):
    #: some parameters of the reliability head (anchors / MHSA branches) get no gradient in a step: DDP must look
    #: for them (``ddp`` becomes ``ddp_find_unused_parameters_true``)
    ddp_unused_parameters = True
    #: the reliability head (primary classifier, anchors, MHSA branches) trains at ``optim.lr * optim.head_lr_mult``,
    #: the backbone at ``optim.lr``: a pretrained backbone without BatchNorm (dlib's face ResNet) is stable only at a
    #: small step size that leaves a freshly initialised head nearly still
    uses_head_lr_mult = True
    """GReFEL: ``L = λ_cls L_cls(L_final, y) + λ_a L_a(anchors) + λ_c L_c(e, anchors, y)``."""

    option_defaults: dict[str, Any] = {
        "num_anchors": 10,  # K anchors per class (paper Table 6: 8-10 best)
        "use_anchors": True,  # geometric correction t_g + anchor/center losses
        "use_mhsa": True,  # attentive correction t_a
        "lambda_cls": 1.0,
        "lambda_anchor": 1.0,
        "lambda_center": 1.0,
        "delta": 1.0,  # similarity temperature of Eq. 14
        "label_smoothing": 0.0,  # paper Table 8
        "anchor_pairs": "all",  # Eq. 21 over all anchor pairs | "inter_class"
        "anchor_margin": None,  # null = Eq. 21 (unbounded) | m > 0: pair distances count up to m (docs/methods.md)
    }

    def __init__(self, config: dict[str, Any], data_info: DataInfo) -> None:
        super().__init__()
        opts = self.resolve_options(config.get("method", {}))
        self.options = opts
        mcfg = config.get("model", {})
        name = mcfg.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"model.name: expected a registered model name, got {name!r}")
        kwargs = dict(mcfg.get("kwargs") or {})
        head = {"num_anchors": opts["num_anchors"], "use_anchors": opts["use_anchors"],
                "use_mhsa": opts["use_mhsa"], "delta": opts["delta"]}
        if name in RB_MODELS and name != "reliability_balanced":
            if data_info.in_chans != 3:
                kwargs.setdefault("in_chans", data_info.in_chans)
            spec_name, spec_kwargs = name, {**kwargs, **head}
        elif name == "reliability_balanced":
            spec_name, spec_kwargs = name, {**kwargs, **head}
        else:  # model.kwargs that name reliability-head options (anchor_init, dropout, ...) go to the head
            from ..models.reliability import HEAD_OPTIONS

            head_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in HEAD_OPTIONS}
            clash = sorted(set(head_kw) & set(head))
            if clash:
                raise ConfigError(f"model.kwargs.{clash[0]}: set it as method.{clash[0]} (the grefel method owns it)")
            if data_info.in_chans != 3:
                kwargs.setdefault("in_chans", data_info.in_chans)
            spec_name, spec_kwargs = "reliability_balanced", {"backbone": name, "backbone_kwargs": kwargs, **head_kw,
                                                              **head}
        self.model = create_model(spec_name, num_classes=data_info.num_classes, pretrained=mcfg.get("pretrained"),
                                  **spec_kwargs)
        self.model_spec = {"name": spec_name, "kwargs": spec_kwargs}
        self.model.registry_name = spec_name  # type: ignore[attr-defined]  (read by the engine for the sidecar)
        self.model.build_kwargs = spec_kwargs  # type: ignore[attr-defined]
        self.head_lr_mult = float((config.get("optim") or {}).get("head_lr_mult", 1.0))
        self.criterion = GReFELLoss(opts["lambda_cls"], opts["lambda_anchor"], opts["lambda_center"],
                                    opts["label_smoothing"], opts["anchor_pairs"],
                                    anchor_margin=opts["anchor_margin"])

    @classmethod
    def resolve_options(cls, method_cfg: dict[str, Any]) -> dict[str, Any]:
        """``option_defaults`` overridden by ``config['method']``; unknown keys and bad values raise."""
        opts = dict(cls.option_defaults)
        for k, v in method_cfg.items():
            if k == "name":
                continue
            if k not in opts:
                raise ConfigError(f"method.{k}: unknown option for method 'grefel'; known: {', '.join(opts)}")
            opts[k] = v
        if not isinstance(opts["num_anchors"], int) or isinstance(opts["num_anchors"], bool) or opts["num_anchors"] < 1:
            raise ConfigError(f"method.num_anchors: expected a positive integer, got {opts['num_anchors']!r}")
        for k in ("lambda_cls", "lambda_anchor", "lambda_center"):
            if not isinstance(opts[k], (int, float)) or isinstance(opts[k], bool) or opts[k] < 0:
                raise ConfigError(f"method.{k}: expected a number >= 0, got {opts[k]!r}")
        if not isinstance(opts["delta"], (int, float)) or opts["delta"] <= 0:
            raise ConfigError(f"method.delta: expected a number > 0, got {opts['delta']!r}")
        if not isinstance(opts["label_smoothing"], (int, float)) or not 0 <= opts["label_smoothing"] < 1:
            raise ConfigError(f"method.label_smoothing: expected a number in [0, 1), got {opts['label_smoothing']!r}")
        if opts["anchor_pairs"] not in ("all", "inter_class"):
            raise ConfigError(f"method.anchor_pairs: expected 'all' or 'inter_class', got {opts['anchor_pairs']!r}")
        m = opts["anchor_margin"]
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m <= 0):
            raise ConfigError(f"method.anchor_margin: expected null or a number > 0, got {m!r}")
        for k in ("use_anchors", "use_mhsa"):
            if not isinstance(opts[k], bool):
                raise ConfigError(f"method.{k}: expected true/false, got {opts[k]!r}")
        return opts

    def parameter_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """The backbone at ``base_lr``; the reliability head (``model.rb_head``) at ``base_lr * optim.head_lr_mult``
        (one group when the multiplier is 1)."""
        head = [p for p in self.model.rb_head.parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        slow = [p for p in self.parameters() if p.requires_grad and id(p) not in head_ids]
        if self.head_lr_mult == 1.0:
            return [{"params": slow + head, "lr": base_lr}]
        return [{"params": slow, "lr": base_lr, "name": "backbone"},
                {"params": head, "lr": base_lr * self.head_lr_mult, "name": "rb_head"}]

    def _anchors(self) -> torch.Tensor | None:
        anchors = self.model.rb_head.anchors
        return anchors.anchors if anchors is not None else None

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        head = self.model.rb_head
        if head is None:
            raise ConfigError("method 'grefel' needs a reliability head: the model was built without one")
        features = self.model.forward_features(batch["image"])
        if head.anchors is not None and head.anchors.needs_init:  # model.kwargs.anchor_init: data
            head.anchors.initialize_from(features, batch["label"])
        out = head(features)
        losses = self.criterion(out, batch["label"], self._anchors(), batch.get("soft_label"))
        with torch.no_grad():
            losses["acc"] = (out["final"].argmax(1) == batch["label"]).float().mean()
            losses["acc_primary"] = (out["l"].argmax(1) == batch["label"]).float().mean()
        return losses

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model.forward_reliability(images)
        return {"logits": out["final"].clamp_min(1e-12).log(), "probs": out["final"], "embedding": out["embedding"]}
