"""Shared machinery of the model zoo: option checks, the base class every backbone uses, and the
weight loader that reports exactly what it did (:class:`LoadReport`).

Loading rules (same for every architecture):

1. The file is read with :func:`~fairexpr.models.registry.load_state_file` (safetensors or
   ``torch.load(weights_only=True)``; ``module.`` prefixes and ``state_dict``/``model`` containers are
   unwrapped; anything that needs unpickling is refused).
2. An architecture-specific *remap* translates the layouts users actually have (face.evoLVe IR-50,
   POSTER++ ``ir50.pth``, SCN/RUL ``resnet18_msceleb.pth``...) into this model's key names.
3. The first convolution is adapted when the file's input channels differ from ``in_chans``
   (3 -> 1: the kernel is **summed** over the RGB channels, as timm's ``adapt_input_conv`` does, so a
   grey image ``g`` replicated to RGB and the 1-channel model give the same response; 1 -> 3: the
   kernel is repeated and divided by 3).
4. Tensors whose name and shape match are copied; shape mismatches (a classifier for another number
   of classes, a 7x7 ImageNet stem against the 3x3 small-input stem) are skipped. Everything is
   recorded in the :class:`LoadReport`, logged, and kept on the model as ``model.load_report``.
5. A file of which *no* tensor fits raises :class:`ModelError` (a wrong file is never "loaded").
6. A *fairexpr checkpoint* (``pretrained: default``, a packaged model's name, a run directory) gives its
   backbone only: the classifier head is left freshly initialised and the report says so.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .registry import FERModel, ModelError, load_state_file

log = logging.getLogger("fairexpr.models")

HEAD_KINDS = ("linear", "normed", "uncertainty")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def check_in_chans(model: str, in_chans: Any) -> int:
    if in_chans not in (1, 3) or isinstance(in_chans, bool):
        raise ModelError(f"{model}: in_chans must be 1 (grey) or 3 (RGB), got {in_chans!r}")
    return int(in_chans)


def check_head(model: str, head: Any) -> str:
    if head not in HEAD_KINDS:
        raise ModelError(f"{model}: head must be one of {', '.join(HEAD_KINDS)}, got {head!r}")
    return str(head)


def check_rate(model: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ModelError(f"{model}: {name} must be a float in [0, 1), got {value!r}")
    return float(value)


def stats_for(in_chans: int, mean: list[float], std: list[float]) -> tuple[list[float], list[float]]:
    """Per-channel normalisation for ``in_chans`` (grey uses the mean of the RGB statistics)."""
    if in_chans == 3:
        return list(mean), list(std)
    return [round(sum(mean) / 3, 4)], [round(sum(std) / 3, 4)]


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did with a weight file. Nothing is silent.

    ``loaded``: model keys filled from the file; ``missing``: model keys the file did not provide
    (left at their initialisation; ``num_batches_tracked`` counters are not listed);
    ``fresh``: the subset of ``missing`` that is *expected* to be new (attention modules added to a
    plain backbone, e.g. CBAM); ``mismatched``: (key, shape in file, shape in model) skipped;
    ``unexpected``: file keys with no counterpart in the model; ``notes``: remaps and adaptations.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def few(keys: Iterable[str], n: int = 4) -> str:
            keys = list(keys)
            return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")

        parts = [f"{self.source}: loaded {len(self.loaded)} tensors"]
        if self.fresh:
            parts.append(f"freshly initialised {len(self.fresh)} [{few(self.fresh)}]")
        other = [k for k in self.missing if k not in set(self.fresh)]
        if other:
            parts.append(f"missing {len(other)} [{few(other)}]")
        if self.mismatched:
            parts.append("shape-mismatched (skipped) " + few(f"{k} {tuple(a)}->{tuple(b)}" for k, a, b in self.mismatched))
        if self.unexpected:
            parts.append(f"unused from file {len(self.unexpected)} [{few(self.unexpected)}]")
        parts += self.notes
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "loaded": self.loaded, "missing": self.missing, "fresh": self.fresh,
            "mismatched": [[k, list(a), list(b)] for k, a, b in self.mismatched],
            "unexpected": self.unexpected, "notes": self.notes,
        }


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a first-conv kernel ``[O, I, kh, kw]`` to ``in_chans`` input channels (timm's rule).

    3 -> 1: ``w' = sum_c w[:, c]`` (grey input ``g`` gives the response of RGB input ``(g, g, g)``);
    1 -> 3: ``w'[:, c] = w[:, 0] / 3`` (RGB ``(g, g, g)`` gives the 1-channel response).
    """
    i = weight.shape[1]
    if i == in_chans:
        return weight
    if in_chans == 1 and i == 3:
        return weight.sum(dim=1, keepdim=True)
    if in_chans == 3 and i == 1:
        return weight.repeat(1, 3, 1, 1) / 3.0
    raise ModelError(f"cannot adapt a first convolution with {i} input channels to in_chans={in_chans}")


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    *,
    first_conv: str,
    in_chans: int,
    remap: Callable[[dict[str, torch.Tensor]], tuple[dict[str, torch.Tensor], list[str]]] | None = None,
    fresh_markers: tuple[str, ...] = (),
) -> LoadReport:
    """Load a local weight file into ``model`` following the rules of this module's docstring.

    ``fresh_markers``: substrings (e.g. ``".cbam."``) of keys that are new by design; they are listed
    in ``report.fresh`` so the user sees they were initialised, not loaded.
    """
    from .registry import checkpoint_weight_file

    sd = load_state_file(path)
    report = LoadReport(source=str(path))
    ck_file = checkpoint_weight_file(path)
    head = getattr(model, "_head_name", None)
    if ck_file is not None and head:
        # a fairexpr checkpoint as the start of a new training: its backbone, never its classifier (the new
        # run's classes come from its own data, and a head trained on other classes is not a fair start)
        dropped = [k for k in sd if k.startswith(head + ".")]
        for k in dropped:
            del sd[k]
        report.notes.append(f"fairexpr checkpoint {ck_file}: backbone loaded, classifier head {head!r} left freshly "
                            f"initialised ({len(dropped)} tensors not loaded)")
    if remap is not None:
        sd, notes = remap(sd)
        report.notes += notes
    target = model.state_dict()
    fc_key = f"{first_conv}.weight"
    if fc_key in sd and fc_key in target and sd[fc_key].ndim == 4 and sd[fc_key].shape[1] != in_chans:
        before = sd[fc_key].shape[1]
        sd[fc_key] = adapt_input_conv(sd[fc_key], in_chans)
        how = "summed over the RGB channels" if in_chans == 1 else "repeated over 3 channels and divided by 3"
        report.notes.append(f"first conv {fc_key}: file has {before} input channel(s), model in_chans={in_chans}: kernel {how}")
    to_load: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k not in target:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(target[k].shape):
            report.mismatched.append((k, tuple(v.shape), tuple(target[k].shape)))
        else:
            to_load[k] = v
    weights_loaded = [k for k in to_load if not k.endswith("num_batches_tracked")]
    if not weights_loaded:
        raise ModelError(
            f"{path}: no tensor in this file matches model {type(model).__name__} "
            f"(file keys e.g. {list(sd)[:4]}, model keys e.g. {list(target)[:4]}); is it the right file?"
        )
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.missing = [k for k in target if k not in to_load and not k.endswith("num_batches_tracked")]
    report.fresh = [k for k in report.missing if any(m in f".{k}" for m in fresh_markers)]
    log.info("pretrained weights: %s", report.summary())
    return report


