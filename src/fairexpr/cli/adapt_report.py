"""``fairexpr adapt-report RUN_DIRS... --out DIR``: the DIFC paper's tables for any list of ``fairexpr adapt`` runs."""
from __future__ import annotations

from pathlib import Path

import click

from .common import UserError, emit, json_option


@click.command("adapt-report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory for difc_tables.md, difc_tables.json and difc_per_class.png.")
@click.option("--top", default=3, show_default=True, type=click.IntRange(min=1),
              help="How many of the most confusing classes Table 4 groups against the rest.")
@click.option("--role", default="target_eval", show_default=True,
              help="Which evaluation of each run the tables use (eval/<role>).")
@json_option
def command(run_dirs: tuple[Path, ...], out_dir: Path, top: int, role: str, as_json: bool) -> None:
    """Tables shaped like Sreenivas et al. (DIFC) from adaptation runs: target accuracy / balanced accuracy
    over seeds (Table 2), confusion order after the DI phase (Table 3), top-k confusing classes vs the rest
    for DI vs DIFC (Table 4), CE/DI/DIFC x DANN/SAFN/MCD per target (Table 5), and a per-class bar chart."""
    from ..evaluation.difc_tables import load_run, write_tables

    records = []
    for d in run_dirs:
        try:
            records.append(load_run(d, role))
        except (FileNotFoundError, KeyError) as e:
            raise UserError(f"{d}: not a finished `fairexpr adapt` run ({e})") from None
        if records[-1]["metrics"] is None:
            raise UserError(f"{d}: result.json has no eval[{role!r}] (run adapt with --target-eval)")
    classes = list(records[0]["metrics"]["classes"])
    if any(list(r["metrics"]["classes"]) != classes for r in records):
        raise UserError("runs evaluate different label spaces; report them separately")
    if top >= len(classes):
        raise UserError(f"--top {top} must be below the number of classes ({len(classes)})")
    paths = write_tables(records, classes, out_dir, top=top,
                         header=f"# DIFC tables\n\n{len(records)} runs; evaluation `{role}`.\n")
    emit({k: str(v) for k, v in paths.items()}, as_json,
         paths["markdown"].read_text() + "\n" + "\n".join(f"{k}: {v}" for k, v in paths.items()))
