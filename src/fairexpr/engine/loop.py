"""The training loop: one loop for every method, on Lightning Fabric (CPU, one GPU, DDP).

The engine owns devices, precision, data iteration, augmentation, LR schedule, validation,
checkpoint selection, resume, logging and final evaluation. Methods only supply their step
(see ``fairexpr.methods.base``).

Reproducibility: all randomness of an epoch (sampler order, augmentation, dropout) is seeded from
``(seed, epoch)`` at the epoch start, and checkpoints are written at epoch ends, so ``--resume`` after
a kill reproduces the uninterrupted run exactly (on the same hardware and thread count).
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, dump_config
from ..data.augment import AugmentConfig, apply_params, normalize, sample_params, slice_params, to_float
from ..methods.base import DataInfo, StepContext, get_method, list_methods
from .. import checkpoint as ck
from .data import Split, build_splits, cycle_indices, epoch_indices
from .schedule import lr_factor


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, mininterval=1.0)


class Engine:
    def __init__(self, cfg: dict[str, Any], out_dir: str | Path, *, resume: bool = False, splits: dict[str, Split] | None = None):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.resume = resume
        self._splits = splits
        t = cfg["train"]
        self.progress = bool(t.get("progress", True))
        try:
            from lightning_fabric import Fabric
        except ImportError:  # the unified `lightning` package ships the same Fabric
            from lightning.fabric import Fabric

        strategy = t["strategy"]
        try:
            if strategy == "ddp" and getattr(get_method(cfg["method"]["name"]), "ddp_unused_parameters", False):
                strategy = "ddp_find_unused_parameters_true"
        except Exception:  # an unknown method is reported with its own clear error in setup
            pass
        try:
            self.fabric = Fabric(accelerator=t["accelerator"], devices=t["devices"], strategy=strategy,
                                 num_nodes=t["num_nodes"], precision=t["precision"])
        except (RuntimeError, ValueError, TypeError) as e:
            # Lightning's own message (accelerator not available here, unknown strategy, ...) as one line
            msg = " ".join(str(e).split())
            raise ConfigError(f"train.accelerator={t['accelerator']!r} / devices={t['devices']!r} / strategy="
                              f"{t['strategy']!r} / num_nodes={t['num_nodes']!r}: {msg}") from None

    # ------------------------------------------------------------------ setup
    def _method_class(self) -> Any:
        """The configured method's class, after checking its option names and the data roles it needs in the config
        (cheap: nothing decoded yet)."""
        cfg = self.cfg
        method_cls = get_method(cfg["method"]["name"])
        unknown = set(cfg["method"]) - {"name"} - set(method_cls.option_defaults)
        if unknown:
            raise ConfigError(f"method.{sorted(unknown)[0]}: unknown option for method {cfg['method']['name']!r}; "
                              f"known: {', '.join(sorted(method_cls.option_defaults)) or '(none)'}")
        mult = cfg["optim"].get("head_lr_mult", 1.0)
        if mult != 1.0 and not method_cls.uses_head_lr_mult:
            raise ConfigError(f"optim.head_lr_mult={mult}: method {cfg['method']['name']!r} trains every parameter at "
                              "optim.lr and would ignore it; methods that use it: "
                              + ", ".join(n for n in list_methods() if get_method(n).uses_head_lr_mult))
        if self._splits is None:
            if method_cls.needs_target and not cfg["data"].get("target"):
                raise ConfigError(f"method {cfg['method']['name']!r} adapts to a target domain: set data.target (FORMAT:PATH)")
            if method_cls.needs_unlabelled and not cfg["data"].get("unlabelled"):
                raise ConfigError(f"method {cfg['method']['name']!r} needs unlabelled faces: set data.unlabelled (FORMAT:PATH)")
        return method_cls

    def _setup(self) -> None:
        cfg, fabric = self.cfg, self.fabric
        if cfg.get("deterministic"):
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(int(cfg["seed"]))
        self._method_class()  # option names and required data roles are checked before anything is decoded
        self.splits = self._splits if self._splits is not None else build_splits(cfg, progress=self.progress and fabric.is_global_zero)
        if fabric.device.type != "cpu":
            # keep the decoded uint8 images on the accelerator: batches are then gathered and augmented there
            for sp in self.splits.values():
                sp.images = sp.images.to(fabric.device)
                sp.labels = sp.labels.to(fabric.device)
                if sp.soft_labels is not None:
                    sp.soft_labels = sp.soft_labels.to(fabric.device)
        train = self.splits["train"]
        self.classes = train.classes
        self.info = DataInfo(classes=train.classes, class_counts=train.class_counts(), in_chans=int(cfg["data"]["channels"]),
                             image_size=int(cfg["data"]["image_size"]))
        if any(c == 0 for c in self.info.class_counts):
            empty = [c for c, n in zip(self.classes, self.info.class_counts) if n == 0]
            if cfg["loss"]["name"] in ("ldam", "weighted_ce", "logit_adjusted", "balanced_softmax") or cfg["sampler"]["name"] != "random":
                raise ConfigError(f"training split has no images of class(es) {empty}; class-count based losses/samplers "
                                  f"need every class (use a 7-class protocol or another split)")
        self._check_sampler(train)
        method_cls = self._method_class()
        if method_cls.needs_target and "target" not in self.splits:
            raise ConfigError(f"method {cfg['method']['name']!r} adapts to a target domain: set data.target (FORMAT:PATH)")
        if method_cls.needs_unlabelled and "unlabelled" not in self.splits:
            raise ConfigError(f"method {cfg['method']['name']!r} needs unlabelled faces: set data.unlabelled (FORMAT:PATH)")
        # built on the CPU, then moved by fabric.setup_module (methods create small tensors from class
        # counts at construction; building under fabric.init_module would mix devices)
        self.method = method_cls(cfg, self.info)
        self.model_cfg = self.method.model.pretrained_cfg
        self.mean, self.std = self.model_cfg.get("mean", [0.5]), self.model_cfg.get("std", [0.5])
        self.init_notes = self._init_from_model(cfg["model"]["init"]) if cfg["model"]["init"] else None
        self.frozen_batchnorm, self.fresh_batchnorm = 0, 0
        if cfg["train"]["batchnorm"] == "frozen":
            from .batchnorm import freeze_batchnorm

            self.frozen_batchnorm, self.fresh_batchnorm = freeze_batchnorm(self.method)
            if not self.frozen_batchnorm:
                what = (f"its {self.fresh_batchnorm} BatchNorm layer(s) all still have their initial statistics"
                        if self.fresh_batchnorm else "it has no BatchNorm layer")
                raise ConfigError(f"train.batchnorm=frozen: nothing to freeze in {cfg['model']['name']}: {what} "
                                  "(start from trained weights with model.init/model.pretrained, or set train.batchnorm=train)")
        from .allocator import configure_allocator
        from .precision import keep_losses_fp32, resolve_memory_format

        # glibc malloc kept from returning each step's activation buffers to the kernel (engine/allocator.py)
        self.allocator = configure_allocator(cfg["train"]["allocator"], fabric.device.type)
        self.memory_format = resolve_memory_format(cfg["train"]["memory_format"], self.method)
        self.channels_last = self.memory_format is torch.channels_last
        if self.channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        # under mixed precision: network outputs in fp32 and loss modules outside autocast (the loss equations in
        # full precision)
        self._fp32_losses = (keep_losses_fp32(self.method, fabric.device.type)
                             if str(cfg["train"]["precision"]).endswith("-mixed") else None)
        o = cfg["optim"]

        def build_optimizer(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
            for gr in groups:
                gr.setdefault("lr", o["lr"])
                gr["base_lr"] = gr["lr"]
            if o["name"] == "sgd":
                return torch.optim.SGD(groups, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
                                       nesterov=bool(o["nesterov"]) and o["momentum"] > 0)
            cls = torch.optim.Adam if o["name"] == "adam" else torch.optim.AdamW
            return cls(groups, lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"])

        build_optimizer.base_lr = o["lr"]  # type: ignore[attr-defined]
        opts = self.method.configure_optimizers(build_optimizer)
        self.fmethod = fabric.setup_module(self.method)
        self.fmethod.mark_forward_method("training_step")
        self.optimizers = list(fabric.setup_optimizers(*opts)) if len(opts) > 1 else [fabric.setup_optimizers(opts[0])]
        self.aug = AugmentConfig.from_dict(cfg["augment"])
        self.aug_strong = self.aug.strong()
        t = cfg["train"]
        self.world = fabric.world_size
        if t["batch_size"] % self.world:
            raise ConfigError(f"train.batch_size={t['batch_size']} must be divisible by the number of processes ({self.world})")
        self._uses_landmarks = bool(getattr(self.method.model, "uses_landmarks", False))
        if self._uses_landmarks:
            if not getattr(self.method, "accepts_landmarks", False):
                raise ConfigError(f"model {cfg['model']['name']!r} crops around per-image landmarks (landmarks=data) but "
                                  f"method {cfg['method']['name']!r} does not pass them to it; set "
                                  "model.kwargs.landmarks=template or none, or use supervised/mcd/dann/safn")
            lacking = [r for r in ("train", "target") if r in self.splits and self.splits[r].landmarks is None]
            if lacking:
                raise ConfigError(
                    f"model {cfg['model']['name']!r} crops around landmarks (landmarks=data) but data role(s) "
                    f"{', '.join(lacking)} have none: give data.<role>_options.landmarks (a CSV, see "
                    "fairexpr.data.landmarks) or set model.kwargs.landmarks=template (fixed aligned-face points) or none")
            eval_lacking = [r for r in ("val", "test", "target_eval") if r in self.splits and self.splits[r].landmarks is None]
            if eval_lacking and fabric.is_global_zero:
                print(f"note: data role(s) {', '.join(eval_lacking)} have no landmarks; the model crops at its "
                      "template points there (give data.<role>_options.landmarks to use per-image ones)")
        elif fabric.is_global_zero and any(sp.landmarks is not None for sp in self.splits.values()):
            print(f"note: the data carries landmarks but model {cfg['model']['name']!r} does not use them "
                  "(agra_net with model.kwargs.landmarks=data does)")
        n = len(train)
        self.steps_per_epoch = max(1, n // t["batch_size"])  # drop the last incomplete batch (BatchNorm-safe)
        if t.get("iters_per_epoch"):
            # a fixed number of steps per epoch; when it exceeds one pass, the sampler's indices are drawn again
            self.steps_per_epoch = int(t["iters_per_epoch"])
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "best": None, "best_epoch": None, "elapsed": 0.0,
                                      "bad_epochs": 0, "history": []}

    # ------------------------------------------------------------------ batches
    def _make_batch(self, split: Split, idx: np.ndarray, g: torch.Generator, *, augment: bool = True,
                    strong_view: bool = False) -> dict[str, Any]:
        """Global-batch indices -> this rank's share, augmented and normalized, on the device."""
        rank, world = self.fabric.global_rank, self.world
        p = sample_params(len(idx), self.aug, g) if augment else None
        ps = sample_params(len(idx), self.aug_strong, g) if strong_view else None
        share = slice(rank, None, world)
        local = torch.as_tensor(idx[share], dtype=torch.long, device=split.images.device)
        x = to_float(split.images[local])
        batch: dict[str, Any] = {"index": local}
        img = apply_params(x, slice_params(p, share), self.aug) if p is not None else x
        batch["image"] = normalize(img, self.mean, self.std)
        if ps is not None:
            batch["image_strong"] = normalize(apply_params(x, slice_params(ps, share), self.aug_strong), self.mean, self.std)
        if split.landmarks is not None and self._uses_landmarks:  # they follow the same geometry as the pixels
            from ..data.landmarks import augment_landmarks

            lm = split.landmarks[torch.as_tensor(idx[share], dtype=torch.long)]  # CPU index: no device sync
            h, w = int(x.shape[-2]), int(x.shape[-1])
            batch["landmarks"] = augment_landmarks(lm, slice_params(p, share), self.aug, h, w) if p is not None else lm
            if ps is not None:
                batch["landmarks_strong"] = augment_landmarks(lm, slice_params(ps, share), self.aug_strong, h, w)
        batch["label"] = split.labels[local]
        if split.soft_labels is not None:
            batch["soft_label"] = split.soft_labels[local]
        if self.channels_last:
            for k in ("image", "image_strong"):
                if k in batch:
                    batch[k] = batch[k].contiguous(memory_format=torch.channels_last)
        return self.fabric.to_device(batch)

    # ------------------------------------------------------------------ evaluation
    @torch.inference_mode()
    def predict_split(self, split: Split, batch_size: int | None = None, temperature: float = 1.0) -> dict[str, np.ndarray]:
        """Probabilities, logits and embeddings of the deployable network on a whole split. With a
        ``temperature`` other than 1 the probabilities are ``softmax(z / T)`` of each view's logits (as the
        predictors compute them from a calibrated checkpoint); the logits are returned unscaled.

        With ``train.eval_tta: hflip`` each face and its mirror are predicted and averaged
        (:mod:`fairexpr.evaluation.tta`; landmarks mirrored with them) — for every role, so model selection,
        the final evaluation and DIFC's target confusion scores all see the same predictor."""
        from ..evaluation.tta import mean_views, tta_views

        bs = batch_size or int(self.cfg["train"]["eval_batch_size"])
        tta = self.cfg["train"].get("eval_tta", "none")
        was = self.method.training
        self.method.eval()
        probs, logits, embs = [], [], []
        try:
            for s in range(0, len(split), bs):
                x = normalize(to_float(split.images[s:s + bs]), self.mean, self.std)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                x = self.fabric.to_device(x)
                lm = self.fabric.to_device(split.landmarks[s:s + bs]) if self._uses_landmarks and split.landmarks is not None else None
                outs = []
                for xv, lmv in tta_views(x, tta, lm):
                    # fp32 under every train.precision (no autocast): validation, DIFC's target predictions and the
                    # final evaluation see the network exactly as `fairexpr eval`, the predictors and ONNX run it
                    outs.append(self.method.predict(xv) if lmv is None else self.method.predict(xv, landmarks=lmv))
                if temperature == 1.0:
                    probs.append(mean_views([o["probs"].float().cpu() for o in outs]))
                else:
                    probs.append(mean_views([(o["logits"].float().cpu() / temperature).softmax(-1) for o in outs]))
                logits.append(mean_views([o["logits"].float().cpu() for o in outs]))
                if outs[0].get("embedding") is not None:
                    embs.append(mean_views([o["embedding"].float().cpu() for o in outs]))
        finally:
            self.method.train(was)
        res = {"probs": torch.cat(probs).numpy(), "logits": torch.cat(logits).numpy(), "labels": split.labels.cpu().numpy()}
        if embs:
            res["embedding"] = torch.cat(embs).numpy()
        return res

    def predict_dataset(self, name: str) -> dict[str, np.ndarray]:
        """Predictions on a named data role (``"target"``, ``"val"``...). For ``target`` the labels are
        not returned — adaptation methods must never see them."""
        if name not in self.splits:
            raise ConfigError(f"no data role {name!r} configured (have: {', '.join(self.splits)})")
        res = self.predict_split(self.splits[name])
        if name in ("target", "unlabelled"):
            res.pop("labels", None)
        return res

    def _val_metrics(self) -> dict[str, float]:
        from ..evaluation.metrics import evaluate

        if "val" not in self.splits:
            return {}
        pr = self.predict_split(self.splits["val"])
        m = evaluate(pr["labels"], pr["probs"], self.classes)
        lp = np.log(np.clip(pr["probs"][np.arange(len(pr["labels"])), pr["labels"]], 1e-12, None))
        return {"val_accuracy": m["accuracy"], "val_balanced_accuracy": m["balanced_accuracy"],
                "val_macro_f1": m["macro_f1"], "val_loss": float(-lp.mean())}

    # ------------------------------------------------------------------ checkpoints
    def _sidecar(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        m = self.method.model
        return {
            "model": {"name": getattr(m, "registry_name", self.cfg["model"]["name"]), "num_classes": len(self.classes),
                      "kwargs": getattr(m, "build_kwargs", self.cfg["model"]["kwargs"])},
            "classes": list(self.classes),
            "preprocess": {"input_size": [int(self.cfg["data"]["image_size"])] * 2, "in_chans": self.info.in_chans,
                           "mean": list(self.mean), "std": list(self.std)},
            "method": self.cfg["method"]["name"],
            "class_counts": self.info.class_counts,
            "data": {k: self.cfg["data"][k] for k in ("train", "train_split", "val", "label_mode", "image_size", "channels")},
            "train_info": self.splits["train"].info,
            "metrics": metrics or {},
            "epoch": self.state["epoch"],
            "config": self.cfg,
            "temperature": 1.0,
        }

    def _save_last(self) -> None:
        tensors: dict[str, torch.Tensor] = {f"method/{k}": v for k, v in self.method.state_dict().items()}
        opt_meta = []
        for i, opt in enumerate(self.optimizers):
            sd = opt.state_dict()
            scalars: dict[str, dict[str, Any]] = {}
            for pid, st in sd["state"].items():
                for k, v in st.items():
                    if isinstance(v, torch.Tensor):
                        tensors[f"optim{i}/{pid}/{k}"] = v
                    else:
                        scalars.setdefault(str(pid), {})[k] = v
            opt_meta.append({"param_groups": sd["param_groups"], "scalars": scalars})
        meta = {"state": self.state, "optimizers": opt_meta, "method_extra": self.method.extra_state(),
                "config": self.cfg, "format": "fairexpr-train-state"}
        ck.atomic_save_tensors(self.out / "last.safetensors", tensors)
        ck.atomic_write_json(self.out / "last.json", meta)

    def _load_last(self) -> bool:
        w, s = self.out / "last.safetensors", self.out / "last.json"
        if not (w.exists() and s.exists()):
            return False
        meta = ck.read_json(s)
        if meta.get("format") != "fairexpr-train-state":
            raise ck.CheckpointError(f"{s}: not a fairexpr training-state file")
        tensors = ck.load_tensors(w)
        msd = {k[len("method/"):]: v for k, v in tensors.items() if k.startswith("method/")}
        missing, unexpected = self.method.load_state_dict(msd, strict=False)
        if missing or unexpected:
            raise ck.CheckpointError(f"{w}: training state does not match this config's method/model "
                                     f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
        for i, opt in enumerate(self.optimizers):
            om = meta["optimizers"][i]
            state: dict[int, dict[str, Any]] = {}
            for k, v in tensors.items():
                if k.startswith(f"optim{i}/"):
                    _, pid, name = k.split("/", 2)
                    state.setdefault(int(pid), {})[name] = v
            for pid, sc in om["scalars"].items():
                state.setdefault(int(pid), {}).update(sc)
            opt.load_state_dict({"state": state, "param_groups": om["param_groups"]})
        self.method.load_extra_state(meta.get("method_extra", {}))
        self.state = meta["state"]
        return True

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        """Set up, resume if asked, train epoch by epoch until the epochs, the time budget or early stopping end
        it, then evaluate the best checkpoint. Each part is one method below."""
        self.fabric.launch()
        self._setup()
        self._start_or_resume()
        t = self.cfg["train"]
        epochs = int(t["epochs"])
        budget_s = float(t["max_minutes"]) * 60 if t["max_minutes"] else None
        clock = time.process_time if t.get("budget_clock") == "process" else time.perf_counter
        t_start = clock() - float(self.state.get("elapsed", 0.0))
        log_rows: list[dict[str, Any]] = list(self.state.get("history", []))
        stopped = "epochs"
        for epoch in range(int(self.state["epoch"]), epochs):
            if budget_s is not None and self.state["elapsed"] >= budget_s:
                stopped = "time budget"
                break
            row = self._train_epoch(epoch, epochs, budget_s, clock, t_start)
            self.state["epoch"] = epoch + 1
            self.state["elapsed"] = clock() - t_start
            row["elapsed_s"] = self.state["elapsed"]
            log_rows.append(row)
            self._end_epoch(row, log_rows, epochs)
            pat = t.get("early_stop_patience")
            if pat and self.state["bad_epochs"] >= int(pat):
                stopped = "early stopping"
                break
        else:
            if budget_s is not None and self.state["elapsed"] >= budget_s:
                stopped = "time budget"
        return self._finish(log_rows, stopped)

    # ------------------------------------------------------------------------------------- run: parts
    def _start_or_resume(self) -> None:
        """Write the resolved config; with ``--resume`` load the last state (removing a checkpoint write's
        stale temp file), else refuse a folder that already holds a run. Then open the endless target /
        unlabelled index streams, fast-forwarded to where a resumed run was."""
        fabric, cfg = self.fabric, self.cfg
        if fabric.is_global_zero:
            self.out.mkdir(parents=True, exist_ok=True)
            ck.atomic_write_bytes(self.out / "config.yaml", dump_config(cfg).encode())
        resumed = False
        if self.resume:
            if fabric.is_global_zero:
                # a run killed during a checkpoint write leaves the temp file (up to ~90 MB) behind
                for f in ck.remove_stale_temps(self.out):
                    print(f"--resume: removed {f.name}, left by an interrupted checkpoint write")
            resumed = self._load_last()
            if not resumed and fabric.is_global_zero:
                print(f"--resume: no training state in {self.out}; starting from scratch")
        elif (self.out / "last.json").exists():
            raise ConfigError(f"{self.out} already holds a training run; pass --resume to continue it or choose another --out")
        self._streams = {role: (cycle_indices(len(self.splits[role]), int(cfg["seed"]), k), [])
                         for role, k in (("target", 1), ("unlabelled", 2)) if role in self.splits}
        if resumed:
            skip = self.state["step"] * int(cfg["train"]["batch_size"])
            unl_skip = skip * int(getattr(self.method, "unlabelled_ratio", 1))  # unlabelled batches are μ × bs
            for role, k in (("target", skip), ("unlabelled", unl_skip)):
                if role in self._streams and k:
                    self._take(role, k)

    def _take(self, role: str, k: int) -> np.ndarray:
        """The next ``k`` indices of an endless (target / unlabelled) stream."""
        stream, buf = self._streams[role]
        while len(buf) < k:
            buf.extend(next(stream).tolist())
        out = np.asarray(buf[:k])
        del buf[:k]
        return out

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """This epoch's training indices: the sampler's order, drawn again while ``iters_per_epoch`` needs more."""
        cfg, train = self.cfg, self.splits["train"]
        labels_np = train.labels.cpu().numpy()
        bs = int(cfg["train"]["batch_size"])
        idx_all = epoch_indices(len(train), cfg["sampler"], labels_np, int(cfg["seed"]), epoch, train.groups,
                                cfg["data"]["train"])
        rep = 1
        while len(idx_all) < self.steps_per_epoch * bs:  # iters_per_epoch longer than one pass: draw again
            more = epoch_indices(len(train), cfg["sampler"], labels_np, int(cfg["seed"]), epoch + 1_000_003 * rep,
                                 train.groups, cfg["data"]["train"])
            idx_all = np.concatenate([idx_all, more])
            rep += 1
        return idx_all

    def _set_lr(self, ep_f: float, epochs: int) -> None:
        factor = lr_factor(self.cfg["schedule"], ep_f, epochs)
        for opt in self.optimizers:
            for gr in opt.param_groups:
                gr["lr"] = gr.get("base_lr", self.cfg["optim"]["lr"]) * factor

    def _training_batch(self, idx: np.ndarray, g: torch.Generator) -> dict[str, Any]:
        """The method's batch: the labelled images, plus target / unlabelled images for the methods that need them."""
        train, bs = self.splits["train"], int(self.cfg["train"]["batch_size"])
        if not (self.method.needs_target or self.method.needs_unlabelled):
            return self._make_batch(train, idx, g)
        batch = {"source" if self.method.needs_target else "labelled": self._make_batch(train, idx, g)}
        if self.method.needs_target:
            tb = self._make_batch(self.splits["target"], self._take("target", bs), g)
            tb.pop("label", None)
            batch["target"] = tb
        if self.method.needs_unlabelled:
            k = bs * int(getattr(self.method, "unlabelled_ratio", 1))
            ub = self._make_batch(self.splits["unlabelled"], self._take("unlabelled", k), g, strong_view=True)
            ub.pop("label", None)
            batch["unlabelled"] = ub
        return batch

    def _train_step(self, batch: dict[str, Any], epoch: int, epochs: int) -> dict[str, Any]:
        """One optimisation step of the method (its own backward passes for manual optimisation)."""
        fabric = self.fabric
        manual_ddp = not self.method.automatic_optimization and self.world > 1
        if manual_ddp:
            self._broadcast_buffers()
        ctx = StepContext(epoch=epoch, step=int(self.state["step"]), max_epochs=epochs,
                          max_steps=epochs * self.steps_per_epoch,
                          backward=self._backward_all_reduced if manual_ddp else fabric.backward,
                          step_optimizer=self._step_optimizer, optimizers=self.optimizers, device=fabric.device)
        if self._fp32_losses is not None:
            self._fp32_losses.reset()
        with fabric.autocast():
            out = self.fmethod.training_step(batch, ctx) if self.method.automatic_optimization else self.method.training_step(batch, ctx)
        if self.method.automatic_optimization:
            fabric.backward(out["loss"])
            self._step_optimizer(self.optimizers[0])
        return out

    def _train_epoch(self, epoch: int, epochs: int, budget_s: float | None, clock: Any, t_start: float) -> dict[str, Any]:
        """Seed the epoch, run its steps (stopping at the first step past the time budget) and return its log row
        (training averages, images/s, the method's epoch-hook values and, when due, validation metrics)."""
        cfg, t, fabric = self.cfg, self.cfg["train"], self.fabric
        bs = int(t["batch_size"])
        torch.manual_seed(int(cfg["seed"]) * 100_003 + epoch)
        g = torch.Generator().manual_seed(int(cfg["seed"]) * 1_000_003 + epoch)
        hook_log = self.method.on_train_epoch_start(epoch, self) or {}
        idx_all = self._epoch_order(epoch)
        self.method.train()
        sums: dict[str, float] = {}
        sums_t: dict[str, torch.Tensor] = {}
        n_steps = 0
        t_ep = time.perf_counter()
        bar = _progress_bar(self.steps_per_epoch, f"epoch {epoch + 1}/{epochs}", self.progress and fabric.is_global_zero)
        for b in range(self.steps_per_epoch):
            idx = idx_all[b * bs:(b + 1) * bs]
            if len(idx) < bs:
                break
            ep_f = epoch + b / self.steps_per_epoch
            if budget_s is not None:
                # with a time budget the LR schedule follows the budget's progress, so every run of a
                # same-budget comparison completes its whole schedule; stop at the first step past it
                el = clock() - t_start
                if el >= budget_s:
                    break
                ep_f = max(ep_f, epochs * el / budget_s)
            self._set_lr(ep_f, epochs)
            out = self._train_step(self._training_batch(idx, g), epoch, epochs)
            for k, v in out.items():
                if isinstance(v, torch.Tensor):
                    v = v.detach().float()
                    sums_t[k] = sums_t[k] + v if k in sums_t else v.clone()  # no host sync per step
                else:
                    sums[k] = sums.get(k, 0.0) + float(v)
            n_steps += 1
            self.state["step"] += 1
            bar.update(1)
        bar.close()
        for k, v in sums_t.items():
            sums[k] = float(v.item())
        train_time = time.perf_counter() - t_ep
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizers[0].param_groups[0]["lr"],
                               "train_images_per_s": n_steps * bs / max(train_time, 1e-9), "train_time_s": train_time}
        row.update({f"train_{k}": v / max(n_steps, 1) for k, v in sums.items()})
        row.update({k: v for k, v in hook_log.items() if isinstance(v, (int, float, str))})
        if (epoch + 1) % int(t["val_every"]) == 0 or epoch + 1 == epochs:
            row.update(self._val_metrics())
        return row

    def _end_epoch(self, row: dict[str, Any], log_rows: list[dict[str, Any]], epochs: int) -> None:
        """Model selection, then (rank 0) the best and last checkpoints, the metrics log and the progress line."""
        fabric = self.fabric
        improved = self._select(row)
        self.state["history"] = log_rows
        if fabric.is_global_zero:
            if improved:
                self._save_best({k: v for k, v in row.items()})
            self._save_last()
            self._write_log(log_rows)
            if self.progress:
                shown = ", ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float) and k.startswith(("train_loss", "val_")))
                print(f"epoch {row['epoch']}/{epochs}: {shown} ({row['train_images_per_s']:.0f} img/s)", flush=True)
        fabric.barrier()

    def _finish(self, log_rows: list[dict[str, Any]], stopped: str) -> dict[str, Any]:
        """Make sure a deployable model exists, evaluate it (and the method's companion networks) on every
        labelled held-out role, and write ``result.json``."""
        fabric = self.fabric
        if fabric.is_global_zero and not (self.out / "model.safetensors").exists():
            self._save_best(log_rows[-1] if log_rows else {})
        fabric.barrier()
        result: dict[str, Any] = {"out": str(self.out), "epochs_run": int(self.state["epoch"]), "steps": int(self.state["step"]),
                                  "stopped_by": stopped, "best_epoch": self.state["best_epoch"], "best": self.state["best"],
                                  "train_seconds": float(self.state["elapsed"]), "history": log_rows,
                                  "allocator": self.allocator,
                                  "batchnorm": {"mode": self.cfg["train"]["batchnorm"],
                                                "frozen_layers": self.frozen_batchnorm,
                                                "training_layers": self.fresh_batchnorm}}
        if self.init_notes:
            result["init"] = self.init_notes
        if fabric.is_global_zero:
            result["eval"] = self.final_evaluation()
            companions = self.companion_evaluation()
            if companions:
                result["eval_companions"] = companions
            ck.atomic_write_json(self.out / "result.json", result)
        return result

    def _init_from_model(self, ref: str) -> dict[str, Any]:
        """``model.init``: check the source model against this run (classes, input size, channels, normalisation)
        and hand its weights to the method (:meth:`Method.init_from`). Runs before a resume, which then replaces
        every weight with the checkpointed ones."""
        w, side = ck.read_source(ref, "model.init")
        if list(side.get("classes") or []) != list(self.classes):
            raise ConfigError(f"model.init: {ref} predicts {side.get('classes')}, this run's training classes are "
                              f"{list(self.classes)} (same classes in the same order needed)")
        pre = side.get("preprocess") or {}
        size, ch = int(self.cfg["data"]["image_size"]), int(self.cfg["data"]["channels"])
        if list(pre.get("input_size") or []) != [size, size] or int(pre.get("in_chans", -1)) != ch:
            raise ConfigError(f"model.init: {ref} takes {pre.get('input_size')} x {pre.get('in_chans')} channel(s); this run "
                              f"feeds {size}x{size} x {ch} (set data.image_size / data.channels to the source's)")
        if [round(float(v), 6) for v in pre.get("mean", [])] != [round(float(v), 6) for v in self.mean] or \
                [round(float(v), 6) for v in pre.get("std", [])] != [round(float(v), 6) for v in self.std]:
            raise ConfigError(f"model.init: {ref} was trained on inputs normalised with mean {pre.get('mean')} / std "
                              f"{pre.get('std')}, this network uses {self.mean} / {self.std}")
        notes = self.method.init_from(ck.load_tensors(w), side, str(ref))
        if self.progress and self.fabric.is_global_zero:
            print(f"model.init from {ref}: " + "; ".join(notes), flush=True)
        return {"source": str(ref), "weights": str(w), "notes": notes}

    def _check_sampler(self, train: Split) -> None:
        """Fail before building anything when the sampler options cannot work with this training split:
        bad kwargs, missing group ids, or ``images_per_class`` batches that the batch size would cut."""
        cfg = self.cfg
        epoch_indices(len(train), cfg["sampler"], train.labels.cpu().numpy(), int(cfg["seed"]), 0, train.groups,
                      cfg["data"]["train"])
        ipc = (cfg["sampler"].get("kwargs") or {}).get("images_per_class")
        if ipc is not None:
            present = sum(1 for c in train.class_counts() if c > 0)
            want = int(ipc) * present
            if int(cfg["train"]["batch_size"]) != want:
                raise ConfigError(f"sampler.kwargs.images_per_class={ipc} with {present} classes makes batches of {want} "
                                  f"images; set train.batch_size={want} (got {cfg['train']['batch_size']})")

    def _companions(self) -> dict[str, nn.Module]:
        nets = self.method.companion_networks()
        for name in nets:
            if name in ("model", "last") or not name.isidentifier():
                raise ConfigError(f"method {self.cfg['method']['name']!r}: companion network name {name!r} is reserved or "
                                  "not an identifier (expected e.g. 'base')")
        return nets

    def _save_best(self, metrics: dict[str, Any]) -> None:
        """``model.*`` (the deployable network) and one ``<name>.*`` per companion network, same epoch."""
        ck.save_model(self.out, self.method.model, self._sidecar(metrics))
        for name, net in self._companions().items():
            ck.save_model(self.out, net, {**self._sidecar(metrics), "network": name}, stem=name)

    def companion_evaluation(self) -> dict[str, Any]:
        """Evaluate each companion network's best-epoch checkpoint like the deployable one (``eval/<name>/<role>/``)."""
        from .evaluate import evaluate_and_write

        nets = self._companions()
        if not nets:
            return {}
        out: dict[str, Any] = {}
        deployed = {k: v.detach().clone() for k, v in self.method.model.state_dict().items()}
        try:
            for name in nets:
                if not (self.out / f"{name}.safetensors").exists():
                    continue
                comp, _ = ck.load_model(self.out, stem=name)
                self.method.model.load_state_dict(comp.state_dict())
                out[name] = {}
                for role in ("val", "test", "target_eval"):
                    if role in self.splits:
                        sp = self.splits[role]
                        out[name][role] = evaluate_and_write(
                            self.out / "eval" / name / role, self.predict_split(sp), self.classes, dataset=sp.spec,
                            split=sp.split, label_protocol=self.cfg["data"]["label_mode"], checkpoint=str(self.out / f"{name}.json"),
                            tta=self.cfg["train"]["eval_tta"])
        finally:
            self.method.model.load_state_dict(deployed)
        return out

    def _backward_all_reduced(self, loss: torch.Tensor) -> None:
        """``ctx.backward`` of a manual-optimisation method (MCD, Meta-Face2Exp) under several processes.

        Such a method calls ``training_step`` on the bare module and runs several backward passes per step, so
        DDP's reducer (armed by the wrapped module's forward, one backward per forward) never averages its
        gradients. This does what DDP would: after the backward, every parameter's gradient is replaced by its
        mean over the processes (one coalesced all-reduce). Gradients accumulated by earlier backward passes of
        the step are already equal on every process, so averaging them again leaves them unchanged; a
        parameter without a gradient on every process stays without one."""
        import torch.distributed as dist

        self.fabric.backward(loss)
        params = [p for p in self.method.parameters() if p.requires_grad]
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.fabric.device)
        dist.all_reduce(has, op=dist.ReduceOp.MAX)
        sel = [p for p, h in zip(params, has.tolist()) if h > 0]
        if not sel:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in sel])
        dist.all_reduce(flat)
        flat.div_(self.world)
        i = 0
        for p in sel:
            g = flat[i:i + p.numel()].view(p.shape)
            i += p.numel()
            if p.grad is None:
                p.grad = g.clone().to(memory_format=torch.channels_last) if p.dim() == 4 and self.channels_last else g.clone()
            else:
                p.grad.copy_(g)

    def _broadcast_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm statistics, EMA state) to every process before a manual-optimisation step,
        as DDP's ``broadcast_buffers`` does before each forward of the wrapped module."""
        import torch.distributed as dist

        for b in self.method.buffers():
            dist.broadcast(b.data, src=0)

    def _step_optimizer(self, opt: torch.optim.Optimizer) -> None:
        clip = self.cfg["train"].get("grad_clip")
        if clip:
            self.fabric.clip_gradients(self.fmethod, opt, max_norm=float(clip))
        opt.step()
        opt.zero_grad(set_to_none=True)

    def _select(self, row: dict[str, Any]) -> bool:
        metric = self.cfg["train"]["select_metric"]
        key = "val_loss" if metric == "loss" else f"val_{metric}"
        if metric == "last":  # the model at the end of the schedule, validation logged but not used to choose
            self.state["best"], self.state["best_epoch"] = row.get("val_balanced_accuracy"), row["epoch"]
            return True
        if key not in row:  # no validation set: the last epoch is the one we keep
            self.state["best_epoch"] = row["epoch"]
            return True
        val = float(row[key])
        better = self.state["best"] is None or (val < self.state["best"] if metric == "loss" else val > self.state["best"])
        if better:
            self.state["best"], self.state["best_epoch"], self.state["bad_epochs"] = val, row["epoch"], 0
        else:
            self.state["bad_epochs"] += 1
        return better

    def _write_log(self, rows: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        ck.atomic_write_bytes(self.out / "metrics.csv", buf.getvalue().encode())
        if self.cfg["train"].get("tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("train.tensorboard=true needs the `tensorboard` package (pip install tensorboard)") from None
            with SummaryWriter(str(self.out / "tb")) as sw:
                r = rows[-1]
                for k, v in r.items():
                    if isinstance(v, (int, float)) and k != "epoch":
                        sw.add_scalar(k, v, r["epoch"])

    def final_evaluation(self) -> dict[str, Any]:
        """Evaluate the best checkpoint on every labelled held-out role; write eval/<role>/ outputs. With
        ``train.calibrate`` (default) a temperature is first fitted on the validation split and stored in the
        sidecar, and every role is then reported with it (the confidences a user of the checkpoint will see)."""
        from .evaluate import evaluate_and_write

        best, _ = ck.load_model(self.out)
        self.method.model.load_state_dict(best.state_dict())
        temperature = self.calibrate_best() if self.cfg["train"]["calibrate"] else 1.0
        out: dict[str, Any] = {}
        for role in ("val", "test", "target_eval"):
            if role in self.splits:
                sp = self.splits[role]
                pr = self.predict_split(sp, temperature=temperature)
                out[role] = evaluate_and_write(self.out / "eval" / role, pr, self.classes, dataset=sp.spec, split=sp.split,
                                               label_protocol=self.cfg["data"]["label_mode"], checkpoint=str(self.out),
                                               temperature=temperature, tta=self.cfg["train"]["eval_tta"])
        return out

    def calibrate_best(self) -> float:
        """Fit ``T* = argmin_T NLL(softmax(z / T), y)`` on the labelled validation split with the deployable
        network as loaded (single view, like ``fairexpr calibrate``); write ``temperature`` and the before/after
        ECE / NLL / Brier into ``model.json``. Returns ``T`` (1.0 when there is no labelled validation split).

        A cosine (normed) head trained with LDAM outputs ``cos θ ∈ [−1, 1]`` and its loss multiplies by ``s``
        (30) internally, so its raw softmax is near-uniform; the fitted ``T`` (≈ 1/s) is what turns those
        logits into usable confidences."""
        import warnings

        from ..evaluation.calibration import calibration_summary, fit_temperature

        sp = self.splits.get("val")
        if sp is None or not bool((sp.labels >= 0).any()):
            return 1.0
        tta = self.cfg["train"]["eval_tta"]
        self.cfg["train"]["eval_tta"] = "none"
        try:
            pr = self.predict_split(sp)
        finally:
            self.cfg["train"]["eval_tta"] = tta
        keep = pr["labels"] >= 0
        logits, y = pr["logits"][keep].astype(np.float64), pr["labels"][keep]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t = fit_temperature(logits, y)
        summ = calibration_summary(logits, y, t)
        side = ck.read_json(self.out / "model.json")
        side["temperature"] = float(t)
        side["calibration"] = {"dataset": sp.spec, "split": sp.split, "n": int(keep.sum()), "fitted_by": "train",
                               "before": summ["before"], "after": summ["after"],
                               "warnings": [str(w.message) for w in caught]}
        ck.atomic_write_json(self.out / "model.json", side)
        if self.progress:
            print(f"calibration on {sp.spec} [{sp.split}]: T = {t:.4f}, ECE {summ['before']['ece']:.4f} -> "
                  f"{summ['after']['ece']:.4f}" + "".join(f"; warning: {w.message}" for w in caught), flush=True)
        return float(t)


def fit(config: dict[str, Any], out_dir: str | Path, *, resume: bool = False, splits: dict[str, Split] | None = None) -> dict[str, Any]:
    """Train a method as configured; returns a summary (history, best epoch, final evaluation)."""
    return Engine(config, out_dir, resume=resume, splits=splits).run()
