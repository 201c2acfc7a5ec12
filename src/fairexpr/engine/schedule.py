"""Learning-rate schedules as pure functions of training progress (no hidden scheduler state, so
resume is exact): ``lr = base_lr * factor(epoch_float)``."""
from __future__ import annotations

import math
from typing import Any


def lr_factor(cfg: dict[str, Any], epoch_float: float, total_epochs: float) -> float:
    """Multiplier of the base learning rate at fractional epoch ``epoch_float``.

    * ``cosine``: 0.5 (1 + cos(pi t / T)) down to ``min_lr`` (as a fraction of the base lr), after an
      optional linear warm-up of ``warmup_epochs``;
    * ``step``: ``gamma ** floor(epoch / step_size)``;
    * ``exponential``: ``gamma ** floor(epoch)`` (PyTorch's ExponentialLR stepped once per epoch);
    * ``constant``: 1.
    """
    name = cfg.get("name", "cosine")
    warm = float(cfg.get("warmup_epochs", 0) or 0)
    if warm > 0 and epoch_float < warm:
        return max(1e-3, epoch_float / warm)
    if name == "constant":
        return 1.0
    if name == "step":
        return float(cfg.get("gamma", 0.1)) ** math.floor(epoch_float / max(1, int(cfg.get("step_size", 10))))
    if name == "exponential":
        return float(cfg.get("gamma", 0.9)) ** math.floor(epoch_float)
    if name == "cosine":
        t = min(1.0, max(0.0, (epoch_float - warm) / max(1e-9, total_epochs - warm)))
        floor = float(cfg.get("min_lr", 0.0) or 0.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {name!r}")
