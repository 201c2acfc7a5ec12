"""`fairexpr train`: train any method from a recipe config."""
from __future__ import annotations

from pathlib import Path

import click

from .common import emit, json_option, train_overrides


def summarize(result: dict) -> str:
    lines = [f"run: {result['out']}  ({result['epochs_run']} epochs, {result['train_seconds'] / 60:.1f} min, "
             f"stopped by {result['stopped_by']}; best epoch {result['best_epoch']})"]
    for role, m in (result.get("eval") or {}).items():
        lines.append(f"  {role:<12} n={m['n']:<6} accuracy={m['accuracy']:.4f}  balanced={m['balanced_accuracy']:.4f}  "
                     f"macro-F1={m['macro_f1']:.4f}  min/max class acc={m['per_class_accuracy_min']:.3f}/"
                     f"{m['per_class_accuracy_max']:.3f}")
    return "\n".join(lines)


def train_options(f):
    for opt in reversed([
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Recipe YAML (configs/*.yaml)."),
        click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory."),
        click.option("--train", "train_spec", help="Training data FORMAT:PATH (= data.train)."),
        click.option("--val", "val_spec", help="Validation FORMAT:PATH or holdout:FRACTION (= data.val)."),
        click.option("--test", "test_spec", help="Test FORMAT:PATH (= data.test)."),
        click.option("--epochs", type=click.IntRange(min=1), help="= train.epochs"),
        click.option("--minutes", type=click.FloatRange(min=0, min_open=True), help="Wall-clock budget (= train.max_minutes)."),
        click.option("--resume", is_flag=True, help="Continue a killed run from its last checkpoint."),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
        json_option,
        click.argument("overrides", nargs=-1),
    ]):
        f = opt(f)
    return f


def build_train_config(config_path, train_spec, val_spec, test_spec, epochs, minutes, no_progress, overrides,
                       extra: dict | None = None) -> dict:
    """The resolved config `fairexpr train` runs: file <- --train/--val/--test/--epochs/--minutes <- overrides."""
    from ..config import load_config

    extra = dict(extra or {})
    data: dict = extra.setdefault("data", {})
    if train_spec:
        data["train"] = train_spec
    if val_spec:
        data["val"] = val_spec
    if test_spec:
        data["test"] = test_spec
    extra.setdefault("train", {}).update(train_overrides(epochs, minutes, no_progress))
    return load_config(config_path, overrides, extra=extra)


def run_training(config_path, out, train_spec, val_spec, test_spec, epochs, minutes, resume, no_progress, overrides,
                 extra: dict | None = None) -> dict:
    from ..engine import fit

    cfg = build_train_config(config_path, train_spec, val_spec, test_spec, epochs, minutes, no_progress, overrides, extra)
    return fit(cfg, Path(out), resume=resume)


@click.command("train")
@train_options
def command(config_path, out, train_spec, val_spec, test_spec, epochs, minutes, resume, no_progress, as_json, overrides):
    """Train a model. OVERRIDES are config keys, e.g. `loss.name=ldam train.epochs=5`.

    \b
    Example:
      fairexpr train --config configs/ldam_drw_cpu.yaml --out runs/ldam \\
          data.train=fer2013:$FAIREXPR_DATA/fer2013 data.test_split=private_test
    """
    result = run_training(config_path, out, train_spec, val_spec, test_spec, epochs, minutes, resume, no_progress, overrides)
    emit({k: v for k, v in result.items() if k != "history"}, as_json, summarize(result))
