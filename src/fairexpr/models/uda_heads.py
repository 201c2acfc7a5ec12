"""Heads and layers for unsupervised domain adaptation (MCD, DANN, SAFN/AFN), plus two registered
deployable networks built around any registered backbone:

* ``mcd_net`` — backbone ``F`` + two classifiers ``C1, C2`` (Saito et al. 2018); its ``forward_head``
  returns ``log((softmax(C1 f) + softmax(C2 f)) / 2)`` — the averaged prediction of DIFC Eq. 8 — so
  ``softmax(forward(x))`` is exactly that average;
* ``afn_net`` — backbone + the AFN bottleneck block (FC-BN-ReLU-Dropout, Xu et al. 2019) + a linear
  classifier; ``forward_features`` returns the bottleneck feature the feature-norm loss acts on.

DANN needs no special network (its domain discriminator is training-only and lives in the method). The
adaptation losses (DANN's domain loss, MCD's discrepancy, the prediction entropy, AFN's feature-norm loss)
are in :mod:`fairexpr.losses.uda`.

Layers follow Transfer-Learning-Library (``tllib/modules/grl.py``, ``tllib/alignment/{dann,mcd}.py``,
``tllib/normalization/afn.py``); equations are in the docstrings. The AGRA/DIFC landmark global+local
head is ``agra_net`` (``models.agra``): ``model.name: agra_net`` works with every UDA method (MCD and SAFN
wrap it as their backbone, DANN uses it directly) and the engine hands it the dataset's landmarks.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .common import LoadReport
from .registry import FERModel, ModelError, create_model, load_state_file, register_model, state_mismatch

__all__ = [
    "GradientReverseLayer",
    "WarmStartGradientReverseLayer",
    "warm_start_coeff",
    "DomainDiscriminator",
    "ClassifierHead",
    "AFNBlock",
    "MCDNet",
    "AFNNet",
]


# ------------------------------------------------------------------------------------ gradient reversal
class _GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:  # type: ignore[override]
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad.neg() * ctx.coeff, None


class GradientReverseLayer(nn.Module):
    """``R_λ(x) = x`` in the forward pass, ``∂R_λ/∂x = −λ I`` in the backward pass (Ganin et al. 2016)."""

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GradientReverse.apply(x, self.coeff)


def warm_start_coeff(iter_num: int, max_iters: float = 1000.0, alpha: float = 1.0, lo: float = 0.0,
                     hi: float = 1.0) -> float:
    """Warm-start GRL coefficient (Transfer-Learning-Library):

    ``λ(i) = 2 (hi − lo) / (1 + exp(−α i / max_iters)) − (hi − lo) + lo``

    so ``λ(0) = lo`` and ``λ → hi`` as ``i / max_iters`` grows (≈ 0.462 (hi − lo) + lo at ``i = max_iters``).
    """
    if max_iters <= 0:
        raise ValueError(f"max_iters must be > 0, got {max_iters}")
    return float(2.0 * (hi - lo) / (1.0 + math.exp(-alpha * iter_num / max_iters)) - (hi - lo) + lo)


class WarmStartGradientReverseLayer(nn.Module):
    """GRL whose coefficient follows :func:`warm_start_coeff` of an iteration counter.

    ``step()`` advances the counter (``auto_step=True`` advances it on every training forward).
    ``iter_num`` is plain state: methods checkpoint it in their ``extra_state`` for resume.
    """

    def __init__(self, alpha: float = 1.0, lo: float = 0.0, hi: float = 1.0, max_iters: float = 1000.0,
                 auto_step: bool = False) -> None:
        super().__init__()
        if max_iters <= 0:
            raise ValueError(f"max_iters must be > 0, got {max_iters}")
        self.alpha, self.lo, self.hi, self.max_iters = float(alpha), float(lo), float(hi), float(max_iters)
        self.auto_step = auto_step
        self.iter_num = 0

    @property
    def coeff(self) -> float:
        return warm_start_coeff(self.iter_num, self.max_iters, self.alpha, self.lo, self.hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.coeff
        if self.auto_step and self.training:
            self.step()
        return _GradientReverse.apply(x, c)

    def step(self) -> None:
        self.iter_num += 1


# ------------------------------------------------------------------------------------------- DANN
class DomainDiscriminator(nn.Module):
    """``D(f)``: Linear-BN-ReLU-Linear-BN-ReLU-Linear(1) returning a domain *logit* (source = 1).

    Transfer-Learning-Library ends with a sigmoid and uses BCE; we return the logit and use
    ``binary_cross_entropy_with_logits`` (same value, numerically stable, safe under autocast).
    """

    def __init__(self, in_features: int, hidden: int = 1024, batch_norm: bool = True) -> None:
        super().__init__()
        if in_features < 1 or hidden < 1:
            raise ModelError(f"DomainDiscriminator: in_features and hidden must be >= 1, got {in_features}, {hidden}")

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU(inplace=True)] if batch_norm else \
                [nn.Linear(i, o), nn.ReLU(inplace=True), nn.Dropout(0.5)]

        self.net = nn.Sequential(*block(in_features, hidden), *block(hidden, hidden), nn.Linear(hidden, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f).squeeze(1)


# -------------------------------------------------------------------------------------------- MCD
class ClassifierHead(nn.Module):
    """An MCD classifier ``C_j``: ``hidden = 0`` -> Dropout-Linear; else (MCD_DA / TLlib style)
    Dropout-Linear-BN-ReLU-Dropout-Linear-BN-ReLU-Linear with ``hidden`` units."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 0, dropout: float = 0.5, head: str = "linear") -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ModelError(f"ClassifierHead: dropout must be in [0, 1), got {dropout}")
        if head not in ("linear", "normed"):
            raise ModelError(f"ClassifierHead: head must be linear or normed, got {head!r}")
        from .heads import NormedLinear

        def last(n_in: int) -> nn.Module:
            # normed: LDAM-DRW's cosine classifier (its logits are cosines; the DI/DIFC loss scales them by s)
            return NormedLinear(n_in, num_classes) if head == "normed" else nn.Linear(n_in, num_classes)

        if hidden and hidden > 0:
            self.net = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                last(hidden))
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), last(in_features))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


