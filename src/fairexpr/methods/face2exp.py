"""Meta-Face2Exp (Zeng et al., "Face2Exp: Combating Data Biases for Facial Expression Recognition", CVPR 2022).

Two networks of the same registered architecture:

* the **base network** ``B`` (θ_B) learns expression knowledge from class-balanced labelled FER data and
  pseudo-labels unlabelled face-recognition (FR) images;
* the **adaptation network** ``A`` (θ_A) learns only from B's pseudo-labels on the FR images.

One training step on a labelled batch ``(x_FER, y_FER)`` and an unlabelled batch ``x_FR`` (weak view
``x_w``, strong view ``x_s = Aug(x_FR)``), with ``q = softmax(B(x_w) / T)`` (no gradient; B in eval mode by
default, ``pseudo_label_bn``):

1. pseudo-labels ``ŷ = argmax_k q_k`` (``pseudo_label=hard``, as MPL) or the distribution ``q`` (``soft``);
2. ``L_s = CE(y_FER, B(x_FER))``;
   ``L_c = mean_i 1[max_k q_ik >= τ] · CE(q_i, B(x_s,i))`` (UDA/MPL consistency with confidence mask);
3. A's step: ``g_old = ∇_{θ_A} L_u(θ_A)`` with ``L_u = CE(ŷ, A(x_a))`` (``x_a`` = the weak view by
   default, as the paper's L_u; the strong view with ``adaptation_view=strong``, as MPL's student); A's optimizer takes its step on ``L_u`` (θ_A → θ_A'); then
   ``g_new = ∇_{θ_A'} CE(y_FER, A(x_FER; θ_A'))`` and the de-biasing factor

   ``f = η_A · g_newᵀ g_old``                                   (``feedback=exact``, default)

   or its first-order finite-difference estimate (Meta Pseudo Labels)

   ``f ≈ CE(y_FER, A(x_FER; θ_A)) − CE(y_FER, A(x_FER; θ_A'))``   (``feedback=mpl``);

   by Taylor, ``L(θ_A − η_A g_old) ≈ L(θ_A) − η_A ∇L(θ_A)ᵀ g_old``, so *old − new* has the sign of ``f``
   (kekmodel/MPL-pytorch's ``s_loss_l_new − s_loss_l_old`` has the opposite sign; see docs/methods.md);
4. ``L_f = f · CE(ŷ, B(x_w))`` and B's step on ``L_B = L_s + λ_c L_c + L_f``.

``f > 0``: learning B's pseudo-labels moved A *down* the labelled loss, so B is pushed *along* its pseudo-labels
(descending ``f · CE(ŷ, B)`` raises ``p_B(ŷ)``); ``f < 0``: against them, with strength ``|f|``. ``f`` is a
constant (detached) in ``L_f``. ``η_A`` is A's current learning rate (after the schedule).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..losses import build_loss
from .base import DataInfo, Method, StepContext, register_method
from .supervised import build_network

__all__ = ["Face2Exp", "pseudo_labels", "consistency_loss", "adaptation_loss", "feedback_loss",
           "feedback_exact", "feedback_mpl", "flat_dot"]


# ------------------------------------------------------------------------------------------------ pieces
def pseudo_labels(logits_weak: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q = softmax(z_w / T)`` (detached), its confidence ``max_k q_k`` and the hard label ``argmax_k q_k``."""
    q = torch.softmax(logits_weak.detach().float() / temperature, dim=-1)
    conf, hard = q.max(dim=-1)
    return q, conf, hard


