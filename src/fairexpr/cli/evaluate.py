"""`fairexpr eval`: all metrics of a checkpoint on a dataset split; writes the files `report` uses."""
from __future__ import annotations

import click

from .common import checkpoint_option, emit, json_option, resolve_checkpoint_arg, tta_option


def parse_options(options: tuple[str, ...]) -> dict:
    """``--option key=value`` (repeatable) -> adapter options; values are read as YAML (numbers, lists, ...)."""
    from ..config import yaml_load
    from ..errors import ConfigError

    opts = {}
    for o in options:
        if "=" not in o:
            raise ConfigError(f"--option {o!r} must look like key=value")
        k, _, v = o.partition("=")
        opts[k] = yaml_load(v)
    return opts


def exclusion_lines(ex: dict | None) -> list[str]:
    """The printout of :func:`fairexpr.engine.evaluate.write_exclusions`'s summary (nothing is left out silently)."""
    if not ex or not ex.get("total"):
        return ["  excluded: none"]
    lines = [f"  excluded {ex['total']} image(s) of the split:"]
    lines += [f"    {n:>6}  {reason}" for reason, n in sorted(ex["by_reason"].items(), key=lambda kv: -kv[1])]
    if ex.get("files"):
        lines.append(f"    listed in {ex['files']}")
    return lines


@click.command("eval")
@checkpoint_option()
@click.option("--data", "spec", required=True, help="Dataset FORMAT:PATH.")
@click.option("--split", default=None, help="Split name (e.g. private_test, test, val).")
@click.option("--option", "options", multiple=True, help="Adapter option key=value (e.g. protocol=majority).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default RUN/eval/<name>).")
@click.option("--name", help="Name of this evaluation (folder under RUN/eval).")
@click.option("--on-bad-file", type=click.Choice(["error", "skip"]), default="error", show_default=True)
@click.option("--no-temperature", is_flag=True, help="Ignore a calibrated temperature stored in the checkpoint.")
@tta_option
@click.option("--no-progress", is_flag=True, help="Hide the decoding progress bar.")
@json_option
def command(checkpoint, spec, split, options, out_dir, name, on_bad_file, no_temperature, tta, no_progress, as_json):
    """Evaluate a trained model: accuracy, balanced accuracy, per-class accuracy, F1, calibration, confusion."""
    from ..engine.evaluate import evaluate_checkpoint
    from ..evaluation.tta import tta_label

    opts = parse_options(options)
    checkpoint = resolve_checkpoint_arg(checkpoint)
    m = evaluate_checkpoint(checkpoint, spec, split, options=opts, out_dir=out_dir, name=name, on_bad_file=on_bad_file,
                            use_temperature=not no_temperature, tta=tta, progress=not (as_json or no_progress))
    human = [f"{spec} [{split or 'all'}]  n={m['n']}" + (f"  ({tta_label(m['tta'])})" if m["tta"] != "none" else ""), f"  accuracy          {m['accuracy']:.4f}",
             f"  balanced accuracy {m['balanced_accuracy']:.4f}", f"  macro-F1          {m['macro_f1']:.4f}",
             f"  ECE / NLL         {m['ece']:.4f} / {m['nll']:.4f}", "  per-class accuracy:"]
    for c, a in m["per_class_accuracy"].items():
        human.append(f"    {c:<10} {'n/a' if a is None else f'{a:.3f}'}  (n={m['n_per_class'][c]})")
    human += exclusion_lines(m.get("exclusions"))
    human.append(f"  written to {m['out_dir']}")
    emit({k: v for k, v in m.items() if k not in ("reliability",)}, as_json, "\n".join(human))
