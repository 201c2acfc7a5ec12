"""`fairexpr adapt`: unsupervised domain adaptation (MCD / DANN / SAFN with CE | DI | DIFC) from a
labelled source to an unlabelled target. Target labels are never used for training; ``--target-eval``
names a labelled target set used only for the final evaluation."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import emit, json_option, train_overrides


def init_settings(ref: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """What ``--init REF`` changes in a resolved adaptation config so the method's networks can start from the trained
    model REF (a run directory or a packaged single-network model's name; an ensemble is refused): ``model`` becomes REF's network (name and
    options, ``init: REF``, no ``pretrained``), ``data.image_size`` / ``data.channels`` REF's input; with a normed
    (cosine) source classifier, MCD's classifiers are normed too (``method.head``) and the DI/DIFC loss scale
    ``method.s`` is the one REF was trained with (its LDAM ``s``, 30 by default), since cosine logits need it;
    ``train.batchnorm`` is ``frozen`` (REF's BatchNorm statistics are kept: mixed source+target batches would
    overwrite them within tens of steps, ``fairexpr/engine/batchnorm.py``). Overrides given after it still win."""
    from .. import checkpoint as ck
    from ..errors import ConfigError

    _, side = ck.read_source(ref, "--init")
    m, pre = side["model"], side.get("preprocess") or {}
    kwargs = dict(m.get("kwargs") or {})
    in_chans = int(kwargs.pop("in_chans", pre.get("in_chans", cfg["data"]["channels"])))
    if m["name"] in ("mcd_net", "afn_net"):
        raise ConfigError(f"--init: {ref} is an adapted {m['name']} network; start from a supervised (source-only) model")
    out: dict[str, Any] = {"model": {"name": m["name"], "pretrained": None, "kwargs": kwargs, "init": str(ref)},
                           "data": {"image_size": int((pre.get("input_size") or [cfg["data"]["image_size"]])[0]),
                                    "channels": in_chans},
                           "method": {},
                           # the converged source's BatchNorm statistics are kept (engine/batchnorm.py)
                           "train": {"batchnorm": "frozen"}}
    method = cfg["method"]["name"]
    if kwargs.get("head") == "normed" and method in ("mcd", "dann"):
        src_loss = (side.get("config") or {}).get("loss") or {}
        s_val = float((src_loss.get("kwargs") or {}).get("s", 30.0)) if src_loss.get("name") == "ldam" else 30.0
        out["method"]["s"] = s_val
        if method == "mcd":
            out["method"]["head"] = "normed"
    return out


def build_adapt_config(config_path: str | None, source: str, target: str, target_eval: str | None = None,
                       overrides: tuple[str, ...] | list[str] = (), *, epochs: int | None = None,
                       minutes: float | None = None, no_progress: bool = False, init: str | None = None) -> dict[str, Any]:
    """Resolve the config: file <- ``data.train/target/target_eval`` from the options <- ``--init`` <- overrides.

    ``data.target_eval`` is set from ``target_eval`` (``None`` without it) unless an override sets it.
    """
    from ..config import load_config
    from ..errors import ConfigError
    from ..methods.base import get_method

    # the evaluation set always comes from --target-eval (null without it), never from a config default
    # that may name another dataset than --target
    extra: dict[str, Any] = {"data": {"train": source, "target": target, "target_eval": target_eval or None}}
    tr = train_overrides(epochs, minutes, no_progress)
    if tr:
        extra["train"] = tr
    cfg = load_config(config_path, [] if init else list(overrides), extra=extra)
    if not get_method(cfg["method"]["name"]).needs_target:
        raise ConfigError(f"method.name={cfg['method']['name']!r} is not an adaptation method; "
                          "use mcd, dann or safn (or `fairexpr train` for supervised recipes)")
    if init:
        change = init_settings(init, cfg)
        cfg["model"] = change["model"]  # the source's network replaces the recipe's (its kwargs are not merged)
        cfg["data"].update(change["data"])
        cfg["method"].update(change["method"])
        cfg["train"].update(change["train"])
        cfg = load_config(None, list(overrides), extra=cfg)
    return cfg


def named_order(order: Any, run_dir: str) -> str:
    """DIFC's confusion order (class indices, most confused first, as logged) by class name, from the run's sidecar;
    the raw value when it is not known yet (``null`` in phase 1) or the sidecar is missing."""
    import json
    from pathlib import Path

    try:
        idx = json.loads(order) if isinstance(order, str) else order
        classes = json.loads((Path(run_dir) / "model.json").read_text())["classes"]
        return " > ".join(classes[int(i)] for i in idx) if idx else str(order)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return str(order)


def summarize(result: dict[str, Any]) -> str:
    lines = [f"run: {result['out']}  ({result['epochs_run']} epochs, {result['train_seconds'] / 60:.1f} min, "
             f"stopped by {result['stopped_by']}; best epoch {result['best_epoch']})"]
    hist = result.get("history") or []
    if hist and "difc_order" in hist[-1]:
        lines.append(f"  DIFC phase {hist[-1].get('difc_phase')}, confusion order "
                     f"{named_order(hist[-1]['difc_order'], result['out'])}, margins {hist[-1].get('margins')}")
    for role, m in (result.get("eval") or {}).items():
        lines.append(f"  {role:<12} n={m['n']:<6} accuracy={m['accuracy']:.4f}  balanced={m['balanced_accuracy']:.4f}")
    return "\n".join(lines)


@click.command("adapt")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="Recipe YAML (configs/difc_{mcd,dann,safn}[_cpu].yaml).")
@click.option("--source", required=True, help="Labelled source FORMAT:PATH (= data.train).")
@click.option("--target", required=True, help="Unlabelled target FORMAT:PATH (= data.target; labels ignored).")
@click.option("--target-eval", "target_eval", help="Labelled target FORMAT:PATH for evaluation only (= data.target_eval).")
@click.option("--out", default="runs/adapt", show_default=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--epochs", type=click.IntRange(min=1), help="= train.epochs")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), help="Wall-clock budget (= train.max_minutes).")
@click.option("--init", "init", metavar="RUN|NAME",
              help="Start from a trained source model, backbone and classifier (a run directory or a packaged "
                   "single-network model such as `fer`; the default model is an ensemble and cannot): sets model.* and "
                   "the input size from it (= model.init; MCD: C1 = its classifier, C2 = the same + noise).")
@click.option("--resume", is_flag=True, help="Continue a killed run (DIFC phase and margins are restored).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@json_option
@click.argument("overrides", nargs=-1)
def command(config_path, source, target, target_eval, out, epochs, minutes, init, resume, no_progress, as_json, overrides):
    """Adapt a FER model from SOURCE to TARGET. OVERRIDES are config keys, e.g. `method.cls_loss=di`.

    \b
    Example:
      fairexpr adapt --config configs/difc_mcd_cpu.yaml --source fer2013:$FAIREXPR_DATA/fer2013 \\
          --target ckplus:$FAIREXPR_DATA/ckplus/CK+48 --target-eval ckplus:$FAIREXPR_DATA/ckplus/CK+48 \\
          --out runs/difc_mcd method.cls_loss=difc
      # from the packaged MobileNetV2 model (backbone and classifier) instead of ImageNet weights:
      fairexpr adapt --config configs/difc_mcd_cpu.yaml --init fer --source ... --target ... --out runs/difc_mcd_init
    """
    from ..engine import fit

    cfg = build_adapt_config(config_path, source, target, target_eval, overrides, epochs=epochs, minutes=minutes,
                             no_progress=no_progress, init=init)
    result = fit(cfg, Path(out), resume=resume)
    emit({k: v for k, v in result.items() if k != "history"} | {"last_epoch": (result.get("history") or [{}])[-1]},
         as_json, summarize(result))
