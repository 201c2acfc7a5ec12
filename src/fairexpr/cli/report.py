"""``fairexpr report RUN_DIRS... --out DIR``: one self-contained HTML report comparing runs."""
from __future__ import annotations

from pathlib import Path

import click

from .common import UserError, emit, json_option


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory for report.html, the PNGs, report.json and report.md.")
@click.option("--title", default=None, help="Report title.")
@click.option("--tsne-max-points", default=2000, show_default=True, type=click.IntRange(min=5),
              help="Subsample embeddings to at most this many points for t-SNE.")
@click.option("--tsne-iter", default=1000, show_default=True, type=click.IntRange(min=250),
              help="t-SNE optimisation steps.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the t-SNE subsample and layout.")
@click.option("--no-tsne", is_flag=True, help="Skip the t-SNE plots (most of a report's build time).")
@json_option
def command(run_dirs: tuple[Path, ...], out_dir: Path, title: str | None, tsne_max_points: int, tsne_iter: int, seed: int,
            no_tsne: bool, as_json: bool) -> None:
    """Build an HTML report from evaluated RUN_DIRS (each holding eval/<split>/metrics.json, or a
    directory holding metrics.json directly): comparison table, per-class accuracy, confusion
    matrices, reliability diagrams, t-SNE, training curves and class imbalance."""
    from ..data.base import DataError
    from ..evaluation.report import build_report, compare_table, load_runs, table_markdown

    try:
        runs = load_runs(run_dirs)
        ctx = click.get_current_context()
        for param, flag in (("tsne_max_points", "--tsne-max-points"), ("tsne_iter", "--tsne-iter")):
            if no_tsne and ctx.get_parameter_source(param).name != "DEFAULT":
                raise click.UsageError(f"{flag} has no effect with --no-tsne")
        path = build_report(run_dirs, out_dir, title=title, tsne_max_points=tsne_max_points,
                            tsne_max_iter=tsne_iter, seed=seed, tsne=not no_tsne)
    except DataError as e:
        raise UserError(str(e)) from None
    import json

    table = compare_table(runs)
    info = json.loads((out_dir / "report.json").read_text())
    result = {"report": str(path), "json": str(out_dir / "report.json"), "markdown": str(out_dir / "report.md"),
              "figures": sorted(p.name for p in out_dir.glob("*.png")), "table": info["table"],
              "warnings": info["warnings"]}
    human = table_markdown(table) + f"\nreport: {path}"
    if info["warnings"]:
        human += "\nnotes:\n" + "\n".join(f"  - {w}" for w in info["warnings"])
    emit(result, as_json, human)
