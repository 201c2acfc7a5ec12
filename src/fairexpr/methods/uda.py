"""Unsupervised domain adaptation with a selectable classification loss: CE | DI | DIFC
(Sreenivas et al., ECCVW 2022). This module holds the shared part (:class:`UDAMethod`); the methods are
``methods/mcd.py`` (``mcd``), ``methods/dann.py`` (``dann``) and ``methods/afn.py`` (``safn``).

Schedule (DIFC Algorithm 1), 0-based epochs ``e``:

* ``cls_loss: ce``   — cross-entropy throughout;
* ``cls_loss: di``   — the DI (LDAM) loss with source-count margins throughout;
* ``cls_loss: difc`` — DI for ``e < t1_epochs`` (phase 1), then DIFC (phase 2): at the start of epoch
  ``t1_epochs`` and every ``confusion_interval`` epochs after it, the current model predicts the whole
  (unlabelled) target training set (``engine.predict_dataset("target")``; for MCD the averaged softmax of
  Eq. 8), the confusion scores (Eqs. 4–5) order the classes and the margins become
  ``Δ'_{C[j]} = Δ_{C[j]} + ε / 2^{j−1}`` (Eq. 6).

Deferred re-weighting (``drw_epoch``: 0-based epoch, ``null`` = off) switches effective-number weights
(``drw_beta``) on in the classification loss, for all three ``cls_loss`` choices.

Defaults and where they come from (written down because the paper is silent on them):

* ``max_margin = 0.3`` and ``s = 1`` with plain linear classifiers — the DIFC paper (0.3) and the authors'
  code (``s = 1``, no normalized classifier). LDAM-DRW's ``s = 30`` needs cosine logits; we do not
  default to it because MCD's discrepancy and DANN/AFN act on ordinary logits/features.
* MCD: ``num_k = 4`` (MCD_DA and Transfer-Learning-Library; the DIFC authors' code uses 2),
  ``trade_off = 1`` (weight of the discrepancy), ``entropy_weight = 0.01`` on the target predictions in
  steps A and B (Transfer-Learning-Library's example). Source and target are forwarded as one
  concatenated batch (shared BatchNorm statistics), as in TLlib.
* DANN: ``trade_off = 1``; warm-start GRL ``λ(i) = 2/(1 + exp(−α i / max_iters)) − 1`` with
  ``α = 1, max_iters = grl_max_iters = 1000`` (TLlib), ``i`` = training steps taken (checkpointed).
* SAFN: ``delta_r = 1.0``, ``afn_weight = 0.05`` (DIFC authors' setup), ``entropy_weight = 0`` (plain
  SAFN; set e.g. 0.1 for SAFN+ENT).
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..losses.ce import CrossEntropyLoss
from ..losses.difc import DIFCLoss
from ..losses.ldam import LDAMLoss
from ..losses.weights import DRWSchedule
from .base import DataInfo, Method

CLS_LOSSES = ("ce", "di", "difc")

COMMON_DEFAULTS: dict[str, Any] = {
    "cls_loss": "difc",  # ce | di | difc
    "t1_epochs": 20,  # DI phase length (Algorithm 1's T1); DIFC from this 0-based epoch on
    "epsilon": 0.02,  # Eq. 6
    "max_margin": 0.3,  # largest DI margin (rarest source class)
    "s": 1.0,  # logit scale of the DI/DIFC loss
    "drw_epoch": None,  # 0-based epoch switching deferred re-weighting on; null = never
    "drw_beta": 0.9999,  # effective-number β of the DRW weights
    "confusion_interval": 1,  # recompute DIFC margins every this many epochs in phase 2
}


def _opts(config: dict[str, Any], defaults: dict[str, Any], method: str) -> dict[str, Any]:
    given = {k: v for k, v in (config.get("method") or {}).items() if k != "name"}
    unknown = set(given) - set(defaults)
    if unknown:
        raise ConfigError(f"method.{sorted(unknown)[0]}: unknown option for method {method!r}; "
                          f"known: {', '.join(sorted(defaults))}")
    o = {**defaults, **given}
    if o["cls_loss"] not in CLS_LOSSES:
        raise ConfigError(f"method.cls_loss must be one of {'|'.join(CLS_LOSSES)}, got {o['cls_loss']!r}")
    for key in ("t1_epochs", "confusion_interval"):
        v = o[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "confusion_interval" else 0):
            raise ConfigError(f"method.{key} must be an integer >= {1 if key == 'confusion_interval' else 0}, got {v!r}")
    if o["drw_epoch"] is not None and (isinstance(o["drw_epoch"], bool) or not isinstance(o["drw_epoch"], int) or o["drw_epoch"] < 0):
        raise ConfigError(f"method.drw_epoch must be null or an integer >= 0 (0-based epoch), got {o['drw_epoch']!r}")
    for key in ("epsilon",):
        if not isinstance(o[key], (int, float)) or o[key] < 0:
            raise ConfigError(f"method.{key} must be a number >= 0, got {o[key]!r}")
    for key in ("max_margin", "s"):
        if not isinstance(o[key], (int, float)) or not o[key] > 0:
            raise ConfigError(f"method.{key} must be a number > 0, got {o[key]!r}")
    return o


def _model_args(config: dict[str, Any], info: DataInfo) -> tuple[str, Any, dict[str, Any]]:
    """``(backbone name, pretrained path, kwargs)`` from ``config["model"]``; ``in_chans`` defaults to the data's."""
    m = config.get("model") or {}
    if "name" not in m:
        raise ConfigError("model.name: missing; name a registered backbone (see `fairexpr list-models`)")
    kw = dict(m.get("kwargs") or {})
    kw.setdefault("in_chans", info.in_chans)
    return m["name"], m.get("pretrained"), kw