def consistency_loss(logits_strong: torch.Tensor, q: torch.Tensor, conf: torch.Tensor, threshold: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``L_c = (1/N) Σ_i 1[conf_i ≥ τ] · (−Σ_k q_ik log softmax(z_s,i)_k)``; returns ``(L_c, mask)``.

    The mean runs over *all* N unlabelled images (masked ones contribute 0), as in UDA / MPL.
    """
    mask = conf.ge(threshold).float()
    ce = -(q * F.log_softmax(logits_strong.float(), dim=-1)).sum(-1)
    return (ce * mask).mean(), mask


def adaptation_loss(logits: torch.Tensor, q: torch.Tensor, hard: torch.Tensor, soft: bool = False) -> torch.Tensor:
    """``L_u = CE(ŷ, A(x))`` with hard ``ŷ = argmax q`` or, with ``soft=True``, ``−(1/N) Σ_i Σ_k q_ik log p_A,ik``."""
    if soft:
        return -(q * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
    return F.cross_entropy(logits.float(), hard)


def feedback_loss(f: torch.Tensor | float, logits_weak: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """``L_f = f · CE(ŷ, B(x_w))`` with ``f`` a constant (no gradient flows into it)."""
    f_t = f.detach() if isinstance(f, torch.Tensor) else torch.as_tensor(float(f))
    return f_t.to(logits_weak.device).float() * F.cross_entropy(logits_weak.float(), hard)


def flat_dot(a: Sequence[torch.Tensor | None], b: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """``Σ_p ⟨a_p, b_p⟩`` over parameter tensors (the dot product of the flattened gradients); ``None`` = 0."""
    if len(a) != len(b):
        raise ValueError(f"flat_dot: {len(a)} vs {len(b)} tensors")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return torch.zeros(())
    return torch.stack([(x.double() * y.double()).sum() for x, y in pairs]).sum().float()


def feedback_exact(g_new: Sequence[torch.Tensor | None], g_old: Sequence[torch.Tensor | None], lr: float) -> torch.Tensor:
    """``f = η_A · g_newᵀ g_old`` (Face2Exp's de-biasing factor; MPL's teacher signal)."""
    return float(lr) * flat_dot(g_new, g_old)


def feedback_mpl(loss_old: torch.Tensor, loss_new: torch.Tensor) -> torch.Tensor:
    """First-order estimate ``f ≈ L_FER(θ_A) − L_FER(θ_A')`` of ``η_A · ∇L_FER(θ_A)ᵀ g_old`` (MPL's trick,
    with the sign that agrees with :func:`feedback_exact`)."""
    return (loss_old.detach() - loss_new.detach()).float()


@contextmanager
def preserved_buffers(module: nn.Module) -> Iterator[None]:
    """Run train-mode forwards whose BatchNorm running-statistics updates are undone afterwards (the
    feedback measurement forwards must not count as training data of A)."""
    saved = {k: v.detach().clone() for k, v in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in module.named_buffers():
                v.copy_(saved[k])


def _ramp(step: int, warmup: int) -> float:
    """Linear warm-up weight ``min(1, (step + 1) / warmup)`` (1 when ``warmup = 0``), as UDA/MPL."""
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


# ------------------------------------------------------------------------------------------------ method
@register_method("face2exp")
class Face2Exp(Method):
    """Meta-Face2Exp: base network B + adaptation network A with circuit feedback (see module docstring).

    ``self.base`` and ``self.adaptation`` are both submodules (both are checkpointed in the training state);
    ``self.model`` (the deployable network, what eval/predict/export use) is B by default (``deploy``); the
    other network is saved and evaluated next to it (:meth:`companion_networks`).
    Two optimizers, built from the config's ``optim`` section: ``[B's, A's]``.
    """

    automatic_optimization = False
    needs_unlabelled = True
    option_defaults: dict[str, Any] = {
        "unlabelled_ratio": 7,            # μ: unlabelled batch = μ × labelled batch (MPL / Face2Exp code)
        "threshold": 0.95,                # τ of the consistency mask (UDA / MPL)
        "lambda_c": 1.0,                  # weight of L_c (Face2Exp code: λ_u = 1)
        "temperature": 1.0,               # T of q = softmax(B(x_w)/T)
        "pseudo_label": "hard",           # hard | soft: A's targets
        "pseudo_label_bn": "running",     # running | batch: B's BatchNorm statistics when it pseudo-labels x_w
        "adaptation_view": "weak",        # weak (paper: L_u = CE(ŷ, A(x_FR))) | strong (MPL's student): A's view of x_FR
        "feedback": "exact",              # exact | mpl
        "warmup_steps": 0,                # linear ramp of the feedback term L_f over the first steps
        "consistency_warmup_steps": 0,    # linear ramp of λ_c (MPL's --uda-steps)
        "adaptation_lr": None,            # A's base lr (null = optim.lr); scheduled like B's
        "deploy": "base",                 # base | adaptation: which network is self.model (docs/methods.md)
        "feedback_baseline": 0.0,         # decay of an EMA baseline subtracted from f (MPL-pytorch: 0.99; 0 = none)
    }

    def __init__(self, config: dict[str, Any], info: DataInfo) -> None:
        super().__init__()
        o = {**self.option_defaults, **{k: v for k, v in config["method"].items() if k != "name"}}
        self.opts = o
        self._validate(o, config)
        self.unlabelled_ratio = int(o["unlabelled_ratio"])
        self.base = build_network(config, info)
        self.adaptation = build_network(config, info)
        lc = config.get("loss") or {"name": "ce"}
        self.sup_loss = build_loss(lc["name"], class_counts=info.class_counts, **(lc.get("kwargs") or {}))
        self._opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer] | None = None
        # EMA of f for feedback_baseline (a buffer: checkpointed, restored by --resume)
        self.register_buffer("feedback_ema", torch.zeros((), dtype=torch.float64))

    def on_train_epoch_start(self, epoch: int, engine: Any) -> dict[str, Any] | None:
        """The supervised loss's epoch hook (LDAM-DRW's deferred re-weighting switches on at ``drw_epoch``)."""
        if hasattr(self.sup_loss, "set_epoch"):
            self.sup_loss.set_epoch(epoch)
            return {"loss_reweighted": int(getattr(self.sup_loss, "weight", None) is not None)}
        return None

    @staticmethod
    def _validate(o: dict[str, Any], config: dict[str, Any]) -> None:
        def need(cond: bool, key: str, what: str) -> None:
            if not cond:
                raise ConfigError(f"method.{key} {what}, got {o[key]!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(is_int(o["unlabelled_ratio"]) and o["unlabelled_ratio"] >= 1, "unlabelled_ratio", "must be an integer >= 1")
        need(isinstance(o["threshold"], (int, float)) and 0 <= o["threshold"] <= 1, "threshold", "must be in [0, 1]")
        need(isinstance(o["lambda_c"], (int, float)) and o["lambda_c"] >= 0, "lambda_c", "must be a number >= 0")
        need(isinstance(o["temperature"], (int, float)) and o["temperature"] > 0, "temperature", "must be > 0")
        need(o["pseudo_label"] in ("hard", "soft"), "pseudo_label", "must be hard|soft")
        need(o["pseudo_label_bn"] in ("running", "batch"), "pseudo_label_bn", "must be running|batch")
        need(o["adaptation_view"] in ("strong", "weak"), "adaptation_view", "must be strong|weak")
        need(o["feedback"] in ("exact", "mpl"), "feedback", "must be exact|mpl")
        need(is_int(o["warmup_steps"]) and o["warmup_steps"] >= 0, "warmup_steps", "must be an integer >= 0")
        need(is_int(o["consistency_warmup_steps"]) and o["consistency_warmup_steps"] >= 0, "consistency_warmup_steps",
             "must be an integer >= 0")
        need(o["adaptation_lr"] is None or (isinstance(o["adaptation_lr"], (int, float)) and o["adaptation_lr"] > 0),
             "adaptation_lr", "must be null or > 0")
        need(o["deploy"] in ("adaptation", "base"), "deploy", "must be adaptation|base")
        need(isinstance(o["feedback_baseline"], (int, float)) and not isinstance(o["feedback_baseline"], bool)
             and 0 <= o["feedback_baseline"] < 1, "feedback_baseline", "must be in [0, 1)")
        prec = str((config.get("train") or {}).get("precision", "32-true"))
        if prec.startswith("16"):
            raise ConfigError(f"train.precision={prec!r}: Meta-Face2Exp's feedback factor reads A's gradients, which "
                              f"fp16 loss scaling rescales; use 32-true or bf16-mixed")

    # -------------------------------------------------------------------------------------- plumbing
    @property
    def model(self) -> nn.Module:  # type: ignore[override]
        """The deployable network: B (``deploy=base``, default) or A (``deploy=adaptation``)."""
        return self.adaptation if self.opts["deploy"] == "adaptation" else self.base

    def companion_networks(self) -> dict[str, nn.Module]:
        """The network that is not deployed (``adaptation`` by default), saved and evaluated next to ``self.model``."""
        return {"base": self.base} if self.opts["deploy"] == "adaptation" else {"adaptation": self.adaptation}

    def configure_optimizers(self, build_optimizer: Callable[..., torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
        lr = float(build_optimizer.base_lr)  # type: ignore[attr-defined]
        lr_a = float(self.opts["adaptation_lr"] or lr)
        opt_b = build_optimizer([{"params": [p for p in self.base.parameters() if p.requires_grad], "lr": lr}])
        opt_a = build_optimizer([{"params": [p for p in self.adaptation.parameters() if p.requires_grad], "lr": lr_a}])
        self._opts = (opt_b, opt_a)
        return [opt_b, opt_a]

    def _optimizers(self, ctx: StepContext) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        if len(ctx.optimizers) >= 2:
            return ctx.optimizers[0], ctx.optimizers[1]
        if self._opts is None:
            raise RuntimeError("Face2Exp.training_step: configure_optimizers was not called")
        return self._opts

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    # -------------------------------------------------------------------------------------- the step
    def adaptation_step(self, x_a: torch.Tensor, q: torch.Tensor, hard: torch.Tensor, x_l: torch.Tensor,
                        y_l: torch.Tensor, opt_a: torch.optim.Optimizer, ctx: StepContext
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """A's step on ``L_u`` and the feedback factor ``f`` (see module docstring); returns ``(L_u, f)``."""
        params = [p for p in self.adaptation.parameters() if p.requires_grad]
        mpl = self.opts["feedback"] == "mpl"
        opt_a.zero_grad(set_to_none=True)
        if mpl:
            with torch.no_grad(), preserved_buffers(self.adaptation):
                loss_old = F.cross_entropy(self.adaptation(x_l).float(), y_l)
        loss_u = adaptation_loss(self.adaptation(x_a), q, hard, soft=self.opts["pseudo_label"] == "soft")
        ctx.backward(loss_u)
        eta = float(opt_a.param_groups[0]["lr"])
        # g_old is read before clipping / the step (both modify or consume .grad)
        g_old = None if mpl else [None if p.grad is None else p.grad.detach().clone() for p in params]
        ctx.step_optimizer(opt_a)
        with preserved_buffers(self.adaptation):
            if mpl:
                with torch.no_grad():
                    loss_new = F.cross_entropy(self.adaptation(x_l).float(), y_l)
                f = feedback_mpl(loss_old, loss_new)
            else:
                loss_new = F.cross_entropy(self.adaptation(x_l).float(), y_l)
                g_new = torch.autograd.grad(loss_new, params, allow_unused=True)
                f = feedback_exact(g_new, g_old, eta)  # type: ignore[arg-type]
        return loss_u.detach(), f.to(x_l.device)

    @torch.no_grad()
    def baselined(self, f: torch.Tensor) -> torch.Tensor:
        """``f − b`` with ``b ← β b + (1 − β) f`` updated first (MPL-pytorch's ``moving_dot_product``, β = 0.99
        there); ``β = 0`` (``feedback_baseline``, default) returns ``f`` unchanged. The baseline is REINFORCE's
        variance reduction: a factor that is persistently negative (A's labelled loss rising after every
        pseudo-label step, as when A is still far from B) would otherwise push B against *all* its
        pseudo-labels, i.e. maximise an unbounded cross-entropy, and wreck B (README, Meta-Face2Exp)."""
        beta = float(self.opts["feedback_baseline"])
        if beta == 0.0:
            return f
        self.feedback_ema.mul_(beta).add_((1.0 - beta) * f.detach().to(torch.float64))
        return (f - self.feedback_ema.to(f.dtype)).detach()

    @torch.no_grad()
    def teacher_logits(self, x_w: torch.Tensor) -> torch.Tensor:
        """B's logits on the weak view as the network it is at test time (``eval()``: BatchNorm running
        statistics, no dropout; nothing is updated), for ``pseudo_label_bn=running``.

        MPL labels with the teacher's train-mode forward of the concatenated labelled + unlabelled batch
        (``pseudo_label_bn=batch``). With class-balanced labelled batches and unlabelled faces from another
        dataset, those batch statistics made B call 94 % of a UTKFace batch "disgust" (a class with 44
        labelled images at 10 % of FER2013) while the same B in eval mode called 31 % of them so, and A, which
        learns only these labels, collapsed onto that class (README, Meta-Face2Exp section)."""
        was = self.base.training
        self.base.eval()
        try:
            return self.base(x_w)
        finally:
            self.base.train(was)

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        lab, unl = batch["labelled"], batch["unlabelled"]
        x_l, y_l = lab["image"], lab["label"]
        x_w, x_s = unl["image"], unl.get("image_strong")
        if x_s is None:
            raise ConfigError("face2exp: the unlabelled batch has no strong view ('image_strong')")
        opt_b, opt_a = self._optimizers(ctx)
        opt_b.zero_grad(set_to_none=True)
        n_l, n_u = x_l.shape[0], x_w.shape[0]
        # pseudo-labels from B as it is before this step (eval mode), unless MPL's batch-statistics labels are asked for
        z_teacher = self.teacher_logits(x_w) if self.opts["pseudo_label_bn"] == "running" else None
        # B on labelled + weak + strong views in one forward (shared BatchNorm batch, as MPL's teacher)
        z = self.base(torch.cat([x_l, x_w, x_s]))
        z_l, z_w, z_s = z[:n_l], z[n_l:n_l + n_u], z[n_l + n_u:]
        q, conf, hard = pseudo_labels(z_w if z_teacher is None else z_teacher, float(self.opts["temperature"]))
        loss_s = self.sup_loss(z_l.float(), y_l)
        loss_c, mask = consistency_loss(z_s, q, conf, float(self.opts["threshold"]))
        x_a = x_s if self.opts["adaptation_view"] == "strong" else x_w
        loss_u, f = self.adaptation_step(x_a, q, hard, x_l, y_l, opt_a, ctx)
        w_c = float(self.opts["lambda_c"]) * _ramp(ctx.step, int(self.opts["consistency_warmup_steps"]))
        w_f = _ramp(ctx.step, int(self.opts["warmup_steps"]))
        f_raw = f
        f = self.baselined(f)
        loss_f = feedback_loss(f, z_w, hard)
        loss_b = loss_s + w_c * loss_c + w_f * loss_f
        ctx.backward(loss_b)
        ctx.step_optimizer(opt_b)
        return {"loss": loss_b.detach(), "loss_s": loss_s.detach(), "loss_c": loss_c.detach(), "loss_u": loss_u,
                "loss_f": loss_f.detach(), "feedback": f_raw.detach(), "feedback_used": f.detach(), "mask": mask.mean(),
                "acc": (z_l.argmax(1) == y_l).float().mean()}
