"""`fairexpr calibrate`: fit temperature scaling on a validation split and store it in the checkpoint."""
from __future__ import annotations

from pathlib import Path

import click

from .common import UserError, checkpoint_option, emit, json_option, resolve_checkpoint_arg


def copy_checkpoint(checkpoint: str | Path, dest: str | Path) -> Path:
    """Copy a checkpoint's ``model.safetensors`` + ``model.json`` (and a model card, if any) into run folder
    ``dest`` (created; existing model files there are an error). Returns ``dest``."""
    import shutil

    from .. import checkpoint as ck

    weights, side_path = ck.resolve_checkpoint(checkpoint)
    dest = Path(dest)
    if (dest / "model.safetensors").exists() or (dest / "model.json").exists():
        raise UserError(f"--save-to {dest}: already holds a checkpoint (model.safetensors / model.json); choose a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    side = ck.read_json(side_path)
    for f in ck.weight_files(weights, side):  # model.safetensors and any extra_weights files
        ck.atomic_write_bytes(dest / ("model.safetensors" if f == weights else f.name), f.read_bytes())
    side["copied_from"] = str(checkpoint)
    ck.atomic_write_json(dest / "model.json", side)
    card = side_path.parent / "MODEL_CARD.md"
    if card.is_file():
        shutil.copyfile(card, dest / "MODEL_CARD.md")
    return dest


def calibrate_checkpoint(checkpoint: str | Path, spec: str, split: str | None = None, *, out_dir: str | Path | None = None,
                         on_bad_file: str = "error", progress: bool = True, save_to: str | Path | None = None,
                         options: dict | None = None) -> dict:
    """Fit ``T* = argmin_T NLL(softmax(z / T), y)`` on ``spec[split]`` (logits without any stored temperature),
    write ``temperature`` into the sidecar atomically, and the before/after calibration summary + reliability
    diagram to ``out_dir`` (default ``RUN/calibration/<format>_<split>``). Returns the summary.

    ``save_to``: write the calibrated checkpoint into this new folder and leave ``checkpoint`` untouched
    (required for a packaged model, whose files are read-only package data)."""
    import numpy as np

    from .. import checkpoint as ck
    from ..engine.evaluate import evaluate_checkpoint
    from ..evaluation.calibration import calibration_summary, fit_temperature
    from ..evaluation.plots import plot_reliability
    from ..zoo import is_packaged

    if save_to is not None:
        checkpoint = copy_checkpoint(checkpoint, save_to)
    weights, side_path = ck.resolve_checkpoint(checkpoint)
    if is_packaged(side_path):
        raise UserError(f"{checkpoint} is a packaged model (read-only package data): give --save-to DIR to write a "
                        "calibrated copy there")
    tag = f"{spec.split(':', 1)[0]}_{split}" if split else spec.split(":", 1)[0]
    out = Path(out_dir) if out_dir else side_path.parent / "calibration" / tag
    ev = evaluate_checkpoint(checkpoint, spec, split, options=options, out_dir=out, on_bad_file=on_bad_file,
                             progress=progress, use_temperature=False)
    with np.load(out / "predictions.npz") as f:
        logits, y = f["logits"].astype(np.float64), f["y_true"]
    t = fit_temperature(logits, y)
    summ = calibration_summary(logits, y, t)
    summ.update({"dataset": spec, "split": split, "n": int(len(y)), "checkpoint": str(checkpoint),
                 "exclusions": ev["exclusions"]})
    side = ck.read_json(side_path)
    side["temperature"] = float(t)
    side["calibration"] = {"dataset": spec, "split": split, "n": int(len(y)), "before": summ["before"],
                           "after": summ["after"]}
    ck.atomic_write_json(side_path, side)
    ck.atomic_write_json(out / "calibration.json", summ)
    summ["reliability_png"] = str(plot_reliability(summ["reliability_before"], out / "reliability.png",
                                                   after=summ["reliability_after"],
                                                   title=f"temperature scaling T = {t:.3f} on {tag}"))
    summ["out_dir"] = str(out)
    return summ


@click.command("calibrate")
@checkpoint_option()
@click.option("--data", "spec", required=True, help="Validation dataset FORMAT:PATH.")
@click.option("--split", default=None, help="Validation split (e.g. val, public_test).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder for calibration.json + reliability.png.")
@click.option("--save-to", type=click.Path(file_okay=False),
              help="Write the calibrated checkpoint into this new folder instead of updating --checkpoint in place "
                   "(required for a packaged model).")
@click.option("--option", "options", multiple=True, help="Adapter option key=value (e.g. protocol=majority).")
@click.option("--on-bad-file", type=click.Choice(["error", "skip"]), default="error", show_default=True)
@click.option("--no-progress", is_flag=True, help="Hide the decoding progress bar.")
@json_option
def command(checkpoint, spec, split, out_dir, save_to, options, on_bad_file, no_progress, as_json):
    """Fit a temperature on a validation split; store it in the checkpoint; report ECE/NLL before and after."""
    from .evaluate import parse_options

    s = calibrate_checkpoint(resolve_checkpoint_arg(checkpoint), spec, split, out_dir=out_dir, on_bad_file=on_bad_file,
                             progress=not (as_json or no_progress), save_to=save_to, options=parse_options(options))
    from .evaluate import exclusion_lines

    b, a = s["before"], s["after"]
    human = "\n".join([
        f"temperature T = {s['temperature']:.4f} fitted on {spec} [{split or 'all'}] (n={s['n']}), stored in " + s["checkpoint"],
        f"  ECE   {b['ece']:.4f} -> {a['ece']:.4f}",
        f"  NLL   {b['nll']:.4f} -> {a['nll']:.4f}",
        f"  Brier {b['brier']:.4f} -> {a['brier']:.4f}",
        f"  reliability diagram: {s['reliability_png']}", *exclusion_lines(s["exclusions"])])
    emit({k: v for k, v in s.items() if not k.startswith("reliability_") or k == "reliability_png"}, as_json, human)
