"""The method protocol: what a training recipe supplies to the engine (and nothing more).

The engine (``fairexpr.engine``) owns the loop, devices, precision, checkpoints, resume, logging
and evaluation. A *method* owns its model(s) and losses and tells the engine how one step works::

    class MyMethod(Method):
        def training_step(self, batch, ctx):      # -> {"loss": Tensor, other scalars...}
        def predict(self, images):                # -> {"logits", "probs", "embedding"}

Batches the engine hands to ``training_step`` (tensors already on the device, augmented, normalized):

* supervised: ``{"image": [B,C,H,W] float, "label": [B] long, "index": [B] long, ("soft_label": [B,K])}``
* adaptation (``needs_target = True``): ``{"source": <supervised batch>, "target": <batch, labels removed>}``
* unlabelled (``needs_unlabelled = True``): ``{"labelled": <supervised batch>,
  "unlabelled": {"image": weak view, "image_strong": strong view, "index"}}``

Automatic optimization (default): return ``{"loss": tensor}``; the engine does backward, clipping,
optimizer and scheduler steps. Methods with several optimizers or several updates per batch (MCD,
Meta-Face2Exp) set ``automatic_optimization = False``, build their optimizers in
``configure_optimizers`` and call ``ctx.backward(loss)`` / ``ctx.step(optimizer)`` themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


@dataclass
class StepContext:
    """What a method may use from the engine during a step."""

    epoch: int  # 0-based epoch index
    step: int  # global optimizer step counter (0-based)
    max_epochs: int
    max_steps: int | None  # total planned steps when known (for warm-start schedules), else None
    backward: Callable[[torch.Tensor], None]  # precision/distribution-aware backward
    step_optimizer: Callable[[torch.optim.Optimizer], None]  # clip grads (if configured) + optimizer.step()
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    device: torch.device = torch.device("cpu")

    @property
    def progress(self) -> float:
        """Training progress in [0, 1] by steps (used by warm-start GRL schedules)."""
        if not self.max_steps:
            return min(1.0, self.epoch / max(1, self.max_epochs))
        return min(1.0, self.step / self.max_steps)


@dataclass
class DataInfo:
    """What a method needs to know about the (source/labelled) training data."""

    classes: tuple[str, ...]
    class_counts: list[int]  # per class, in ``classes`` order, of the training split actually used
    in_chans: int
    image_size: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class Method(nn.Module):
    """Base class of training recipes. Sub-classes register with :func:`register_method`.

    Constructed by the engine as ``MethodCls(config, data_info)`` where ``config`` is the whole
    resolved config (nested dict: ``model``, ``loss``, ``method``, ``optim``...). A method reads its own
    options from ``config["method"]``; ``option_defaults`` lists them (the config loader rejects
    unknown keys with a clear error). Build the deployable network with
    ``fairexpr.models.create_model(**config["model"]...)`` and store it as ``self.model``.
    """

    option_defaults: dict[str, Any] = {}
    automatic_optimization: bool = True
    needs_target: bool = False
    #: the method hands ``batch["landmarks"]`` to its network (``Method.features``); the engine refuses a
    #: landmark-cropping network (``uses_landmarks``) under a method that would silently ignore them
    accepts_landmarks: bool = False
    needs_unlabelled: bool = False
    #: the method gives part of its parameters ``optim.lr * optim.head_lr_mult`` (``parameter_groups``); the engine
    #: refuses ``head_lr_mult != 1`` for a method that would silently ignore it
    uses_head_lr_mult: bool = False

    #: the deployable network (what eval/predict/export use); sub-classes set it in __init__
    model: nn.Module

    def parameter_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups for automatic optimization (override for per-part lrs)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": base_lr}]

    def configure_optimizers(self, build_optimizer: Callable[..., torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
        """Manual-optimization methods return their optimizers; ``build_optimizer(param_groups)``
        applies the config's optimizer settings."""
        return [build_optimizer(self.parameter_groups(build_optimizer.base_lr))]  # type: ignore[attr-defined]

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def features(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """``self.model.forward_features``, handing on per-image landmarks to a network that crops around them
        (``uses_landmarks``, e.g. ``agra_net``); other networks get the images alone."""
        if landmarks is not None and getattr(self.model, "uses_landmarks", False):
            return self.model.forward_features(images, landmarks=landmarks)
        return self.model.forward_features(images)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logits, probabilities and embedding of the deployable network for evaluation/inference."""
        feats = self.features(images, landmarks)
        logits = self.model.forward_head(feats)
        return {"logits": logits, "probs": logits.softmax(-1), "embedding": feats}

    def init_from(self, state: dict[str, torch.Tensor], sidecar: dict[str, Any], source: str) -> list[str]:
        """``model.init``: start from a whole trained model (backbone *and* classifier), e.g. a converged source
        model for domain adaptation. ``state`` is its ``model.safetensors``, ``sidecar`` its ``model.json``.

        Default: ``self.model`` is the same network as the source model and is loaded strictly (every tensor,
        every shape). Methods whose network wraps the backbone in other heads (MCD, SAFN) override this. Returns
        notes on what was loaded, for the run log."""
        strict_load(self.model, state, source, f"method {getattr(type(self), 'method_name', type(self).__name__)}'s network")
        return [f"whole network from {source} ({len(state)} tensors, strict)"]

    def companion_networks(self) -> dict[str, nn.Module]:
        """Networks kept next to ``self.model`` (same architecture): the engine saves each as
        ``<name>.safetensors`` + ``<name>.json`` at the best epoch (loadable with ``fairexpr eval DIR/<name>.json``)
        and evaluates it at the end (``result.json["eval_companions"][name]``, ``eval/<name>/<role>/``).
        Default: none. Meta-Face2Exp returns the network that is not deployed."""
        return {}

    def on_train_epoch_start(self, epoch: int, engine: Any) -> dict[str, Any] | None:
        """Hook before each epoch (DRW switch, DIFC margin recomputation...). May return values to log."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable non-parameter state to checkpoint (phase, margins, ...)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def strict_load(net: nn.Module, state: dict[str, torch.Tensor], source: str, what: str) -> None:
    """Load a whole source network into ``net`` (every tensor, every shape) or raise one clear ConfigError."""
    from ..errors import ConfigError
    from ..models.registry import state_mismatch

    missing, unexpected, mismatched = state_mismatch(net, state)
    if missing or unexpected or mismatched:
        shapes = [f"{k} {a} vs {b}" for k, a, b in mismatched[:3]]
        raise ConfigError(f"model.init: {source} does not fit {what} ({type(net).__name__}): missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}, shape-mismatched {shapes}; model.name/model.kwargs must be "
                          "the source model's (fairexpr adapt --init sets them)")
    net.load_state_dict(state, strict=True)


_METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def deco(cls: type[Method]) -> type[Method]:
        _METHODS[name] = cls
        cls.method_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def get_method(name: str) -> type[Method]:
    from . import catalog  # noqa: F401  (imports every method module)

    if name not in _METHODS:
        from ..errors import ConfigError

        raise ConfigError(f"method.name: unknown method {name!r}; known: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def list_methods() -> list[str]:
    from . import catalog  # noqa: F401

    return sorted(_METHODS)
