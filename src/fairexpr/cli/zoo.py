"""`fairexpr zoo`: the packaged (pretrained) models — list them, show one's model card, copy one into a run folder."""
from __future__ import annotations

from typing import Any

import click

from .common import UserError, emit, json_option


def format_pretrained(rows: list[dict[str, Any]]) -> str:
    """The zoo as a table: name (aliases), architecture, input, size, and each recorded test set's
    accuracy / balanced accuracy."""
    from ..evaluation.tta import tta_label

    lines = []
    for r in rows:
        alias = f" ({', '.join(r['aliases'])})" if r["aliases"] else ""
        if not r["installed"]:
            lines.append(f"{r['name']}{alias}: not installed (rebuild with `make zoo`)")
            continue
        h, w = r["input_size"] or (0, 0)
        arch = r["architecture"] + (f" of {' + '.join(r['members'])}" if r.get("members") else "")
        lines.append(f"{r['name']}{alias}: {arch}, {h}x{w}, {r['size_mb']:.1f} MB, "
                     f"T = {r['temperature'] if r['temperature'] is not None else 1.0:.3f}"
                     + (f", runs with {tta_label(r['tta'])} by default (--tta none: one view)" if r.get("tta", "none") != "none" else "")
                     + f" — {r['description']}")
        for name, t in r["test"].items():
            lines.append(f"    {name:<46} n={t['n']:<5} accuracy {100 * t['accuracy']:.1f} %  "
                         f"balanced {100 * t['balanced_accuracy']:.1f} %" + (f"  ({tta_label(t['tta'])})" if t.get("tta", "none") != "none" else ""))
        lines.append(f"    {r['path']}")
    return "\n".join(lines)


@click.command("zoo")
@click.argument("name", required=False)
@click.option("--card", is_flag=True, help="Print NAME's model card (MODEL_CARD.md).")
@click.option("--copy-to", type=click.Path(file_okay=False),
              help="Copy NAME's checkpoint into this new run folder (to calibrate, fine-tune or evaluate it there).")
@json_option
def command(name, card, copy_to, as_json):
    """List the models shipped inside the package (`default` is the one every command uses without
    --checkpoint); with NAME, show that one."""
    from ..zoo import list_pretrained, pretrained_path

    if (card or copy_to) and not name:
        raise UserError("--card and --copy-to need a model NAME (e.g. `fairexpr zoo default --card`)")
    rows = list_pretrained()
    if name is None:
        emit(rows, as_json, format_pretrained(rows))
        return
    path = pretrained_path(name)
    row = next(r for r in rows if r["path"] == str(path))
    if copy_to:
        from .calibrate import copy_checkpoint

        dest = copy_checkpoint(path, copy_to)
        emit({**row, "copied_to": str(dest)}, as_json, f"copied {row['name']} to {dest}")
        return
    if card:
        f = path / "MODEL_CARD.md"
        if not f.is_file():
            raise UserError(f"{row['name']}: no MODEL_CARD.md under {path}")
        emit({**row, "card": f.read_text()}, as_json, f.read_text())
        return
    emit(row, as_json, format_pretrained([row]))
