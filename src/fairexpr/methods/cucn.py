r"""CUCN (Fan et al. 2022, "Combating Uncertainty and Class Imbalance in Facial Expression Recognition").

Network: any registered backbone (the recipe: ``cbam_resnet18``, CBAM in every BasicBlock) built with
``head='uncertainty'`` — RUL's two-feature head :class:`~fairexpr.models.heads.UncertaintyHead` on the
pooled embedding h: a discriminative feature μ, an uncertainty feature log σ² (``feat_dim`` 64,
dropout 0.4) and a linear classifier W on μ. The deployable ``self.model`` is that registered model,
so :func:`fairexpr.engine.load_model` rebuilds it from the checkpoint sidecar; its ``forward``
classifies μ alone.

Training step (RUL's ``mixup_data`` / ``mixup_criterion``, see :mod:`fairexpr.losses.rul`): draw a
permutation π of the batch (``torch.randperm``, from the engine's per-epoch seed), then

.. math::
    a_i = \tfrac{1}{D}\sum_d e^{\log\sigma^2_{i,d}},\qquad
    w_i = \frac{a_i}{a_i + a_{\pi(i)}},\qquad
    \tilde\mu_i = w_i\,\mu_i + (1 - w_i)\,\mu_{\pi(i)}

(the weight computed from sample i's *own* uncertainty multiplies μ_i — RUL's direction), and with
CUCN's class weights :math:`W_n` (Eq. 1) the mixed loss (Eq. 2, RUL's ½-averaged form by default)

.. math::
    L = \frac{1}{N}\sum_i c\,\big[W_{y_i}\,\mathrm{CE}(W\tilde\mu_i, y_i)
        + W_{y_{\pi(i)}}\,\mathrm{CE}(W\tilde\mu_i, y_{\pi(i)})\big],\qquad c = \tfrac12\ (\text{RUL})\ \text{or}\ 1.

``mixing: false`` (the ablation rows without mixing) trains :math:`\frac1N\sum_i W_{y_i}\,\mathrm{CE}(W\mu_i, y_i)`
with the same head, the same weights and the same 1/N normalisation, so the rows differ by one factor.
At test time (``predict``) the classifier is applied to μ alone; the embedding returned is μ.

Options (``method:`` section of the config): see :attr:`CUCN.option_defaults`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError
from ..losses import MixedUncertaintyLoss, class_weights, uncertainty_mix
from ..models.heads import UncertaintyHead
from .base import DataInfo, Method, StepContext, register_method
from .supervised import build_network

WEIGHT_RULE_NAMES = ("none", "inverse", "sqrt", "effective")


def resolve_class_weights(spec: Any, info: DataInfo, beta: float = 0.9999) -> torch.Tensor | None:
    """CUCN's per-class weights W_n (Eq. 1) from the ``method.class_weights`` option.

    ``spec``: ``none`` | ``inverse`` | ``sqrt`` | ``effective`` (computed from the training class counts by
    :func:`fairexpr.losses.class_weights`), a hand-set list ``[w_0, ..., w_{K-1}]`` in ``info.classes``
    order, or a mapping ``{class_name: weight}`` naming every class (the paper sets its weights by hand
    per dataset). Raises :class:`ConfigError` naming ``method.class_weights``.
    """
    where = "method.class_weights"
    if spec is None or spec is False:
        return None
    if isinstance(spec, str):
        if spec not in WEIGHT_RULE_NAMES:
            raise ConfigError(f"{where}: {spec!r}; expected one of {', '.join(WEIGHT_RULE_NAMES)}, "
                              "a list of per-class weights, or a mapping class -> weight")
        try:
            return class_weights(spec, info.class_counts, beta=beta)
        except ValueError as e:
            raise ConfigError(f"{where}={spec!r}: {e}") from None
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(info.classes))
        missing = [c for c in info.classes if c not in spec]
        if unknown or missing:
            raise ConfigError(f"{where}: the mapping must name every training class exactly "
                              f"({', '.join(info.classes)}); unknown {unknown}, missing {missing}")
        spec = [spec[c] for c in info.classes]
    if isinstance(spec, (Sequence, torch.Tensor)) and not isinstance(spec, (str, bytes)):
        if len(spec) != info.num_classes:
            raise ConfigError(f"{where}: got {len(spec)} weights for {info.num_classes} classes ({', '.join(info.classes)})")
        try:
            return class_weights("manual", info.class_counts, manual=list(spec) if not isinstance(spec, torch.Tensor) else spec)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    raise ConfigError(f"{where}: expected a rule name, a list or a mapping, got {type(spec).__name__}")


@register_method("cucn")
class CUCN(Method):
    """CUCN: class-weighted, uncertainty-mixed training of a two-feature (μ, log σ²) network."""

    uses_head_lr_mult = True

    option_defaults: dict[str, Any] = {
        "mixing": True,  # RUL uncertainty mixing of μ (false: weighted CE on μ; ablation)
        "class_weights": "inverse",  # Eq. 1 W_n: none | inverse | sqrt | effective | [w_0..] | {class: w}
        "weight_beta": 0.9999,  # β of the 'effective' rule
        "feat_dim": 64,  # dimension of μ and log σ² (RUL: 64)
        "dropout": 0.4,  # dropout inside both branches of the head (RUL: 0.4)
        "average_terms": True,  # ½(CE_a + CE_b) as RUL's code (false: Eq. 2 as written, the sum)
        "head_lr": None,  # absolute lr of the head group; null -> optim.lr * optim.head_lr_mult
        "head_lr_scope": "classifier",  # which parameters get head_lr: classifier (RUL: fc only) | head
    }

    def __init__(self, config: dict[str, Any], info: DataInfo) -> None:
        super().__init__()
        self.options = opts = self.resolve_options(config.get("method") or {})
        mkw = dict((config.get("model") or {}).get("kwargs") or {})
        if mkw.get("head", "uncertainty") != "uncertainty":
            raise ConfigError(f"model.kwargs.head: method 'cucn' needs the 'uncertainty' head (μ, log σ²), "
                              f"got {mkw['head']!r}; remove the key")
        head_kwargs = dict(mkw.get("head_kwargs") or {})
        head_kwargs.update(feat_dim=opts["feat_dim"], drop_rate=opts["dropout"])
        self.model = build_network(config, info, head="uncertainty", head_kwargs=head_kwargs)
        head = self.model.get_classifier() if hasattr(self.model, "get_classifier") else None
        if not isinstance(head, UncertaintyHead):
            raise ConfigError(f"model.name: {config['model']['name']!r} did not build an UncertaintyHead classifier "
                              "with head='uncertainty'; CUCN needs a backbone of the model zoo that supports it")
        self.weights = resolve_class_weights(opts["class_weights"], info, opts["weight_beta"])
        self.criterion = MixedUncertaintyLoss(self.weights, average_terms=opts["average_terms"], num_classes=info.num_classes)
        self.plain_criterion = MixedUncertaintyLoss(self.weights, average_terms=True, num_classes=info.num_classes)
        o = config.get("optim") or {}
        base_lr = float(o.get("lr", 1e-4))
        if opts["head_lr"] is not None and float(o.get("head_lr_mult", 1.0)) != 1.0:
            raise ConfigError(f"method.head_lr={opts['head_lr']} and optim.head_lr_mult={o['head_lr_mult']} both set the "
                              "classifier's learning rate; keep one (head_lr is absolute, head_lr_mult multiplies optim.lr)")
        self.head_lr = float(opts["head_lr"]) if opts["head_lr"] is not None else base_lr * float(o.get("head_lr_mult", 1.0))

    @classmethod
    def resolve_options(cls, method_cfg: Mapping[str, Any]) -> dict[str, Any]:
        """``option_defaults`` overridden by ``config['method']``; unknown keys and bad values raise."""
        opts = dict(cls.option_defaults)
        for k, v in method_cfg.items():
            if k == "name":
                continue
            if k not in opts:
                raise ConfigError(f"method.{k}: unknown option for method 'cucn'; known: {', '.join(sorted(opts))}")
            opts[k] = v
        for k in ("mixing", "average_terms"):
            if not isinstance(opts[k], bool):
                raise ConfigError(f"method.{k}: must be true or false, got {opts[k]!r}")
        fd = opts["feat_dim"]
        if isinstance(fd, bool) or not isinstance(fd, int) or fd < 1:
            raise ConfigError(f"method.feat_dim: must be a positive integer, got {fd!r}")
        dr = opts["dropout"]
        if isinstance(dr, bool) or not isinstance(dr, (int, float)) or not 0.0 <= float(dr) < 1.0:
            raise ConfigError(f"method.dropout: must be a number in [0, 1), got {dr!r}")
        opts["dropout"] = float(dr)
        b = opts["weight_beta"]
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= float(b) < 1.0:
            raise ConfigError(f"method.weight_beta: must be a number in [0, 1), got {b!r}")
        hl = opts["head_lr"]
        if hl is not None and (isinstance(hl, bool) or not isinstance(hl, (int, float)) or hl <= 0):
            raise ConfigError(f"method.head_lr: must be null or a positive number, got {hl!r}")
        if opts["head_lr_scope"] not in ("classifier", "head"):
            raise ConfigError(f"method.head_lr_scope: must be classifier|head, got {opts['head_lr_scope']!r}")
        return opts

    # ------------------------------------------------------------------ parts
    @property
    def head(self) -> UncertaintyHead:
        return self.model.get_classifier()  # type: ignore[return-value]

    def parameter_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Backbone (and, with ``head_lr_scope: classifier``, the μ/log σ² branches, as RUL) at ``base_lr``;
        the classifier W (or the whole head) at ``head_lr`` (paper: 1e-4 / 5e-4)."""
        fast_mod = self.head.classifier if self.options["head_lr_scope"] == "classifier" else self.head
        fast_ids = {id(p) for p in fast_mod.parameters()}
        fast = [p for p in fast_mod.parameters() if p.requires_grad]
        slow = [p for p in self.parameters() if p.requires_grad and id(p) not in fast_ids]
        return [{"params": slow, "lr": base_lr, "name": "backbone"},
                {"params": fast, "lr": self.head_lr, "name": self.options["head_lr_scope"]}]

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ²)``, each ``[B, feat_dim]``."""
        return self.head.features(self.model.forward_features(images))

    def mu_features(self, images: torch.Tensor) -> torch.Tensor:
        """μ alone ``[B, feat_dim]`` (the test-time feature; the log σ² branch is not run)."""
        return self.head.mu(self.model.forward_features(images))

    def mix(self, mu: torch.Tensor, logvar: torch.Tensor, perm: torch.Tensor) -> dict[str, torch.Tensor]:
        """RUL mixing of μ with the partners ``perm`` (see :func:`fairexpr.losses.uncertainty_mix`) and the
        classifier's logits of the mix: ``{"mixed", "w_i", "w_j", "logits"}``."""
        mixed, w_i, w_j = uncertainty_mix(mu, logvar, perm)
        return {"mixed": mixed, "w_i": w_i, "w_j": w_j, "logits": self.head.classify(mixed)}

    def compute_loss(self, images: torch.Tensor, labels: torch.Tensor,
                     perm: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss and diagnostics of one batch; ``perm`` (drawn with ``torch.randperm`` when None) is the
        mixing partner of each sample. With ``mixing: false`` ``perm`` is ignored."""
        labels = labels.long()
        if not self.options["mixing"]:
            logits = self.head.classify(self.mu_features(images)).float()
            loss = self.plain_criterion(logits, labels, labels)  # = (1/N) Σ W_{y_i} CE(Wμ_i, y_i)
            return {"loss": loss, "acc": (logits.argmax(1) == labels).float().mean()}
        mu, logvar = self.features(images)
        if perm is None:
            perm = torch.randperm(mu.shape[0], device=mu.device)
        out = self.mix(mu.float(), logvar.float(), perm)
        logits = out["logits"].float()
        loss = self.criterion(logits, labels, labels[perm])
        return {
            "loss": loss,
            "acc": (logits.argmax(1) == labels).float().mean(),  # as RUL: mixed logits vs own label
            "mix_weight_dev": (out["w_i"] - 0.5).abs().mean().detach(),  # 0 = even mix, 0.5 = one-sided
            "mean_var": (torch.logsumexp(logvar.float(), 1) - math.log(logvar.shape[1])).exp().mean().detach(),  # mean a_i
        }

    # ------------------------------------------------------------------ protocol
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        return self.compute_loss(batch["image"], batch["label"])

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Classify μ alone (no mixing; call ``.eval()`` first so dropout is off — the engine does)."""
        mu = self.mu_features(images)
        logits = self.head.classify(mu)
        return {"logits": logits, "probs": logits.softmax(-1), "embedding": mu}

    def extra_state(self) -> dict[str, Any]:
        return {"class_weights": None if self.weights is None else [float(w) for w in self.weights]}
