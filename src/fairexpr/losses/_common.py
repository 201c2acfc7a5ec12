"""Helpers shared by the loss modules: argument checks, reductions and the DRW weight hook."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError

REDUCTIONS = ("mean", "sum", "none")

CountsLike = Sequence[float] | torch.Tensor


def check_reduction(reduction: str, where: str) -> str:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"{where}: reduction={reduction!r}; expected one of {', '.join(REDUCTIONS)}")
    return reduction


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-sample losses ``[N]``: ``mean`` = (1/N) Σ, ``sum`` = Σ, ``none`` = as is."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _label(i: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and i < len(class_names):
        return f"class {i} ({class_names[i]!r})"
    return f"class {i}"


def as_counts(
    class_counts: CountsLike | None,
    where: str,
    *,
    allow_zero: bool = False,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Validate per-class training counts and return them as a float64 tensor ``[K]``.

    Raises :class:`~fairexpr.config.ConfigError` (a ``ValueError``) naming ``where`` and the offending
    class when the counts are missing, not 1-D, of the wrong length, negative, non-finite or (unless
    ``allow_zero``) zero.
    """
    if class_counts is None:
        raise ConfigError(f"{where}: class_counts is required (the per-class counts of the training split)")
    try:
        t = torch.as_tensor(class_counts, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{where}: class_counts must be a list of numbers, got {class_counts!r}") from e
    if t.ndim != 1 or t.numel() == 0:
        raise ConfigError(f"{where}: class_counts must be a non-empty 1-D list, got shape {tuple(t.shape)}")
    if num_classes is not None and t.numel() != num_classes:
        raise ConfigError(f"{where}: class_counts has {t.numel()} entries but the model has {num_classes} classes")
    for i, v in enumerate(t.tolist()):
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"{where}: class_counts[{i}] = {v} for {_label(i, class_names)}; expected a count >= 0")
        if v == 0 and not allow_zero:
            raise ConfigError(
                f"{where}: {_label(i, class_names)} has 0 training samples (class_counts[{i}] = 0); this loss "
                "needs every class to be present — drop the class or use a label space without it"
            )
    return t


def as_class_vector(values: CountsLike, where: str, *, num_classes: int | None = None,
                    positive: bool = True) -> torch.Tensor:
    """Validate a per-class vector (weights, margins) and return it as float32 ``[K]``."""
    try:
        t = torch.as_tensor(values, dtype=torch.float32).detach()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{where}: expected a list of numbers, got {values!r}") from e
    if t.ndim != 1 or t.numel() == 0:
        raise ConfigError(f"{where}: expected a non-empty 1-D vector, got shape {tuple(t.shape)}")
    if num_classes is not None and t.numel() != num_classes:
        raise ConfigError(f"{where}: has {t.numel()} entries; expected one per class ({num_classes})")
    bad = ~torch.isfinite(t) | ((t <= 0) if positive else (t < 0))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        rule = "> 0" if positive else ">= 0"
        raise ConfigError(f"{where}: entry {i} (class {i}) = {t[i].item()}; every entry must be finite and {rule}")
    return t


def check_logits(logits: torch.Tensor, where: str, num_classes: int | None = None) -> None:
    if logits.ndim != 2:
        raise ValueError(f"{where}: logits must be [N, K], got shape {tuple(logits.shape)}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(
            f"{where}: logits have {logits.shape[1]} classes but the loss was built for {num_classes} "
            "(class_counts length)"
        )


def check_target(target: torch.Tensor, logits: torch.Tensor, where: str) -> None:
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"{where}: target must be [N] class indices matching logits [N, K]; got target "
            f"{tuple(target.shape)} for logits {tuple(logits.shape)}"
        )
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{where}: target must hold integer class indices, got dtype {target.dtype}")


class ReweightableLoss(nn.Module):
    """Base for losses with optional per-class weights that deferred re-weighting (DRW) can switch on.

    ``weight`` is a non-persistent buffer (``None`` = unweighted): it is recomputed from the epoch by
    :meth:`set_epoch` when a :class:`~fairexpr.losses.weights.DRWSchedule` is attached as ``drw``, so
    nothing about it needs to be saved in checkpoints. Methods call ``loss.set_epoch(ctx.epoch)`` at the
    start of each epoch (a no-op without a schedule).
    """

    num_classes: int | None

    def __init__(self, weight: CountsLike | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drw = None
        self.register_buffer("weight", None, persistent=False)
        self.set_weight(weight)

    def set_weight(self, weight: CountsLike | None) -> None:
        """Replace the per-class weights (``None`` switches weighting off)."""
        if weight is None:
            self.weight = None
            return
        w = as_class_vector(weight, f"{type(self).__name__}.weight", num_classes=self.num_classes)
        ref = next(iter(b for b in self.buffers() if b is not None), None)
        self.weight = w.to(ref.device) if ref is not None else w

    def set_epoch(self, epoch: int) -> None:
        """Apply the attached DRW schedule (if any) for the 0-based ``epoch``."""
        if self.drw is not None:
            self.set_weight(self.drw(epoch))

    def _weight_for(self, logits: torch.Tensor) -> torch.Tensor | None:
        w = self.weight
        if w is None:
            return None
        if w.numel() != logits.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: weight has {w.numel()} entries but logits have {logits.shape[1]} classes"
            )
        return w.to(device=logits.device, dtype=logits.dtype)
