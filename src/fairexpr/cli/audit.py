"""`fairexpr audit FORMAT:PATH`: class counts and imbalance ratios, duplicates and train/test leakage,
conflicting labels, near-blank and unreadable images; optional JSON report, count chart and cleaned
manifest (see :mod:`fairexpr.audit`)."""
from __future__ import annotations

from typing import Any

import click

from .common import UserError


def _summary_tables(d: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    classes, splits = d["classes"], d["splits"]
    counts = Table()
    counts.add_column("class")
    for sp in splits:
        counts.add_column(sp, justify="right")
    for c in classes:
        counts.add_row(c, *[f"{d['per_split'][sp]['counts'][c]:,} ({d['per_split'][sp]['imbalance_ratio'][c]:.1f})"
                            for sp in splits])
    counts.add_row("[bold]total[/bold]", *[f"[bold]{d['per_split'][sp]['n']:,}[/bold]" for sp in splits])
    counts.add_row("max ratio", *[f"{d['per_split'][sp]['max_imbalance_ratio'] or 0:.2f}" for sp in splits])

    issues = Table()
    issues.add_column("check")
    for sp in splits:
        issues.add_column(sp, justify="right")
    ps = d["per_split"]
    ref = d["leakage"]["reference_split"]
    rows = [
        ("unique images", lambda sp: ps[sp]["unique_images"]),
        ("images in duplicate groups (within split)", lambda sp: ps[sp]["images_in_duplicate_groups"]),
        ("redundant copies (within split)", lambda sp: ps[sp]["redundant_copies"]),
        (f"also in {ref} (leakage)" if ref else "also in reference split",
         lambda sp: "-" if sp == ref or not ref else d["leakage"]["by_split"][sp]["n"]),
        ("  of which with another label",
         lambda sp: "-" if sp == ref or not ref else d["leakage"]["by_split"][sp]["n_label_conflicts"]),
        (f"near-blank (pixel std < {d['near_blank']['threshold_std']:g})", lambda sp: ps[sp]["near_blank"]),
        ("unreadable", lambda sp: ps[sp]["unreadable"]),
        ("unlabelled", lambda sp: ps[sp]["unlabelled"]),
    ]
    for name, fn in rows:
        issues.add_row(name, *[f"{fn(sp):,}" if isinstance(fn(sp), int) else str(fn(sp)) for sp in splits])
    return [f"[bold]{d['dataset']}[/bold]: images per class (imbalance ratio N_k / min_j N_j)", counts,
            "[bold]data issues per split[/bold]", issues]


@click.command("audit")
@click.argument("dataset", metavar="FORMAT:PATH")
@click.option("--split", "splits", multiple=True, help="Audit only this split (repeatable); default all splits.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON on stdout instead of the tables.")
@click.option("--json-out", "json_path", type=click.Path(dir_okay=False),
              help="Also write the full report as JSON to FILE.")
@click.option("--clean-manifest", "manifest", type=click.Path(dir_okay=False),
              help="Write a cleaned csv manifest (path,label,subject,split), loadable as csv:FILE.")
@click.option("--drop", default="test_dups_in_train", show_default=True,
              help="What the cleaned manifest drops, comma-separated: test_dups_in_train, cross_split_dups, "
                   "all_dups, conflicting, near_blank, none (unreadable files are always dropped).")
@click.option("--chart", type=click.Path(dir_okay=False), help="Write the per-class count bar chart (PNG).")
@click.option("--on-bad-file", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="Unreadable/corrupt images: stop with an error naming the file, or skip and list them.")
@click.option("--near-blank-std", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Images whose pixel standard deviation (0-255) is below this are reported as near-blank.")
@click.option("--reference-split", default=None, help="Split that leakage is measured against (default: train).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decoding processes (default: all CPUs).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def command(dataset: str, splits: tuple[str, ...], as_json: bool, json_path: str | None, manifest: str | None, drop: str,
            chart: str | None, on_bad_file: str, near_blank_std: float, reference_split: str | None,
            workers: int | None, no_progress: bool) -> None:
    """Audit a dataset: counts, imbalance ratios, duplicates/leakage, corrupt and near-blank images."""
    from rich.console import Console

    from ..audit import DROP_POLICIES, audit
    from ..data.base import DataError

    bad_policies = [p.strip() for p in drop.split(",") if p.strip() and p.strip() not in DROP_POLICIES]
    if bad_policies:
        raise click.BadParameter(f"unknown policy {', '.join(bad_policies)}; expected {', '.join(DROP_POLICIES)}",
                                 param_hint="--drop")
    try:
        rep = audit(dataset, splits=list(splits) or None, on_bad_file=on_bad_file,  # type: ignore[arg-type]
                    progress=not (no_progress or as_json), near_blank_std=near_blank_std, reference_split=reference_split,
                    workers=workers)
        d = rep.to_dict()
        written: dict[str, Any] = {}
        if manifest:
            written["clean_manifest"] = {"path": manifest, **rep.write_clean_manifest(manifest, drop=drop)}
        if chart:
            written["chart"] = str(rep.plot(chart))
    except DataError as e:
        raise UserError(str(e)) from None
    import json

    if json_path:
        from .._io import atomic_write_bytes

        atomic_write_bytes(json_path, (json.dumps({**d, "outputs": written}, indent=2) + "\n").encode())
    if as_json:
        click.echo(json.dumps({**d, "outputs": written}, indent=2))
        return
    console = Console(width=max(100, 40 + 22 * len(d["splits"])))
    for t in _summary_tables(d):
        console.print(t, highlight=False)
    dup = d["duplicates"]
    console.print(f"duplicate groups: {dup['n_groups']:,} ({dup['n_images_in_groups']:,} images; "
                  f"{dup['n_cross_split_groups']:,} span several splits; {dup['n_conflicting_groups']:,} with "
                  f"conflicting labels)")
    ident = d["identities"]
    if ident["known"]:
        parts = [f"{sp}: {v['subjects']:,} subjects" + (f", {v['sequences']:,} sequences" if v["sequences"] else "")
                 + f", {v['images_per_subject']['median']:g} images per subject (median; max {v['images_per_subject']['max']:,})"
                 for sp, v in ident["per_split"].items()]
        console.print("identities: " + "; ".join(parts), markup=False)
        if ident["shared_subjects"]:
            for pair, subj in ident["shared_subjects"].items():
                a, b = pair.split("|")
                console.print(f"[yellow]identity leakage: {len(subj):,} subjects in both {a} and {b}[/yellow] "
                              f"(e.g. {', '.join(subj[:5])})")
        elif len(ident["per_split"]) > 1:
            console.print("identity leakage: no subject appears in two splits")
        if ident["splits_without_ids"]:
            console.print(f"no subject ids in: {', '.join(ident['splits_without_ids'])}", markup=False)
    else:
        console.print(f"identities: {ident['note']}", markup=False)
    console.print(f"image sizes: {_top(d['image_sizes'])}; modes: {_top(d['modes'])}")
    if d["unreadable"]["n"]:
        console.print(f"[yellow]unreadable images skipped: {d['unreadable']['n']}[/yellow]")
        for it in d["unreadable"]["items"][:10]:
            console.print(f"  {it['reason']}", markup=False)
        _more(console, d["unreadable"]["n"])
    if d["skipped_by_adapter"]["n"]:
        console.print(f"[yellow]files skipped while scanning: {d['skipped_by_adapter']['n']}[/yellow]")
        for it in d["skipped_by_adapter"]["items"][:10]:
            console.print(f"  {it['path']}: {it['reason']}", markup=False)
        _more(console, d["skipped_by_adapter"]["n"])
    if "clean_manifest" in written:
        m = written["clean_manifest"]
        console.print(f"clean manifest: {m['path']} ({m['written']:,} kept, {m['dropped']:,} dropped by {drop})",
                      markup=False)
    if "chart" in written:
        console.print(f"chart: {written['chart']}", markup=False)
    if json_path:
        console.print(f"report: {json_path}", markup=False)
    console.print(f"audited {d['n_images']:,} images in {d['timing_s']['total']:.1f} s")


def _more(console: Any, n: int, shown: int = 10) -> None:
    if n > shown:
        console.print(f"  ... and {n - shown:,} more (all listed in the --json report)")


def _top(counter: dict[str, int], k: int = 4) -> str:
    items = list(counter.items())
    s = ", ".join(f"{key} ({n:,})" for key, n in items[:k])
    return s + (f", ... {len(items) - k} more" if len(items) > k else "") if items else "-"
