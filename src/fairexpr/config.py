"""Recipe configuration: one YAML per recipe, defaults below, ``key=value`` overrides from the CLI.

Unknown keys are errors (with the closest known key suggested), so a typo never silently does
nothing. ``${VAR}`` in strings expands environment variables (e.g. ``${FAIREXPR_DATA}``).
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml


from .errors import ConfigError  # noqa: E402  (defined in the bottom layer; re-exported here)


#: every known key with its default. ``method`` options are validated by the method class itself
#: (``Method.option_defaults``); ``model.kwargs``, ``loss.kwargs`` and ``data.*_options`` are free-form
#: and validated by the model/loss/adapter they are passed to.
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "deterministic": False,
    "name": None,
    "data": {
        "train": "synthetic:fer2013",
        "train_split": "train",
        "train_options": {},
        "val": "holdout:0.1",  # a FORMAT:PATH spec, "holdout:<fraction>" of train, or null
        "val_split": None,
        "val_options": {},
        "test": None,
        "test_split": None,
        "test_options": {},
        "target": None,  # unlabelled target domain for adaptation (labels never used)
        "target_split": None,
        "target_options": {},
        "target_eval": None,  # labelled target set used only for evaluation
        "target_eval_split": None,
        "target_eval_options": {},
        "unlabelled": None,  # unlabelled face folder for Meta-Face2Exp
        "unlabelled_options": {},
        "label_fraction": 1.0,  # few-label protocol: fraction of train labels, drawn per class
        "label_noise": 0.0,  # inject label noise into train (GReFEL Table 7)
        "label_noise_kind": "symmetric",
        "label_mode": "hard",  # hard | soft (vote distributions, FER+ probability protocol)
        "image_size": 48,
        "channels": 1,
        "on_bad_file": "error",
        "cache_dir": None,
    },
    # init: start from a whole trained model, backbone *and* classifier (a run directory, a packaged model's name or
    # `default`); the method decides what of it fits its networks (Method.init_from). `pretrained` starts the
    # backbone only.
    "model": {"name": "resnet18", "pretrained": None, "kwargs": {}, "init": None},
    "loss": {"name": "ce", "kwargs": {}},
    "method": {"name": "supervised"},
    "sampler": {"name": "random", "kwargs": {}},
    "augment": {
        "hflip": True,
        "crop_scale": [0.8, 1.0],  # random-resized-crop scale range; null disables
        "crop_padding": 0,  # pad-and-crop (CIFAR style) in pixels; 0 disables
        "rotation": 10.0,  # degrees
        "color_jitter": 0.2,  # brightness/contrast strength
        "random_erasing": 0.0,  # probability
    },
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True,
              "betas": [0.9, 0.999], "head_lr_mult": 1.0},
    "schedule": {"name": "cosine", "warmup_epochs": 0, "step_size": 10, "gamma": 0.1, "min_lr": 0.0},
    "train": {
        "epochs": 10,
        "max_minutes": None,  # time budget: training stops at the first step past it
        "budget_clock": "wall",  # wall | process (CPU time of this process: fair budgets on a shared machine)
        "batch_size": 128,
        # steps per epoch (Transfer-Learning-Library's --iters-per-epoch); null = one pass over the source split.
        # Epoch-based schedules (DIFC's t1_epochs, DRW, step LR) then count these shorter epochs.
        "iters_per_epoch": None,
        "eval_batch_size": 512,
        "eval_tta": "none",  # none | hflip | crops: every split prediction of the engine (val, test, the DIFC
                             # target confusion scores) averages each face and its mirror (crops: + 5 crops, 12 views)
        "grad_clip": None,
        # fit a temperature T on the validation split at the end of training (best checkpoint, no TTA) and store
        # it in the sidecar: predict/eval/serve/export then report calibrated confidences (fairexpr calibrate)
        "calibrate": True,
        # 32-true | bf16-mixed (CPU or GPU: networks' forward in bf16 under autocast, losses in fp32) |
        # 16-mixed (GPU) | bf16-true | 16-true | 64-true
        "precision": "32-true",
        "accelerator": "auto",
        "devices": 1,
        "strategy": "auto",
        "num_nodes": 1,
        "select_metric": "balanced_accuracy",  # balanced_accuracy | accuracy | macro_f1 | loss | last (SELECT_METRICS)
        "early_stop_patience": None,
        "tensorboard": False,
        "progress": True,
        # auto: channels_last (NHWC) for a network with 2-D convolutions, else contiguous | channels_last | contiguous
        "memory_format": "auto",
        # auto: glibc malloc tuned to keep freed activation buffers (CPU training, glibc) | tuned | system
        # (fairexpr/engine/allocator.py)
        "allocator": "auto",
        # train | frozen: BatchNorm layers normalise with their running statistics and never update them while
        # training (their affine weights still learn; mmcv's norm_eval). For a start from a converged model, whose
        # statistics small or mixed-domain batches would overwrite (engine/batchnorm.py); adapt --init sets frozen
        "batchnorm": "train",
        "val_every": 1,
    },
}

#: methods whose losses come from the ``loss:`` section (the others take theirs from ``method.*`` options)
METHODS_READING_LOSS = ("supervised", "face2exp")

#: ``train.memory_format`` values and the precisions the engine accepts (Lightning's names; 16-* need a GPU)
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
#: ``train.allocator`` values (fairexpr.engine.allocator applies them)
ALLOCATORS = ("auto", "tuned", "system")
#: ``train.select_metric`` values: the validation metric that picks the kept epoch, or ``last`` (the end of the
#: schedule is kept and validation is only logged: a fixed-length protocol such as adaptation from a strong start)
SELECT_METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "loss", "last")
#: ``train.batchnorm`` values (fairexpr.engine.batchnorm applies them)
BATCHNORM_MODES = ("train", "frozen")
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
#: test-time augmentation modes of `train.eval_tta` and of `--tta` (fairexpr.evaluation.tta implements them)
TTA_MODES = ("none", "hflip", "crops")

_FREEFORM = {("model", "kwargs"), ("loss", "kwargs"), ("sampler", "kwargs")}
_FREE_SECTIONS = {"method"}


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _merge(base: dict, override: dict, path: tuple[str, ...] = ()) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        kp = path + (k,)
        if path and path[0] in _FREE_SECTIONS or kp in _FREEFORM or (len(kp) == 2 and kp[0] == "data" and kp[1].endswith("_options")):
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = _merge_free(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
            continue
        if kp == ("train", "channels_last"):
            raise ConfigError("config key 'train.channels_last' was replaced by train.memory_format "
                              "(auto | channels_last | contiguous; auto = channels_last for convolutional networks)")
        if k not in out:
            raise ConfigError(f"unknown config key {'.'.join(kp)!r}{_suggest(k, list(out))}; "
                              f"known keys here: {', '.join(sorted(out))}")
        if isinstance(out[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"config key {'.'.join(kp)!r} must be a mapping, got {v!r}")
            out[k] = _merge(out[k], v, kp)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _merge_free(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge_free(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-5`` and ``3E+2`` are numbers, not strings (YAML 1.1 wants a
    dot in the mantissa, so ``optim.lr=1e-5`` used to arrive as the string '1e-5')."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """Parse YAML text the way every config file and ``key=value`` override is parsed (``_Loader``)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(obj: Any) -> Any:
    if isinstance(obj, str):
        def rep(m: re.Match) -> str:
            val = os.environ.get(m.group(1))
            if val is None:
                if m.group(2) is not None:
                    return m.group(2)
                raise ConfigError(f"config refers to environment variable ${{{m.group(1)}}}, which is not set")
            return val
        return _ENV.sub(rep, obj)
    if isinstance(obj, dict):
        return {k: _expand(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand(v) for v in obj]
    return obj


def parse_override(item: str) -> tuple[list[str], Any]:
    """``train.epochs=5`` -> (["train", "epochs"], 5); values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value (e.g. train.epochs=5)")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key part")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    return key.split("."), value


def _nest(path: list[str], value: Any) -> dict:
    d: Any = value
    for p in reversed(path):
        d = {p: d}
    return d


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- YAML file <- ``extra`` dict <- ``key=value`` overrides; validated and env-expanded."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = yaml_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections, got {type(data).__name__}")
        try:
            cfg = _merge(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    if extra:
        cfg = _merge(cfg, extra)
    for item in overrides:
        keys, value = parse_override(item)
        cfg = _merge(cfg, _nest(keys, value))
    cfg = _expand(cfg)
    validate(cfg)
    return cfg


def validate(cfg: dict[str, Any]) -> None:
    t, d = cfg["train"], cfg["data"]
    def need(cond: bool, key: str, what: str) -> None:
        if not cond:
            raise ConfigError(f"config key {key!r} {what}")
    method = (cfg.get("method") or {}).get("name", "supervised")
    if method not in METHODS_READING_LOSS and cfg["loss"] != DEFAULTS["loss"]:
        raise ConfigError(f"config key 'loss' is not used by method {method!r} (only {', '.join(METHODS_READING_LOSS)} read "
                          f"it; {method}'s losses are set by its method.* options, see docs/methods.md): got "
                          f"{cfg['loss']!r}; remove it")
    need(isinstance(t["epochs"], int) and t["epochs"] >= 1, "train.epochs", f"must be a positive integer, got {t['epochs']!r}")
    need(isinstance(t["batch_size"], int) and t["batch_size"] >= 1, "train.batch_size", f"must be a positive integer, got {t['batch_size']!r}")
    need(t["max_minutes"] is None or (isinstance(t["max_minutes"], (int, float)) and t["max_minutes"] > 0),
         "train.max_minutes", f"must be null or a positive number, got {t['max_minutes']!r}")
    need(t["iters_per_epoch"] is None or (isinstance(t["iters_per_epoch"], int) and not isinstance(t["iters_per_epoch"], bool)
                                          and t["iters_per_epoch"] > 0),
         "train.iters_per_epoch", f"must be null or a positive integer, got {t['iters_per_epoch']!r}")
    need(isinstance(t["num_nodes"], int) and not isinstance(t["num_nodes"], bool) and t["num_nodes"] >= 1, "train.num_nodes",
         f"must be a positive integer, got {t['num_nodes']!r}")
    need(t["accelerator"] in ("auto", "cpu", "cuda", "gpu", "mps", "tpu"), "train.accelerator",
         f"must be auto|cpu|cuda|gpu|mps|tpu, got {t['accelerator']!r}")
    need(isinstance(t["calibrate"], bool), "train.calibrate", f"must be true or false, got {t['calibrate']!r}")
    need(t["eval_tta"] in TTA_MODES, "train.eval_tta", f"must be {'|'.join(TTA_MODES)}, got {t['eval_tta']!r}")
    need(t["memory_format"] in MEMORY_FORMATS, "train.memory_format", f"must be {'|'.join(MEMORY_FORMATS)}, got {t['memory_format']!r}")
    mi = cfg["model"]["init"]
    need(mi is None or (isinstance(mi, str) and mi.strip() != ""), "model.init",
         f"must be null or a run directory / packaged model name (e.g. default), got {mi!r}")
    need(mi is None or cfg["model"]["pretrained"] is None, "model.init",
         "and model.pretrained are both set: model.init replaces every weight pretrained would load; drop model.pretrained")
    need(t["allocator"] in ALLOCATORS, "train.allocator", f"must be {'|'.join(ALLOCATORS)}, got {t['allocator']!r}")
    need(t["batchnorm"] in BATCHNORM_MODES, "train.batchnorm",
         f"must be {'|'.join(BATCHNORM_MODES)}, got {t['batchnorm']!r}")
    need(str(t["precision"]) in PRECISIONS, "train.precision", f"must be {'|'.join(PRECISIONS)}, got {t['precision']!r}")
    need(t["budget_clock"] in ("wall", "process"), "train.budget_clock", f"must be wall|process, got {t['budget_clock']!r}")
    need(isinstance(cfg["optim"]["lr"], (int, float)) and cfg["optim"]["lr"] > 0, "optim.lr", f"must be > 0, got {cfg['optim']['lr']!r}")
    hm = cfg["optim"].get("head_lr_mult", 1.0)
    need(isinstance(hm, (int, float)) and not isinstance(hm, bool) and hm > 0, "optim.head_lr_mult",
         f"must be a number > 0, got {hm!r}")
    need(cfg["optim"]["name"] in ("sgd", "adam", "adamw"), "optim.name", f"must be sgd|adam|adamw, got {cfg['optim']['name']!r}")
    need(cfg["schedule"]["name"] in ("cosine", "step", "exponential", "constant"), "schedule.name",
         f"must be cosine|step|exponential|constant, got {cfg['schedule']['name']!r}")
    need(d["channels"] in (1, 3), "data.channels", f"must be 1 or 3, got {d['channels']!r}")
    need(isinstance(d["image_size"], int) and 16 <= d["image_size"] <= 512, "data.image_size", f"must be an int in [16, 512], got {d['image_size']!r}")
    need(d["on_bad_file"] in ("error", "skip"), "data.on_bad_file", f"must be error|skip, got {d['on_bad_file']!r}")
    need(d["label_mode"] in ("hard", "soft"), "data.label_mode", f"must be hard|soft, got {d['label_mode']!r}")
    need(0 < float(d["label_fraction"]) <= 1, "data.label_fraction", f"must be in (0, 1], got {d['label_fraction']!r}")
    need(0 <= float(d["label_noise"]) < 1, "data.label_noise", f"must be in [0, 1), got {d['label_noise']!r}")
    need(t["select_metric"] in SELECT_METRICS, "train.select_metric",
         f"must be {'|'.join(SELECT_METRICS)}, got {t['select_metric']!r}")
    need(not (t["select_metric"] == "last" and t["early_stop_patience"]), "train.early_stop_patience",
         "cannot be used with train.select_metric=last (nothing is selected, so nothing can stop improving)")
    need(isinstance(d["train"], str) and ":" in d["train"], "data.train", f"must be a FORMAT:PATH dataset address, got {d['train']!r}")
    need(cfg["sampler"]["name"] in ("random", "class_balanced", "sqrt"), "sampler.name",
         f"must be random|class_balanced|sqrt, got {cfg['sampler']['name']!r}")


def dump_config(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
