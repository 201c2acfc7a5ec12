"""An ensemble of trained networks as one network: each member gets its own input normalisation and its own
calibration temperature, and the ensemble answers the log of the weighted mean of the members' calibrated
probabilities,

    log p(k | x) = log sum_m w_m softmax(z_m((x - mean_m) / std_m) / T_m)_k,     sum_m w_m = 1,

computed as a log-sum-exp of log-softmaxes (finite even where a member gives a class probability 0 in float32).
Because the output already is a log-probability, the ensemble's own temperature is 1: ``softmax`` of it gives the
mixture back, so every checkpoint consumer (``eval``, ``predict``, ``serve``, ``export`` to ONNX, flip TTA, which
averages probabilities over views) handles it like any other network, and the mean over views of the mixture is the
mixture of the members' view means (both are plain averages).

Input: the ensemble's own preprocessing is ``mean 0, std 1`` (pixel / 255) at one shared size and channel count;
member ``m`` sees ``(x - mean_m) / std_m``, the normalisation it was trained with. ``forward_features`` is the
concatenation of the members' embeddings (``num_features`` = their sum); the ensemble has no single classifier,
so it cannot be a starting point for training or adaptation (``get_classifier`` and ``reset_classifier`` raise).

Members are ordinary registered networks; a member that keeps layers its ``feature_stage`` never uses
(``dlib_resnet29`` below stage 4: its last stage and the 128-d descriptor layer) drops them (``drop_unused``), so
the packaged ensemble stores only the weights it runs. Built by ``benchmarks/build_zoo.py`` from the zoo index's
``members`` (``fer2013-ensemble``); ``benchmarks/ensemble.py`` measures the same average from the members' own
checkpoints.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from .registry import FERModel, ModelError, register_model

_MEMBER_KEYS = {"name", "kwargs", "mean", "std", "temperature", "weight", "label", "source"}


def _check_member(i: int, spec: Any, in_chans: int) -> dict[str, Any]:
    where = f"ensemble member {i}"
    if not isinstance(spec, dict):
        raise ModelError(f"{where}: expected a mapping with name, kwargs, mean, std, temperature, weight; got "
                         f"{type(spec).__name__}")
    unknown = set(spec) - _MEMBER_KEYS
    if unknown:
        raise ModelError(f"{where}: unknown key(s) {sorted(unknown)}; known: {', '.join(sorted(_MEMBER_KEYS))}")
    for k in ("name", "mean", "std"):
        if k not in spec:
            raise ModelError(f"{where}: missing {k!r}")
    if spec["name"] == "ensemble":
        raise ModelError(f"{where}: an ensemble cannot be a member of an ensemble (list its members instead)")
    out = dict(spec)
    for k in ("mean", "std"):
        v = spec[k]
        if (not isinstance(v, (list, tuple)) or len(v) != in_chans
                or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in v)):
            raise ModelError(f"{where}: {k} must be {in_chans} finite number(s) (one per input channel), got {v!r}")
        out[k] = [float(a) for a in v]
    if not all(s > 0 for s in out["std"]):
        raise ModelError(f"{where}: std must be > 0, got {out['std']}")
    for k, default in (("temperature", 1.0), ("weight", 1.0)):
        v = spec.get(k, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ModelError(f"{where}: {k} must be a positive number, got {v!r}")
        out[k] = float(v)
    kw = spec.get("kwargs") or {}
    if not isinstance(kw, dict):
        raise ModelError(f"{where}: kwargs must be a mapping, got {type(kw).__name__}")
    out["kwargs"] = dict(kw)
    return out


class ProbabilityEnsemble(FERModel):
    """Members' calibrated probabilities averaged with fixed weights; see the module docstring."""

    def __init__(self, num_classes: int, members: Sequence[dict[str, Any]], in_chans: int = 1,
                 input_size: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        from .registry import create_model

        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans not in (1, 3):
            raise ModelError(f"ensemble: in_chans must be 1 or 3, got {in_chans!r}")
        if (not isinstance(input_size, (list, tuple)) or len(input_size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size)):
            raise ModelError(f"ensemble: input_size must be [height, width] in pixels, got {input_size!r}")
        if not isinstance(members, (list, tuple)) or len(members) < 2:
            raise ModelError(f"ensemble: needs at least 2 members, got {len(members) if isinstance(members, (list, tuple)) else members!r}")
        self.specs = [_check_member(i, s, in_chans) for i, s in enumerate(members)]
        nets = []
        for i, s in enumerate(self.specs):
            kw = {**s["kwargs"], "in_chans": in_chans}
            try:
                net = create_model(s["name"], num_classes=num_classes, pretrained=None, **kw)
            except ModelError as e:
                raise ModelError(f"ensemble member {i}: {e}") from None
            if hasattr(net, "drop_unused"):
                net.drop_unused()
            nets.append(net)
        self.members = nn.ModuleList(nets)
        total = sum(s["weight"] for s in self.specs)
        self.weights = [s["weight"] / total for s in self.specs]
        self.num_classes = num_classes
        self.sizes = [int(n.num_features) for n in nets]
        self.num_features = sum(self.sizes)
        c = in_chans
        self.register_buffer("_mean", torch.tensor([s["mean"] for s in self.specs]).view(len(nets), c, 1, 1),
                             persistent=False)
        # log w_m, fixed at build: added to every member's log-probabilities in forward_head
        self.register_buffer("_logw", torch.tensor([math.log(w) for w in self.weights]).view(-1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor([s["std"] for s in self.specs]).view(len(nets), c, 1, 1),
                             persistent=False)
        self.pretrained_cfg = {"input_size": tuple(input_size), "in_chans": c, "mean": [0.0] * c, "std": [1.0] * c}

    def member_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [(x - self._mean[i].to(x.dtype)) / self._std[i].to(x.dtype) for i in range(len(self.members))]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The members' embeddings, concatenated in member order."""
        return torch.cat([m.forward_features(xi) for m, xi in zip(self.members, self.member_inputs(x))], dim=1)

    def member_log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """``[M, B, K]``: each member's ``log_softmax(z_m / T_m)`` from the concatenated embedding."""
        if features.shape[-1] != self.num_features:
            raise ModelError(f"ensemble: expected {self.num_features} features (members {self.sizes}), got {features.shape[-1]}")
        parts = torch.split(features, self.sizes, dim=1)
        return torch.stack([torch.log_softmax(m.forward_head(f).float() / s["temperature"], dim=-1)
                            for m, f, s in zip(self.members, parts, self.specs)])

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``log sum_m w_m p_m``: log-probabilities of the mixture (softmax of them is the mixture)."""
        lp = self.member_log_probs(features)
        return torch.logsumexp(lp + self._logw.to(lp.dtype), dim=0)

    def get_classifier(self) -> nn.Module:
        raise ModelError("ensemble: an ensemble has no single classifier layer (each member has its own); train or "
                         "adapt one of its members instead")

    def reset_classifier(self, num_classes: int) -> None:
        raise ModelError("ensemble: its classifiers belong to its members; an ensemble cannot be re-headed")


@register_model("ensemble", description="trained networks averaged as calibrated probabilities, each member with its "
                                         "own normalisation and temperature (the packaged default model); built from "
                                         "checkpoints by benchmarks/build_zoo.py, not trained", composite=True)
def ensemble(num_classes: int = 7, pretrained: Any = None, members: Sequence[dict[str, Any]] = (), in_chans: int = 1,
             input_size: Sequence[int] = (64, 64)) -> ProbabilityEnsemble:
    if pretrained is not None:
        raise ModelError("ensemble: pretrained must be null (the members' weights come from the ensemble's checkpoint)")
    return ProbabilityEnsemble(num_classes, members, in_chans=in_chans, input_size=input_size)
