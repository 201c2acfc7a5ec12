"""Issue-7 benchmark: Meta-Face2Exp (Zeng et al., CVPR 2022) vs supervised learning (SL) with the same labels.

The paper's claim to test: with the same few labels, Meta-Face2Exp raises the mean of the per-class accuracies
("Mean Acc") and lowers their standard deviation ("Std Acc") relative to SL.

Grid: datasets x label fractions x {SL, Meta-Face2Exp} x seeds, every cell with the same backbone, sampler,
augmentation, optimizer and the same epoch and wall-clock budget (``configs/face2exp_cpu.yaml``; SL is the
same file with ``method: {name: supervised}`` and no unlabelled data, written next to the runs):

* ``fer2013``: FER2013 train at 10 % and 5 % of the labels (per class, seeded) + UTKFace unlabelled faces ->
  PrivateTest;
* ``ferplus``: FER+ majority-vote labels (8 classes) at 10 % + UTKFace -> FER+ test.

Each run is a separate ``fairexpr train`` process (a crash loses one run; finished runs are skipped when the
script is re-run, killed ones are resumed). Writes ``face2exp_runs.json`` (one record per run),
``face2exp_tables.json``, ``face2exp_tables.md`` and side-by-side confusion matrices (seed of the first
listed seed) into ``--results``.

    python benchmarks/face2exp.py --data $FAIREXPR_DATA --seeds 0 1 2 --epochs 30 --minutes 15
    python benchmarks/face2exp.py --datasets fer2013 --fractions 0.1 --seeds 0 1 2   # one cell pair

``--smoke`` replaces every dataset by the built-in synthetic faces (32x32) to check the pipeline in seconds;
its numbers mean nothing, so it refuses to write into ``benchmarks/results``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _cells import STATUS_HELP, add_archive_argument, keep_finished, print_status, restore_archive, run_cli_cell  # noqa: E402
from fairexpr._io import atomic_write_text  # noqa: E402
from fairexpr.evaluation.face2exp_tables import (delta_table, load_run, mean_std_table, per_class_table,  # noqa: E402
                                                 plot_confusion_pair, to_markdown)

RECIPE = ROOT / "configs" / "face2exp_mobilenet_cpu.yaml"

#: companion network name (``<run>/<name>.json``, evaluated by the engine) -> table label
COMPANION_LABEL = {"base": "B", "adaptation": "A"}


def datasets(data: Path, smoke: bool) -> dict[str, dict[str, object]]:
    """Per dataset: the config overrides that select its train/test data and the label fractions to run."""
    unl = [f"data.unlabelled=faces:{data}/utkface/crop_part1"]
    if smoke:
        syn = ["data.train=synthetic:fer2013", "data.train_split=train", "data.train_options={total: 420, size: 32}",
               "data.test=synthetic:fer2013", "data.test_split=test", "data.test_options={total: 420, size: 32}",
               "data.image_size=32", "data.unlabelled=synthetic:fer2013",
               "data.unlabelled_options={total: 200, seed: 9, size: 32}"]
        return {"fer2013": {"overrides": syn, "fractions": [0.1, 0.05]}, "ferplus": {"overrides": syn, "fractions": [0.1]}}
    return {
        "fer2013": {"overrides": [f"data.train=fer2013:{data}/fer2013", "data.train_split=train",
                                  f"data.test=fer2013:{data}/fer2013", "data.test_split=private_test", *unl],
                    "fractions": [0.1, 0.05]},
        "ferplus": {"overrides": [f"data.train=ferplus:{data}/ferplus", "data.train_split=train",
                                  "data.train_options={protocol: majority, num_classes: 8}",
                                  f"data.test=ferplus:{data}/ferplus", "data.test_split=test",
                                  "data.test_options={protocol: majority, num_classes: 8}", *unl],
                    "fractions": [0.1]},
    }


def sl_recipe(out: Path, recipe: Path) -> Path:
    """The SL baseline: the Face2Exp recipe with the supervised method and no unlabelled data."""
    cfg = yaml.safe_load(recipe.read_text())
    cfg["method"] = {"name": "supervised"}
    cfg["data"]["unlabelled"] = None
    path = out / "sl_recipe.yaml"
    out.mkdir(parents=True, exist_ok=True)
    from _cells import write_recipe

    write_recipe(path, f"# derived from {recipe.name} by benchmarks/face2exp.py: SL with the same labels\n"
                 + yaml.safe_dump(cfg, sort_keys=False))  # atomically: parallel invocations share it
    return path


def cell_argv(recipe: Path, method: str, frac: float, seed: int, overrides: list[str], args: argparse.Namespace) -> list[str]:
    """The `fairexpr train` command of one cell (without --out / --resume)."""
    argv = ["train", "--config", str(recipe), "--no-progress", f"seed={seed}", f"data.label_fraction={frac}",
            f"train.epochs={args.epochs}", f"train.max_minutes={args.minutes}", f"train.budget_clock={args.clock}",
            *overrides, *args.override]
    if method == "sl":  # SL has no unlabelled data and no method options: those overrides are Meta-Face2Exp's only
        argv = [c for c in argv if not c.startswith(("data.unlabelled=", "data.unlabelled_options=", "method."))]
    return argv


def cell_dir(out: Path, recipe: Path, method: str, dataset: str, frac: float, seed: int, overrides: list[str],
             args: argparse.Namespace) -> Path:
    """Named by the cell, keyed by the hash of its resolved config (rule 5: a run made with other settings is never
    reused)."""
    from _cells import keyed_dir

    return keyed_dir(out, f"{dataset}_{int(round(frac * 100))}pct_{method}_s{seed}",
                     cell_argv(recipe, method, frac, seed, overrides, args))


def run_cell(out: Path, recipe: Path, method: str, dataset: str, frac: float, seed: int, overrides: list[str],
             args: argparse.Namespace) -> Path:
    run_dir = cell_dir(out, recipe, method, dataset, frac, seed, overrides, args)
    run_cli_cell(run_dir, cell_argv(recipe, method, frac, seed, overrides, args))
    return run_dir


def last_epoch_network(run: Path, name: str = "base") -> Path | None:
    """Evaluate Meta-Face2Exp's ``name`` network as it was at the *last* epoch (from the training state
    ``last.safetensors``) on the run's test split; returns ``eval/<name>_last/test`` (cached) or None.

    The run's ``model``/companion checkpoints are taken at the epoch the deployed network's validation score picked;
    this gives the other network its own end-of-training weights, for a comparison that does not depend on A's
    selection."""
    from fairexpr import checkpoint as ck
    from fairexpr.engine.evaluate import evaluate_checkpoint

    out = run / "eval" / f"{name}_last" / "test"
    if (out / "metrics.json").is_file():
        return out
    if not (run / "last.safetensors").is_file() or not (run / "result.json").is_file():
        return None
    prefix = f"method/{name}."
    state = {k[len(prefix):]: v for k, v in ck.load_tensors(run / "last.safetensors").items() if k.startswith(prefix)}
    if not state:
        return None
    side = ck.read_json(run / "model.json")
    side.update(network=f"{name} (last epoch)", epoch=json.loads((run / "result.json").read_text())["epochs_run"])
    stem = f"{name}_last"
    ck.atomic_save_tensors(run / f"{stem}.safetensors", state)
    ck.atomic_write_json(run / f"{stem}.json", side)
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    evaluate_checkpoint(run / f"{stem}.json", data["test"], data.get("test_split"), options=data.get("test_options") or {},
                        out_dir=out, progress=False)
    return out


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("FAIREXPR_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--datasets", nargs="+", default=["fer2013", "ferplus"], choices=["fer2013", "ferplus"])
    p.add_argument("--fractions", nargs="+", type=float, help="label fractions (default: 0.1 0.05 FER2013, 0.1 FER+)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--recipe", default=str(RECIPE), help="Meta-Face2Exp recipe (SL is derived from it)")
    p.add_argument("--methods", nargs="+", default=["sl", "face2exp"], choices=["sl", "face2exp"],
                   help="run only these (the tables use whatever finished runs exist)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--minutes", type=float, default=12.0, help="budget per run (the same for SL and Meta-Face2Exp)")
    p.add_argument("--clock", choices=["wall", "process"], default="process",
                   help="budget clock: process CPU time is fair on a shared machine")
    p.add_argument("--out", default=str(ROOT / "runs" / "face2exp_benchmark"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default="face2exp", help="results file prefix: <results>/<tag>_{runs.json,tables.json,tables.md}")
    p.add_argument("--smoke", action="store_true", help="synthetic data only: checks the pipeline, numbers are void")
    p.add_argument("--override", nargs="*", default=[],
                   help="extra key=value config overrides for every run (method.* ones for the Meta-Face2Exp runs only)")
    add_archive_argument(p)
    p.add_argument("--status", action="store_true", help=STATUS_HELP)
    args = p.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.tag):
        p.error(f"--tag {args.tag!r}: expected a file-name prefix (letters, digits, '_', '.', '-')")
    f2e_only = [o for o in args.override if o.startswith(("data.unlabelled=", "data.unlabelled_options=", "method."))]
    if f2e_only and "face2exp" not in args.methods:  # SL drops them (cell_argv): with SL alone nothing would use them
        p.error(f"--override {' '.join(f2e_only)}: only the Meta-Face2Exp runs use it, and --methods is "
                f"{' '.join(args.methods)}")
    res = Path(args.results)
    if args.smoke and res.resolve() == (ROOT / "benchmarks" / "results").resolve():
        p.error("--smoke numbers are meaningless: pass --results to a scratch folder")
    out = Path(args.out)
    if not args.status:
        restore_archive(p, args.archive, out, "--smoke" if args.smoke else None)
    recipe = Path(args.recipe).resolve()
    sl = sl_recipe(out, recipe)
    grid = datasets(Path(args.data), args.smoke)
    t_start = time.time()
    cells: list[tuple[str, float, str, int, Path]] = []
    for ds in args.datasets:
        for frac in args.fractions or grid[ds]["fractions"]:  # type: ignore[union-attr]
            for seed in args.seeds:
                for method, cfg in (("sl", sl), ("face2exp", recipe)):
                    if method in args.methods and not args.status:
                        keep_finished(p, args.archive, [run_cell(out, cfg, method, ds, frac, seed,
                                                                 list(grid[ds]["overrides"]), args)])  # type: ignore[arg-type]
                    cells.append((ds, frac, method, seed, cell_dir(out, cfg, method, ds, frac, seed,
                                                                   list(grid[ds]["overrides"]), args)))  # type: ignore[arg-type]
    if args.status:
        print_status([c[-1] for c in cells if c[2] in args.methods], args.archive)
        return 0
    records = []
    for ds, frac, method, seed, run in cells:
        try:
            r = load_run(run)
        except (FileNotFoundError, KeyError, ValueError) as e:
            print(f"skipping unfinished run {run}: {e}", flush=True)
            continue
        r["dataset"] = ds
        if r["method"] == "Meta-Face2Exp":  # name the deployed network: the other one is added below
            deploy = (yaml.safe_load((run / "config.yaml").read_text())["method"].get("deploy") or "base")
            r["method"] = f"Meta-Face2Exp ({COMPANION_LABEL[deploy]})"
        r["train"] = f"{ds} ({r['train']})"  # one table row group per benchmark dataset
        result = json.loads((run / "result.json").read_text())
        r["train_seconds"], r["steps"], r["epochs_run"] = result.get("train_seconds"), result.get("steps"), result.get("epochs_run")
        records.append(r)
        last = last_epoch_network(run, "base") if r["method"].startswith("Meta-Face2Exp") else None
        if last is not None:
            records.append({**r, "run": f"{r['run']} (base, last epoch)", "method": "Meta-Face2Exp (B, last epoch)",
                            "best_epoch": r.get("epochs_run"),
                            "metrics": json.loads((last / "metrics.json").read_text())})
        for name in result.get("eval_companions", {}):  # Meta-Face2Exp's other network (B by default)
            comp = json.loads((run / "eval" / name / "test" / "metrics.json").read_text())
            records.append({**r, "run": f"{r['run']} ({name})", "method": f"Meta-Face2Exp ({COMPANION_LABEL.get(name, name)})",
                            "metrics": comp})
        keep_finished(p, args.archive, [run])  # with the last-epoch evaluation made above
    res.mkdir(parents=True, exist_ok=True)
    meta = {"hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads",
            "budget": {"epochs": args.epochs, "max_minutes_per_run": args.minutes, "clock": args.clock},
            "recipe": str(recipe.relative_to(ROOT)) if recipe.is_relative_to(ROOT) else str(recipe), "seeds": args.seeds, "datasets": args.datasets,
            "smoke": args.smoke, "overrides": args.override, "wall_minutes": (time.time() - t_start) / 60,
            "command": "python benchmarks/face2exp.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "torch": _torch_version(), "date": time.strftime("%Y-%m-%d")}
    atomic_write_text(res / f"{args.tag}_runs.json", json.dumps(
        {"meta": meta, "runs": [{k: v for k, v in r.items() if k != "metrics"}
                                | {"accuracy": r["metrics"]["accuracy"], "balanced_accuracy": r["metrics"].get("balanced_accuracy"),
                                   "per_class_accuracy": r["metrics"]["per_class_accuracy"],
                                   "per_class_accuracy_std": r["metrics"].get("per_class_accuracy_std")}
                                for r in records]}, indent=2, default=str))
    tables: dict[str, Any] = {}
    if records:
        import pandas as pd

        tables["mean_std"] = mean_std_table(records)
        networks = sorted({r["method"] for r in records if r["method"].startswith("Meta-Face2Exp")})
        if networks:  # one Δ-vs-SL block per Meta-Face2Exp network (A, B, B at its last epoch)
            tables["delta_vs_sl"] = pd.concat([delta_table(records, method=m).assign(network=m) for m in networks],
                                              ignore_index=True)
    for ds in sorted({r["dataset"] for r in records}):
        tables[f"per_class_{ds}"] = per_class_table([r for r in records if r["dataset"] == ds])
    atomic_write_text(res / f"{args.tag}_tables.json", json.dumps({k: json.loads(v.to_json(orient="split")) for k, v in tables.items()},
                                                         indent=2))
    figures = []
    for ds in args.datasets:
        for frac in args.fractions or grid[ds]["fractions"]:  # type: ignore[union-attr]
            pick = {m: next((r for r in records if r["dataset"] == ds and r["label_fraction"] == frac and r["seed"] == args.seeds[0]
                             and r["method"] == m), None) for m in ("SL", "Meta-Face2Exp (A)", "Meta-Face2Exp (B)")}
            for m, suffix in (("Meta-Face2Exp (B)", "_B"), ("Meta-Face2Exp (A)", "_A")):
                if pick["SL"] and pick[m]:
                    name = f"{args.tag}_confusion_{ds}_{int(round(frac * 100))}pct_s{args.seeds[0]}{suffix}.png"
                    plot_confusion_pair(pick["SL"], pick[m], res / name)
                    figures.append(name)
    md = [f"# Meta-Face2Exp vs SL{' (SMOKE RUN: synthetic data, numbers are void)' if args.smoke else ''}\n",
          f"Recipe `{meta['recipe']}` (SL: same file, supervised method, no unlabelled data); seeds {args.seeds}; "
          f"budget {args.epochs} epochs, at most {args.minutes} min ({args.clock} clock) per run; {meta['hardware']}. "
          "Mean Acc / Std Acc = mean / population std of the per-class accuracies of a run (%), then mean ± std "
          "over seeds. `Meta-Face2Exp (B)` = the base network B, `(A)` = the adaptation network A of the same run "
          "(both saved at the run's best epoch by the deployed network's validation score); `(B, last epoch)` = B's "
          "weights at the end of training (from the training state), independent of that selection. "
          "`epochs (best)` = epochs run and the epoch kept, per seed. Δ = Meta-Face2Exp − SL paired by seed, "
          "mean [95 % Student-t interval] in points; a claim is **reproduced** only when its interval excludes 0 "
          "in the claimed direction (Mean Acc up, Std Acc down).\n",
          f"- command: `{meta['command']}`", f"- torch {meta['torch']}, {meta['date']}\n"]
    for name, df in tables.items():
        md += [f"## {name}\n", to_markdown(df), ""]
    md += [f"![{f}]({f})" for f in figures]
    atomic_write_text(res / f"{args.tag}_tables.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
