"""Losses: every loss is a plain ``nn.Module`` with its equation in the docstring.

Build one by name from a config (``loss: {name: ldam, kwargs: {max_m: 0.5, s: 30, drw_epoch: 160}}``)
and the training class counts::

    from fairexpr.losses import build_loss
    crit = build_loss({"name": "ldam", "kwargs": {"max_m": 0.5, "s": 30.0}}, class_counts=[4000, 400, ...])
    crit = build_loss("weighted_ce", class_counts, rule="effective", beta=0.999)

Registered names (``list_losses()``): ``ce``, ``soft_ce``, ``weighted_ce``, ``ldam``, ``focal``,
``logit_adjusted``, ``balanced_softmax``. All take ``(logits [N, K], target [N])`` (``soft_ce`` also
``[N, K]`` distributions). Options shared by the re-weightable ones (all but ``soft_ce``):

* ``weight`` (``alpha`` for ``focal``) — a per-class list, or a rule name (``inverse`` | ``sqrt`` |
  ``effective``) computed from the class counts (``weight_beta`` sets β for ``effective``);
* ``drw_epoch`` (0-based), ``drw_rule`` (default ``effective``), ``drw_beta`` (0.9999), ``drw_manual`` —
  deferred re-weighting: the built loss carries a :class:`DRWSchedule` as ``loss.drw``; the training
  method calls ``loss.set_epoch(epoch)`` at every epoch start (a no-op on losses without a schedule).

Not in the registry because its call signature differs: :class:`MixedUncertaintyLoss`
(``(logits, y_a, y_b)``, CUCN/RUL) — build it directly, together with :func:`uncertainty_mix`.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

from torch import nn

from ..errors import ConfigError
from ._common import CountsLike, ReweightableLoss, as_counts
from .ce import CrossEntropyLoss, SoftTargetCrossEntropy, WeightedCrossEntropyLoss
from .confidence import entropy_confidence, entropy_confidence_from_logits, normalized_entropy
from .focal import FocalLoss
from .ldam import LDAMLoss, margins_from_counts
from .logit_adjust import BalancedSoftmaxLoss, LogitAdjustedLoss
from .rul import MixedUncertaintyLoss, uncertainty_mix
from .uda import AdaptiveFeatureNorm, classifier_discrepancy, domain_adversarial_loss
from .weights import WEIGHT_RULES, DRWSchedule, class_weights, effective_number_weights, \
    inverse_frequency_weights, sqrt_inverse_weights

# name -> (class, needs class_counts, name of its per-class weight argument or None)
_LOSSES: dict[str, tuple[type[nn.Module], bool, str | None]] = {
    "ce": (CrossEntropyLoss, False, "weight"),
    "soft_ce": (SoftTargetCrossEntropy, False, None),
    "weighted_ce": (WeightedCrossEntropyLoss, True, None),
    "ldam": (LDAMLoss, True, "weight"),
    "focal": (FocalLoss, False, "alpha"),
    "logit_adjusted": (LogitAdjustedLoss, True, "weight"),
    "balanced_softmax": (BalancedSoftmaxLoss, True, "weight"),
}
_DRW_KEYS = ("drw_epoch", "drw_rule", "drw_beta", "drw_manual")
_INTERNAL = ("self", "class_counts", "num_classes", "class_names")


def list_losses() -> list[str]:
    """Names accepted by :func:`build_loss`."""
    return sorted(_LOSSES)


def _options(cls: type[nn.Module]) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p not in _INTERNAL]


def build_loss(
    name: str | Mapping[str, Any],
    class_counts: CountsLike | None = None,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    **kw: Any,
) -> nn.Module:
    """Build a registered loss.

    Args:
        name: a registered name, or a config dict ``{"name": ..., "kwargs": {...}}`` (options may also
            sit next to ``name``); explicit ``**kw`` override the dict's options.
        class_counts: per-class counts of the training split (required by ``weighted_ce``, ``ldam``,
            ``logit_adjusted``, ``balanced_softmax`` and by rule-name weights / DRW).
        num_classes: when given, ``class_counts`` (and weight vectors) must have this length.
        class_names: used only to name a class in error messages.

    Raises:
        ConfigError: unknown name or option, or bad counts/weights (the message names the field).
    """
    if isinstance(name, Mapping):
        cfg = dict(name)
        if "name" not in cfg:
            raise ConfigError(f"loss: the loss config needs a 'name' (one of {', '.join(list_losses())})")
        opts = dict(cfg.pop("kwargs", None) or {})
        opts.update(cfg)
        loss_name = opts.pop("name")
        opts.update(kw)
    else:
        loss_name, opts = name, dict(kw)
    if loss_name not in _LOSSES:
        raise ConfigError(f"loss.name: unknown loss {loss_name!r}; known: {', '.join(list_losses())}")
    cls, needs_counts, weight_arg = _LOSSES[loss_name]

    allowed = _options(cls)
    drw = {k: opts.pop(k) for k in _DRW_KEYS if k in opts}
    weight_beta = opts.pop("weight_beta", 0.9999) if weight_arg else 0.9999
    if weight_arg is None:
        opts.update(drw)  # DRW keys are unknown options for losses without per-class weights
        drw = {}
        extra: list[str] = []
    else:
        extra = [*_DRW_KEYS, "weight_beta"]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(
            f"loss.kwargs: unknown option(s) {', '.join(map(repr, unknown))} for loss {loss_name!r}; "
            f"expected any of {', '.join(allowed + extra)}"
        )

    counts = None
    if class_counts is not None:
        counts = as_counts(class_counts, f"loss {loss_name!r}", allow_zero=True, num_classes=num_classes,
                           class_names=class_names)
        num_classes = counts.numel()

    if weight_arg and isinstance(opts.get(weight_arg), str):
        rule = opts[weight_arg]
        if rule not in WEIGHT_RULES or rule == "manual":
            raise ConfigError(f"loss.kwargs.{weight_arg}: {rule!r}; expected a list or one of none, inverse, sqrt, effective")
        if rule != "none" and counts is None:
            raise ConfigError(f"loss.kwargs.{weight_arg}={rule!r} needs the training class counts")
        opts[weight_arg] = class_weights(rule, counts, beta=weight_beta)

    params = inspect.signature(cls.__init__).parameters
    if needs_counts:
        if counts is None:
            raise ConfigError(f"loss {loss_name!r} needs the training class counts (class_counts)")
        opts["class_counts"] = counts.tolist()
    if "class_names" in params and class_names is not None:
        opts["class_names"] = class_names
    if "num_classes" in params and num_classes is not None and not needs_counts:
        opts["num_classes"] = num_classes
    try:
        loss = cls(**opts)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"loss {loss_name!r}: bad option value ({e})") from e

    if drw:
        if "drw_epoch" not in drw:
            raise ConfigError(f"loss.kwargs: {', '.join(sorted(drw))} given without drw_epoch (the epoch DRW starts)")
        if counts is None and drw.get("drw_rule") != "manual":
            raise ConfigError("loss.kwargs.drw_epoch: deferred re-weighting needs the training class counts")
        assert isinstance(loss, ReweightableLoss)
        if loss.weight is not None:
            raise ConfigError(f"loss.kwargs: give either {weight_arg or 'weight'} or drw_epoch, not both")
        loss.drw = DRWSchedule(drw["drw_epoch"], rule=drw.get("drw_rule", "effective"),
                               beta=drw.get("drw_beta", 0.9999),
                               class_counts=None if counts is None else counts.tolist(),
                               manual=drw.get("drw_manual"))
        loss.set_epoch(0)
    return loss


__all__ = [
    "build_loss", "list_losses",
    "CrossEntropyLoss", "SoftTargetCrossEntropy", "WeightedCrossEntropyLoss",
    "LDAMLoss", "margins_from_counts", "FocalLoss", "LogitAdjustedLoss", "BalancedSoftmaxLoss",
    "MixedUncertaintyLoss", "uncertainty_mix",
    "AdaptiveFeatureNorm", "classifier_discrepancy", "domain_adversarial_loss",
    "class_weights", "DRWSchedule", "inverse_frequency_weights", "sqrt_inverse_weights",
    "effective_number_weights", "WEIGHT_RULES",
    "normalized_entropy", "entropy_confidence", "entropy_confidence_from_logits",
]
