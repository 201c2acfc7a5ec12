"""One model registry: ``@register_model`` + :func:`create_model` (in the spirit of timm).

Every registered builder returns a :class:`FERModel`: an ``nn.Module`` with

* ``forward_features(x) -> Tensor[B, num_features]`` — the embedding losses/anchors/UDA heads use,
* ``forward_head(features) -> Tensor[B, num_classes]`` — logits,
* ``forward(x) = forward_head(forward_features(x))``,
* ``num_features`` (int) and ``pretrained_cfg`` (dict: ``input_size`` (H, W), ``in_chans``, ``mean``, ``std``)
  — the preprocessing the checkpoint sidecar records so inference never re-specifies it by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn


from ..errors import ModelError  # noqa: E402  (defined in the bottom layer; re-exported here)


class FERModel(nn.Module):
    num_features: int
    num_classes: int
    pretrained_cfg: dict[str, Any]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        """The classifier layer ``forward_head`` ends with. Default: ``self.fc`` (the zoo's models name theirs)."""
        fc = self._modules.get("fc")
        if fc is None:
            raise ModelError(f"{type(self).__name__} does not name its classifier layer (get_classifier)")
        return fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@dataclass
class ModelEntry:
    name: str
    builder: Callable[..., FERModel]
    description: str
    default_cfg: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str | None = None, *, description: str = "", **default_cfg: Any) -> Callable:
    """Decorator registering ``builder(num_classes, pretrained=None, **kw) -> FERModel``."""

    def deco(fn: Callable[..., FERModel]) -> Callable[..., FERModel]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ModelError(f"model {key!r} registered twice")
        doc = description or (fn.__doc__ or key).strip().splitlines()[0]
        _REGISTRY[key] = ModelEntry(key, fn, doc, dict(default_cfg))
        return fn

    return deco


def _ensure_loaded() -> None:
    from . import zoo  # noqa: F401  (imports every architecture module, which registers)


def list_models() -> dict[str, ModelEntry]:
    _ensure_loaded()
    return dict(sorted(_REGISTRY.items()))


def is_named_pretrained(name: str, pretrained: Any, backbone: Any = None) -> bool:
    """``pretrained`` is a keyword a builder resolves itself (``pretrained_names`` of the model, or of the
    ``backbone`` it wraps), e.g. ``'dlib'`` for ``dlib_resnet29``."""
    names = set(_REGISTRY[name].default_cfg.get("pretrained_names", ()))
    if isinstance(backbone, str) and backbone in _REGISTRY:
        names |= set(_REGISTRY[backbone].default_cfg.get("pretrained_names", ()))
    return pretrained is not None and str(pretrained) in names


def create_model(name: str, num_classes: int = 7, pretrained: str | Path | None = None, **kwargs: Any) -> FERModel:
    """Build a registered model by name; ``pretrained`` is always local: a weight file, or a fairexpr checkpoint
    (a packaged model's name / ``default``, a run directory) whose backbone starts the model."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    named = is_named_pretrained(name, pretrained, kwargs.get("backbone"))  # e.g. dlib_resnet29's 'dlib'
    if pretrained is not None and not named and checkpoint_weight_file(pretrained) is None and not Path(pretrained).is_file():
        raise ModelError(f"pretrained weight file {str(pretrained)!r} for model {name!r} does not exist")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive int, got {num_classes!r}")
    try:
        model = _REGISTRY[name].builder(num_classes=num_classes, pretrained=pretrained, **kwargs)
    except TypeError as e:
        raise ModelError(f"bad option for model {name!r}: {e}") from None
    # how to rebuild this network from a checkpoint sidecar (weights come from the checkpoint itself)
    if not hasattr(model, "registry_name"):
        model.registry_name = name  # type: ignore[attr-defined]
    if not hasattr(model, "build_kwargs"):
        model.build_kwargs = dict(kwargs)  # type: ignore[attr-defined]
    return model


def checkpoint_weight_file(path: str | Path) -> Path | None:
    """The ``model.safetensors`` of a *fairexpr checkpoint* named by ``path`` — a packaged model's name or
    ``default`` (:mod:`fairexpr.zoo`), a run directory, or a ``.safetensors``/``.json`` of one with its
    fairexpr sidecar — else ``None`` (an ordinary weight file)."""
    import json

    from .. import zoo

    if isinstance(path, str) and (path == zoo.DEFAULT or zoo.is_reference(path)):
        p = zoo.pretrained_path(path)
    else:
        p = Path(path)
    side = p / "model.json" if p.is_dir() else p.with_suffix(".json")
    if p.is_dir() and not side.is_file():
        raise ModelError(f"{p}: a folder given as pretrained weights must be a fairexpr run directory (model.json + "
                         "model.safetensors)")
    if side.is_file() and p.suffix in ("", ".json", ".safetensors"):
        try:
            meta = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if meta.get("format") != "fairexpr-checkpoint":
            return None
        if (meta.get("model") or {}).get("name") == "ensemble":
            raise ModelError(f"pretrained {str(path)!r} is an ensemble of several networks; a backbone starts from one "
                             "network: give one of its members (e.g. the packaged fer2013-mobilenetv2-ldam) or a run folder")
        w = side.with_suffix(".safetensors")
        if not w.is_file():
            raise ModelError(f"{side}: fairexpr sidecar without its weights {w.name}")
        return w
    return None


def state_mismatch(net: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[tuple]]:
    """How ``state`` fails to fit ``net`` exactly: (keys missing from it, keys ``net`` does not have,
    ``(key, shape in state, shape in net)`` of the mis-shaped ones); all empty = a strict load fits."""
    target = net.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = [(k, tuple(v.shape), tuple(target[k].shape)) for k, v in state.items()
                  if k in target and tuple(v.shape) != tuple(target[k].shape)]
    return missing, unexpected, mismatched


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a weight file safely: safetensors, or ``torch.load(weights_only=True)``. ``path`` may also name a
    fairexpr checkpoint (packaged model name / ``default``, run directory; :func:`checkpoint_weight_file`).

    Unwraps the usual containers (``state_dict``, ``model``, ``net``) and ``module.`` prefixes.
    Files that would need arbitrary unpickling are refused with a clear error.
    """
    path = checkpoint_weight_file(path) or Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelError(
                f"{path}: cannot load safely with torch.load(weights_only=True) ({type(e).__name__}: {e}); "
                "fairexpr never unpickles arbitrary objects — re-save the file as a plain state_dict"
            ) from None
    for key in ("state_dict", "model", "net", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ModelError(f"{path}: expected a state_dict (mapping of tensors), got {type(sd).__name__}")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        out[k[7:] if k.startswith("module.") else k] = v
    return out
