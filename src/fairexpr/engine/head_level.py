"""The head-level protocol (``docs/benchmarks.md``): the claims that live in a loss or a head, tested on fixed
backbone embeddings (:mod:`fairexpr.engine.embed`) for the paper's full schedule and many seeds in minutes.

It complements the end-to-end cells and never replaces them: the backbone does not learn, so a claim about how
a loss shapes *features* (DANN's alignment, CBAM's attention) cannot be tested here. What can: a loss or a head
on top of given features. Each **head recipe** pairs a registered head (:func:`fairexpr.models.heads.build_head`)
with a registered loss (:func:`fairexpr.losses.build_loss`) — the same modules the engine's methods use:

* ``ce`` — linear head, cross-entropy;
* ``weighted_ce`` — linear head, inverse-frequency class-weighted CE (CUCN Eq. 1);
* ``ldam_drw`` — cosine (normed) head, LDAM (the DI loss of DIFC) with deferred re-weighting;
* ``difc`` — ``ldam_drw`` whose margins, from the middle of the schedule on, get DIFC's feature-confusion
  increments (Eqs. 4-6) from the head's own predictions on the unlabelled *target* embeddings, re-estimated
  every epoch (margins only: with fixed features there is no domain alignment);
* ``rul`` / ``rul_weighted`` — RUL's uncertainty head with uncertainty mixing (CUCN Eq. 2), without / with
  the class weights;
* ``rb`` — GReFEL's reliability-balancing head (anchors + MHSA, :class:`fairexpr.models.reliability.ReliabilityHead`)
  with its full loss ``L_cls + L_a + L_c`` (:class:`fairexpr.losses.grefel.GReFELLoss`); ``rb_none`` the same head
  without RB (no anchors, no MHSA: ``L_final = l``, loss ``L_cls``); ``rb_cls`` / ``rb_cls_a`` the full head trained
  with ``L_cls`` / ``L_cls + L_a`` only. Head options and loss weights are ``configs/grefel_dlib_cpu.yaml``'s
  (:data:`RB_HEAD`, λ_a = 1, λ_c = 0.01; the anchors normal-initialised, as in the runs this protocol was committed
  with — the recipe's ``anchor_init: data`` answers a backbone pulled to its anchors end to end, which fixed
  embeddings cannot be); the prediction is ``argmax L_final``.

Training: features standardised with the training set's mean and sd, SGD (momentum 0.9, Nesterov, weight
decay 5e-4), cosine learning rate, ``epochs`` passes of shuffled batches; everything seeded by ``seed``
(including the optional symmetric label noise: a ``noise`` fraction of the training labels replaced by a
uniformly drawn *other* class).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from .embed import Embeddings

HEAD_RECIPES: dict[str, dict[str, Any]] = {
    "ce": {"head": "linear", "loss": {"name": "ce"}},
    "weighted_ce": {"head": "linear", "loss": {"name": "weighted_ce", "rule": "inverse"}},
    "ldam_drw": {"head": "normed", "loss": {"name": "ldam", "max_m": 0.5, "s": 30.0, "drw_beta": 0.9999}},
    "difc": {"head": "normed", "loss": {"name": "ldam", "max_m": 0.5, "s": 30.0, "drw_beta": 0.9999}, "difc": 0.02},
    "rul": {"head": "uncertainty", "mix": True, "weights": None},
    "rul_weighted": {"head": "uncertainty", "mix": True, "weights": "inverse"},
    "rb_none": {"head": "reliability", "rb": {"use_anchors": False, "use_mhsa": False}, "lambdas": (1.0, 0.0, 0.0)},
    "rb": {"head": "reliability", "rb": {"use_anchors": True, "use_mhsa": True}, "lambdas": (1.0, 1.0, 0.01)},
    "rb_cls": {"head": "reliability", "rb": {"use_anchors": True, "use_mhsa": True}, "lambdas": (1.0, 0.0, 0.0)},
    "rb_cls_a": {"head": "reliability", "rb": {"use_anchors": True, "use_mhsa": True}, "lambdas": (1.0, 1.0, 0.0)},
}

#: the reliability head's options in the ``rb*`` recipes (``configs/grefel_dlib_cpu.yaml``)
RB_HEAD: dict[str, Any] = {"num_anchors": 10, "delta": 1.0, "dropout": 0.1}


class RBLogits(torch.nn.Module):
    """A :class:`~fairexpr.models.reliability.ReliabilityHead` as a logits head: ``forward`` gives ``log L_final``
    (its prediction and probabilities), :meth:`reliability` the head's full output for the GReFEL loss."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.rb = head

    def reliability(self, x: torch.Tensor) -> dict[str, Any]:
        return self.rb(x)

    def anchors(self) -> torch.Tensor | None:
        return self.rb.anchors.anchors if self.rb.anchors is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rb(x)["final"].clamp_min(1e-12).log()


