"""`fairexpr list-models`: every registered model with its description, parameter count and
default input size (models are built on the ``meta`` device where their builder allows it, so
listing allocates no weights)."""
from __future__ import annotations

from typing import Any

import click

from .common import emit, json_option


def model_table(num_classes: int = 7, names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per registered model (or per name in ``names``)."""
    import torch

    from ..models import create_model, list_models

    rows = []
    for name, entry in list_models().items():
        if names is not None and name not in names:
            continue
        if entry.default_cfg.get("composite"):  # built from trained members (the ensemble): no size of its own
            rows.append({"name": name, "description": entry.description, "params": None, "num_features": None,
                         "input_size": None, "min_input_size": None, "in_chans": None, "mean": None, "std": None})
            continue
        try:
            with torch.device("meta"):
                model = create_model(name, num_classes=num_classes)
        except (NotImplementedError, RuntimeError):  # a builder that reads tensor values at init
            model = create_model(name, num_classes=num_classes)
        cfg = model.pretrained_cfg
        rows.append({
            "name": name,
            "description": entry.description,
            "params": int(sum(p.numel() for p in model.parameters())),
            "num_features": int(model.num_features),
            "input_size": list(cfg["input_size"]),
            "min_input_size": list(entry.default_cfg.get("min_input_size", cfg["input_size"])),
            "in_chans": cfg["in_chans"],
            "mean": cfg["mean"],
            "std": cfg["std"],
        })
    return rows


@click.command("list-models")
@click.option("--num-classes", default=7, show_default=True, type=click.IntRange(min=1),
              help="Classes of the classifier head counted in the parameters.")
@click.option("--pretrained", is_flag=True, help="List the trained models shipped in the package instead "
                                                "(same as `fairexpr zoo`).")
@json_option
def command(num_classes: int, pretrained: bool, as_json: bool) -> None:
    """List the registered models (name, description, parameters, default input size)."""
    if pretrained:
        from ..zoo import list_pretrained
        from .zoo import format_pretrained

        if click.get_current_context().get_parameter_source("num_classes") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--num-classes does not apply to --pretrained (packaged models have their own classes)")
        rows_p = list_pretrained()
        emit(rows_p, as_json, format_pretrained(rows_p))
        return
    rows = model_table(num_classes)
    emit(rows, as_json, format_table(rows))


def format_table(rows: list[dict[str, Any]]) -> str:
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'name':<{width}}  {'params':>8}  {'input':>7}  {'feat':>5}  description"]
    for r in rows:
        if r["params"] is None:
            lines.append(f"{r['name']:<{width}}  {'-':>8}  {'-':>7}  {'-':>5}  {r['description']}")
            continue
        h, w = r["input_size"]
        lines.append(f"{r['name']:<{width}}  {r['params'] / 1e6:>7.2f}M  {h:>3}x{w:<3}  {r['num_features']:>5}  {r['description']}")
    return "\n".join(lines)