def _finite_list(a: np.ndarray) -> list[float | None | str]:
    out: list[float | None | str] = []
    for v in np.asarray(a, dtype=np.float64).tolist():
        out.append(None if math.isnan(v) else ("inf" if math.isinf(v) else float(v)))
    return out


class UDAMethod(Method):
    """Shared part of MCD/DANN/SAFN: the CE | DI | DIFC classification loss, its phases and DRW."""

    needs_target = True
    accepts_landmarks = True
    option_defaults: dict[str, Any] = dict(COMMON_DEFAULTS)

    def __init__(self, config: dict[str, Any], data_info: DataInfo) -> None:
        super().__init__()
        name = getattr(type(self), "method_name", type(self).__name__)
        self.opts = _opts(config, type(self).option_defaults, name)
        self.num_classes = data_info.num_classes
        counts = list(data_info.class_counts)
        o = self.opts
        if o["cls_loss"] != "ce" and any(c == 0 for c in counts):
            empty = [c for c, n in zip(data_info.classes, counts) if n == 0]
            raise ConfigError(f"method.cls_loss={o['cls_loss']!r} needs source samples of every class; "
                              f"the source training split has none of {empty} (use cls_loss=ce or another split)")
        self.cls_loss: nn.Module
        if o["cls_loss"] == "ce":
            self.cls_loss = CrossEntropyLoss(num_classes=self.num_classes)
        elif o["cls_loss"] == "di":
            self.cls_loss = LDAMLoss(counts, max_m=float(o["max_margin"]), s=float(o["s"]))
        else:
            self.cls_loss = DIFCLoss(counts, max_m=float(o["max_margin"]), s=float(o["s"]), epsilon=float(o["epsilon"]))
        if o["drw_epoch"] is not None:
            self.cls_loss.drw = DRWSchedule(int(o["drw_epoch"]), rule="effective", beta=float(o["drw_beta"]),
                                            class_counts=counts)
        self.phase = 1
        self.confusion_order: list[int] | None = None
        self.confusion_scores: list[float | None | str] | None = None

    # ------------------------------------------------------------------ DIFC schedule
    def _phase_of(self, epoch: int) -> int:
        return 2 if self.opts["cls_loss"] == "difc" and epoch >= int(self.opts["t1_epochs"]) else 1

    def on_train_epoch_start(self, epoch: int, engine: Any) -> dict[str, Any] | None:
        """DRW switch; DIFC phase switch at ``t1_epochs`` and margin recomputation (Eqs. 4–6)."""
        self.cls_loss.set_epoch(epoch)
        log: dict[str, Any] = {}
        self.phase = self._phase_of(epoch)
        if self.opts["cls_loss"] == "difc":
            log["difc_phase"] = self.phase
            t1, every = int(self.opts["t1_epochs"]), int(self.opts["confusion_interval"])
            if self.phase == 2 and ((epoch - t1) % every == 0 or self.confusion_order is None):
                probs = engine.predict_dataset("target")["probs"]
                assert isinstance(self.cls_loss, DIFCLoss)
                scores, order, _ = self.cls_loss.update_from_probs(probs)
                self.confusion_order = [int(c) for c in order]
                self.confusion_scores = _finite_list(scores)
                log["difc_updated"] = 1
            log["difc_order"] = json.dumps(self.confusion_order)
        if isinstance(self.cls_loss, LDAMLoss):
            log["margins"] = json.dumps([round(float(m), 6) for m in self.cls_loss.margins.tolist()])
        return log

    @staticmethod
    def pair_landmarks(batch: dict[str, Any]) -> torch.Tensor | None:
        """Source-then-target landmarks matching ``torch.cat([xs, xt])``, or None unless both have them."""
        ls, lt = batch["source"].get("landmarks"), batch["target"].get("landmarks")
        return torch.cat([ls, lt]) if ls is not None and lt is not None else None

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.cls_loss(logits.float(), labels)

    def extra_state(self) -> dict[str, Any]:
        st: dict[str, Any] = {"phase": self.phase, "confusion_order": self.confusion_order,
                              "confusion_scores": self.confusion_scores}
        if isinstance(self.cls_loss, LDAMLoss):
            st["margins"] = [float(m) for m in self.cls_loss.margins.tolist()]
        return st

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.phase = int(state.get("phase", 1))
        order = state.get("confusion_order")
        self.confusion_order = [int(c) for c in order] if order is not None else None
        self.confusion_scores = state.get("confusion_scores")
        if isinstance(self.cls_loss, LDAMLoss) and state.get("margins") is not None:
            self.cls_loss.set_margins(state["margins"])
        if isinstance(self.cls_loss, DIFCLoss):
            self.cls_loss.order = self.confusion_order


__all__ = ["CLS_LOSSES", "COMMON_DEFAULTS", "UDAMethod"]