def _backbone_kwargs(model: str, backbone_kwargs: dict[str, Any] | None, in_chans: int | None) -> dict[str, Any]:
    """``backbone_kwargs`` with ``in_chans`` merged in (the two must agree when both name it)."""
    if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
        raise ModelError(f"{model}: backbone_kwargs must be a mapping, got {type(backbone_kwargs).__name__}")
    bkw = dict(backbone_kwargs or {})
    if in_chans is not None:
        if "in_chans" in bkw and bkw["in_chans"] != in_chans:
            raise ModelError(f"{model}: in_chans={in_chans!r} contradicts backbone_kwargs in_chans={bkw['in_chans']!r}")
        bkw["in_chans"] = in_chans
    return bkw


def _split_pretrained(pretrained: Any, head_prefixes: tuple[str, ...],
                      backbone: str | None = None) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """Tell a whole-network weight file from a backbone-only one by its keys.

    A file with ``backbone.*`` keys *and* keys of this wrapper's own heads (``head_prefixes``) is a whole
    network (e.g. a saved ``state_dict`` or a fairexpr checkpoint): returns ``(None, state)``. Anything else
    is handed on to the backbone's own loader: returns ``(pretrained, None)`` — so is a name the backbone resolves
    itself (``dlib`` for ``dlib_resnet29``: the packaged weights), which is no file to read here.
    """
    if pretrained is None:
        return None, None
    if backbone is not None:
        from .registry import is_named_pretrained

        if is_named_pretrained(backbone, pretrained):
            return pretrained, None
    sd = load_state_file(pretrained)
    if any(k.startswith("backbone.") for k in sd) and any(k.startswith(head_prefixes) for k in sd):
        return None, sd
    return pretrained, None