@dataclass
class HeadConfig:
    recipe: str = "ce"
    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.05
    weight_decay: float = 5e-4
    drw_epoch: int | None = None  # default: at 2/3 of the schedule (ldam_drw, difc)
    difc_epoch: int | None = None  # default: at half of the schedule (difc)
    noise: float = 0.0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> "HeadConfig":
        from ..errors import ConfigError

        if self.recipe not in HEAD_RECIPES:
            raise ConfigError(f"head recipe {self.recipe!r} unknown; known: {', '.join(HEAD_RECIPES)}")
        for k in ("epochs", "batch_size"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ConfigError(f"head config {k}: must be a positive int, got {getattr(self, k)!r}")
        if not 0.0 <= self.noise < 1.0:
            raise ConfigError(f"head config noise: must be in [0, 1), got {self.noise!r}")
        if not self.lr > 0:
            raise ConfigError(f"head config lr: must be > 0, got {self.lr!r}")
        return self


def symmetric_noise(labels: np.ndarray, rate: float, num_classes: int, seed: int) -> np.ndarray:
    """Replace a ``rate`` fraction of ``labels`` (exactly round(rate·N), chosen at random) by a uniformly drawn
    different class. Seeded; ``rate`` 0 returns a copy."""
    y = np.array(labels, np.int64, copy=True)
    if rate <= 0:
        return y
    rng = np.random.default_rng([seed, 7919])
    idx = rng.choice(len(y), size=int(round(rate * len(y))), replace=False)
    shift = rng.integers(1, num_classes, size=len(idx))  # 1..K-1: never the same class
    y[idx] = (y[idx] + shift) % num_classes
    return y


class HeadModel(torch.nn.Module):
    """Standardisation + a registered head; ``forward`` gives logits (the uncertainty head classifies μ)."""

    def __init__(self, head: torch.nn.Module, mean: torch.Tensor, sd: torch.Tensor) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("mean", mean)
        self.register_buffer("sd", sd)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.sd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.standardise(x))

    @torch.no_grad()
    def predict_proba(self, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        self.eval()
        x = torch.as_tensor(features, dtype=torch.float32)
        return torch.cat([self(x[i:i + batch_size]).softmax(-1) for i in range(0, len(x), batch_size)]).numpy()


def train_head(train: Embeddings, cfg: HeadConfig, target: Embeddings | None = None) -> tuple[HeadModel, dict[str, Any]]:
    """Train one head recipe on ``train``; ``target`` (unlabelled use only) is needed by ``difc``.
    Returns the model and a log (losses per epoch, the DIFC confusion orders)."""
    from ..errors import ConfigError
    from ..losses import build_loss
    from ..losses.difc import difc_margins, feature_confusion
    from ..losses.rul import MixedUncertaintyLoss, uncertainty_mix
    from ..losses.weights import class_weights
    from ..models.heads import build_head

    cfg.check()
    spec = HEAD_RECIPES[cfg.recipe]
    if spec.get("difc") and target is None:
        raise ConfigError("head recipe 'difc' needs the target embeddings (its margins come from target predictions)")
    if target is not None and target.dim != train.dim:
        raise ConfigError(f"target embeddings have {target.dim} features, the training ones {train.dim}")
    k = len(train.classes)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.as_tensor(train.features)
    y = torch.as_tensor(symmetric_noise(train.labels, cfg.noise, k, cfg.seed))
    counts = np.bincount(y.numpy(), minlength=k)
    if (counts == 0).any():
        raise ConfigError(f"training embeddings lack classes {[train.classes[i] for i in np.flatnonzero(counts == 0)]}")
    mean, sd = x.mean(0), x.std(0).clamp(min=1e-6)
    if spec.get("rb"):
        from ..losses.grefel import GReFELLoss
        from ..models.reliability import ReliabilityHead

        head: torch.nn.Module = RBLogits(ReliabilityHead(train.dim, k, **RB_HEAD, **spec["rb"]))
    else:
        head = build_head(spec["head"], train.dim, k)
    model = HeadModel(head, mean, sd)
    drw_epoch = cfg.drw_epoch if cfg.drw_epoch is not None else (2 * cfg.epochs) // 3
    difc_epoch = cfg.difc_epoch if cfg.difc_epoch is not None else cfg.epochs // 2
    if spec.get("rb"):
        crit = GReFELLoss(*spec["lambdas"])
    elif spec.get("mix"):
        w = None if spec["weights"] is None else class_weights(spec["weights"], counts)
        crit = MixedUncertaintyLoss(class_weights=w, num_classes=k)
    else:
        lcfg = dict(spec["loss"])
        if lcfg["name"] == "ldam":
            lcfg["drw_epoch"] = drw_epoch
        crit = build_loss(lcfg, class_counts=counts.tolist(), num_classes=k)
    base_margins = crit.margins.clone() if spec.get("difc") else None
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    uses_drw = spec.get("loss", {}).get("name") == "ldam"
    log: dict[str, Any] = {"epoch_loss": [], "difc_orders": [], "drw_epoch": drw_epoch if uses_drw else None,
                           "difc_epoch": difc_epoch if spec.get("difc") else None, "class_counts": counts.tolist(),
                           "noise": cfg.noise}
    for epoch in range(cfg.epochs):
        if hasattr(crit, "set_epoch"):
            crit.set_epoch(epoch)
        if base_margins is not None and epoch >= difc_epoch:
            probs = model.predict_proba(target.features)
            _, order = feature_confusion(probs)
            crit.set_margins(torch.as_tensor(difc_margins(base_margins, order, float(spec["difc"])), dtype=torch.float32))
            log["difc_orders"].append([train.classes[c] for c in order])
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        tot = 0.0
        for i in range(0, len(x), cfg.batch_size):
            b = perm[i:i + cfg.batch_size]
            if len(b) < 2 and (spec.get("mix") or spec.get("rb")):
                continue  # BatchNorm (the uncertainty and reliability heads) and mixing need two samples
            xb, yb = model.standardise(x[b]), y[b]
            if spec.get("mix"):
                mu, logvar = model.head.features(xb)
                pb = torch.randperm(len(b), generator=gen)
                mixed, _, _ = uncertainty_mix(mu, logvar, pb)
                loss = crit(model.head.classify(mixed), yb, yb[pb])
            elif spec.get("rb"):
                loss = crit(model.head.reliability(xb), yb, model.head.anchors())["loss"]
            else:
                loss = crit(model.head(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(b)
        log["epoch_loss"].append(tot / len(x))
    if hasattr(crit, "margins"):
        log["final_margins"] = [float(v) for v in crit.margins]
    model.eval()
    return model, log


def head_metrics(model: HeadModel, emb: Embeddings) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class accuracy and max-min class gap of ``model`` on ``emb``."""
    from ..evaluation.metrics import accuracy, balanced_accuracy

    pred = model.predict_proba(emb.features).argmax(1)
    k = len(emb.classes)
    per = {}
    for c in range(k):
        m = emb.labels == c
        per[emb.classes[c]] = float((pred[m] == c).mean()) if m.any() else None
    present = [v for v in per.values() if v is not None]
    return {"n": len(emb), "accuracy": accuracy(emb.labels, pred), "balanced_accuracy": balanced_accuracy(emb.labels, pred, k),
            "per_class_accuracy": per, "max_min_gap": max(present) - min(present)}


def run_cell(train: Embeddings, tests: Mapping[str, Embeddings], cfg: HeadConfig,
             target: Embeddings | None = None) -> dict[str, Any]:
    """Train ``cfg`` on ``train`` and evaluate on every test set (classes must match the training set's)."""
    from ..errors import ConfigError

    for name, e in tests.items():
        if tuple(e.classes) != tuple(train.classes):
            raise ConfigError(f"test embeddings {name!r} have classes {list(e.classes)}, training {list(train.classes)}")
    model, log = train_head(train, cfg, target)
    return {"config": cfg.__dict__ | {}, "log": log, "metrics": {n: head_metrics(model, e) for n, e in tests.items()}}
