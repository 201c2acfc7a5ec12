"""`fairexpr list-datasets`: the registered dataset formats (the FORMAT of ``FORMAT:PATH``) with their
descriptions."""
from __future__ import annotations

import click

from .common import emit, json_option


@click.command("list-datasets")
@json_option
def command(as_json: bool) -> None:
    """List the dataset formats usable as FORMAT:PATH (e.g. fer2013:/data/fer2013, synthetic:fer2013)."""
    from ..data.base import _VIRTUAL, list_adapters

    formats = list_adapters()
    rows = [{"format": name, "description": desc, "needs_path": name not in _VIRTUAL}
            for name, desc in formats.items()]
    if as_json:
        emit(rows, True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dataset formats (address as FORMAT:PATH)", title_justify="left")
    table.add_column("format", style="bold")
    table.add_column("description")
    for r in rows:
        table.add_row(r["format"], r["description"])
    Console(width=120).print(table)