def _load_whole(net: FERModel, state: dict[str, torch.Tensor], source: Any, model: str) -> None:
    """Load a whole-network state strictly; any missing, unexpected or mis-shaped tensor is a ModelError."""
    missing, unexpected, mismatched = state_mismatch(net, state)
    if missing or unexpected or mismatched:
        raise ModelError(
            f"{source}: this whole-{model} weight file does not fit the network built with these options "
            f"(backbone, in_chans, num_classes, head sizes): missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape-mismatched {mismatched[:5]}")
    net.load_state_dict(state, strict=True)
    net.load_report = LoadReport(source=str(source), loaded=sorted(state),  # type: ignore[attr-defined]
                                 notes=[f"whole {model} state_dict, loaded strictly"])


def _build_backbone(backbone: str, num_classes: int, pretrained: Any, backbone_kwargs: dict[str, Any]) -> FERModel:
    if backbone in ("mcd_net", "afn_net"):
        raise ModelError(f"backbone {backbone!r} is itself a UDA wrapper; name a plain backbone (e.g. resnet18)")
    return create_model(backbone, num_classes=num_classes, pretrained=pretrained, **backbone_kwargs)


def _record(net: FERModel, name: str, **kwargs: Any) -> None:
    """What the checkpoint sidecar needs to rebuild ``net`` with ``create_model(name, **kwargs)``."""
    net.registry_name = name  # type: ignore[attr-defined]
    net.build_kwargs = kwargs  # type: ignore[attr-defined]