class ZooModel(FERModel):
    """Base of the zoo's models: the classifier head lives under ``self._head_name`` (a dotted path
    such as ``fc`` or ``classifier.1`` so torchvision state-dict keys are kept), preceded by dropout."""

    _head_name: str = "fc"
    head_kind: str = "linear"
    head_kwargs: dict[str, Any]
    load_report: LoadReport | None = None

    def _make_head(self, num_classes: int) -> nn.Module:
        from .heads import build_head

        return build_head(self.head_kind, self.num_features, num_classes, **self.head_kwargs)

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self._head_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one for ``num_classes`` classes."""
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ModelError(f"num_classes must be a positive int, got {num_classes!r}")
        parent_name, _, leaf = self._head_name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        setattr(parent, leaf, self._make_head(num_classes))  # works for Sequential indices too
        self.num_classes = num_classes

    def _finish_cfg(self, input_size: tuple[int, int], in_chans: int, mean: list[float], std: list[float], **extra: Any) -> None:
        m, s = stats_for(in_chans, mean, std)
        self.pretrained_cfg = {"input_size": tuple(input_size), "in_chans": in_chans, "mean": m, "std": s, **extra}


def resolve_head_options(model: str, head: str, drop_rate: float | None, default_drop: float,
                         head_kwargs: dict[str, Any] | None) -> tuple[str, float, dict[str, Any]]:
    """Validate ``head``/``drop_rate``/``head_kwargs``. For ``head='uncertainty'`` dropout lives
    inside the head (RUL: 0.4), so ``drop_rate`` is handed to it and the pre-head dropout is 0."""
    head = check_head(model, head)
    kw = dict(head_kwargs or {})
    if not isinstance(head_kwargs, (dict, type(None))):
        raise ModelError(f"{model}: head_kwargs must be a mapping, got {type(head_kwargs).__name__}")
    if head == "uncertainty":
        if drop_rate is not None:
            kw.setdefault("drop_rate", check_rate(model, "drop_rate", drop_rate))
        return head, 0.0, kw
    rate = default_drop if drop_rate is None else check_rate(model, "drop_rate", drop_rate)
    return head, rate, kw