class MCDNet(FERModel):
    """Backbone ``F`` + classifiers ``C1, C2``; prediction = average of their softmax (DIFC Eq. 8).

    ``forward_features(x) = F(x)``; ``forward_heads(f) = (C1 f, C2 f)`` (logits, for training);
    ``forward_head(f) = log(½ softmax(C1 f) + ½ softmax(C2 f))``. The backbone's own classifier is
    not used.
    """

    def __init__(self, backbone: FERModel, num_classes: int, head_hidden: int = 0, dropout: float = 0.5,
                 head: str = "linear", logit_scale: float = 1.0) -> None:
        super().__init__()
        if not float(logit_scale) > 0:
            raise ModelError(f"mcd_net: logit_scale must be > 0, got {logit_scale!r}")
        self.logit_scale = float(logit_scale)
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_features = backbone.num_features
        self.pretrained_cfg = dict(backbone.pretrained_cfg)
        self.head_hidden, self.dropout, self.head_kind = head_hidden, dropout, head
        self.c1 = ClassifierHead(self.num_features, num_classes, head_hidden, dropout, head)
        self.c2 = ClassifierHead(self.num_features, num_classes, head_hidden, dropout, head)

    @property
    def uses_landmarks(self) -> bool:
        return bool(getattr(self.backbone, "uses_landmarks", False))

    def forward_features(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        if landmarks is not None and self.uses_landmarks:
            return self.backbone.forward_features(x, landmarks=landmarks)
        return self.backbone.forward_features(x)

    def forward_heads(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.c1(f), self.c2(f)

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """A classifier's class probabilities, ``softmax(logit_scale · z)`` in fp32 (``logit_scale`` = the DI loss's
        ``s`` for normed classifiers, whose logits are cosines; 1 for linear ones)."""
        return (z.float() * self.logit_scale).softmax(-1)

    def averaged_probs(self, f: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.forward_heads(f)
        return 0.5 * (self.probs(z1) + self.probs(z2))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.averaged_probs(f).clamp_min(1e-12).log()

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.c1 = ClassifierHead(self.num_features, num_classes, self.head_hidden, self.dropout, self.head_kind)
        self.c2 = ClassifierHead(self.num_features, num_classes, self.head_hidden, self.dropout, self.head_kind)


@register_model("mcd_net", description="MCD: any backbone + two classifiers; prediction = averaged softmax")
def mcd_net(num_classes: int = 7, pretrained: str | None = None, backbone: str = "resnet18",
            backbone_kwargs: dict[str, Any] | None = None, in_chans: int | None = None, head_hidden: int = 0,
            dropout: float = 0.5, head: str = "linear", logit_scale: float = 1.0) -> MCDNet:
    """MCD network on any registered ``backbone`` (built with ``backbone_kwargs``; ``in_chans`` is passed on).

    ``pretrained`` is a local weight file: either a whole ``mcd_net`` (keys ``backbone.*`` and ``c1.*``/``c2.*``,
    e.g. a saved ``state_dict`` or a fairexpr checkpoint), loaded strictly, or weights of the backbone alone,
    handed to the backbone's own loader (key remaps, first-conv adaptation, load report).
    """
    bkw = _backbone_kwargs("mcd_net", backbone_kwargs, in_chans)
    backbone_file, state = _split_pretrained(pretrained, ("c1.", "c2."), backbone)
    net = MCDNet(_build_backbone(backbone, num_classes, backbone_file, bkw), num_classes, head_hidden, dropout, head,
                 logit_scale)
    if state is not None:
        _load_whole(net, state, pretrained, "mcd_net")
    _record(net, "mcd_net", backbone=backbone, backbone_kwargs=bkw, head_hidden=head_hidden, dropout=dropout, head=head,
            logit_scale=float(logit_scale))
    return net


# -------------------------------------------------------------------------------------------- AFN
class AFNBlock(nn.Module):
    """AFN bottleneck: Linear-BN-ReLU-Dropout; in training the output is scaled by ``√(1 − p)`` so the
    feature norm seen by the norm loss matches evaluation (as in AFN / TLlib)."""

    def __init__(self, in_features: int, bottleneck_dim: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ModelError(f"AFNBlock: dropout must be in [0, 1), got {dropout}")
        self.fc = nn.Linear(in_features, bottleneck_dim)
        self.bn = nn.BatchNorm1d(bottleneck_dim)
        self.p = dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.drop(F.relu(self.bn(self.fc(x))))
        if self.training:
            f = f * math.sqrt(1.0 - self.p)
        return f


class AFNNet(FERModel):
    """Backbone + :class:`AFNBlock` + linear classifier; ``forward_features`` is the block output."""

    def __init__(self, backbone: FERModel, num_classes: int, bottleneck_dim: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_features = bottleneck_dim
        self.pretrained_cfg = dict(backbone.pretrained_cfg)
        self.bottleneck = AFNBlock(backbone.num_features, bottleneck_dim, dropout)
        self.fc = nn.Linear(bottleneck_dim, num_classes)

    @property
    def uses_landmarks(self) -> bool:
        return bool(getattr(self.backbone, "uses_landmarks", False))

    def forward_features(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        if landmarks is not None and self.uses_landmarks:
            return self.bottleneck(self.backbone.forward_features(x, landmarks=landmarks))
        return self.bottleneck(self.backbone.forward_features(x))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)


@register_model("afn_net", description="SAFN: any backbone + AFN bottleneck block + linear classifier")
def afn_net(num_classes: int = 7, pretrained: str | None = None, backbone: str = "resnet18",
            backbone_kwargs: dict[str, Any] | None = None, in_chans: int | None = None, bottleneck_dim: int = 1000,
            dropout: float = 0.5) -> AFNNet:
    """SAFN network on any registered ``backbone`` (built with ``backbone_kwargs``; ``in_chans`` is passed on).

    ``pretrained`` is a local weight file: either a whole ``afn_net`` (keys ``backbone.*`` and
    ``bottleneck.*``, e.g. a saved ``state_dict`` or a fairexpr checkpoint), loaded strictly, or weights of
    the backbone alone, handed to the backbone's own loader.
    """
    bkw = _backbone_kwargs("afn_net", backbone_kwargs, in_chans)
    backbone_file, state = _split_pretrained(pretrained, ("bottleneck.",), backbone)
    net = AFNNet(_build_backbone(backbone, num_classes, backbone_file, bkw), num_classes, bottleneck_dim, dropout)
    if state is not None:
        _load_whole(net, state, pretrained, "afn_net")
    _record(net, "afn_net", backbone=backbone, backbone_kwargs=bkw, bottleneck_dim=bottleneck_dim, dropout=dropout)
    return net
