"""Issue-4 benchmark: DIFC (Sreenivas et al., ECCVW 2022) — does DI beat CE, and DIFC beat DI, in
cross-dataset FER, and mostly on the confusing classes?

Grid: {MCD, DANN} x {CE, DI, DIFC} x seeds x targets, one source (default FER2013 train), every cell with
the same epoch and wall-clock budget (the CPU configs `configs/difc_{mcd,dann}_cpu.yaml`). Each run is a
separate `fairexpr adapt` process (a crash loses one run, not all; a finished run is reused when the script is
re-run only if its config is the requested one: run directories are keyed by the resolved config's hash,
benchmarks/_cells.py). ``--init RUN|NAME`` starts every cell from a trained source model. Target labels are used only for the final evaluation (`--target-eval` = the target set).

Writes benchmarks/results/difc_runs.json (one record per run), difc_tables.json and difc_tables.md
(Tables 2/3/4/5-shaped, mean ± std over seeds).

    python benchmarks/difc.py --data $FAIREXPR_DATA --seeds 0 1 2          # recipe configs/difc_*_mobilenet_cpu.yaml
    python benchmarks/difc.py --shard 0/2 & python benchmarks/difc.py --shard 1/2   # two processes
    # other targets: --target ckplus:$FAIREXPR_DATA/ckplus/CK+48 --target ferplus:$FAIREXPR_DATA/ferplus@test
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _cells import STATUS_HELP, add_archive_argument, keep_finished, print_status, restore_archive, run_cli_cell  # noqa: E402
from fairexpr._io import atomic_write_text  # noqa: E402
from fairexpr.evaluation.convergence import best_val_epoch  # noqa: E402
from fairexpr.evaluation.difc_tables import load_run, write_tables  # noqa: E402


def parse_target(t: str) -> tuple[str, str | None]:
    """``FORMAT:PATH[@split]`` -> (spec, split)."""
    spec, _, split = t.partition("@")
    return spec, (split or None)


RECIPES = {"cpu": "_cpu", "mobilenet": "_mobilenet_cpu", "dlib": "_dlib"}


def cell_argv(method: str, loss: str, seed: int, source: str, source_split: str, target: str, target_split: str | None,
              args: argparse.Namespace) -> list[str]:
    """The `fairexpr adapt` command of one cell (without --out / --resume)."""
    recipe = ROOT / "configs" / f"difc_{method}{RECIPES[args.recipe]}.yaml"
    budget = [f"method.t1_epochs={args.t1}"] if args.t1 is not None else []
    budget += [f"train.epochs={args.epochs}"] if args.epochs is not None else []
    budget += [f"train.max_minutes={args.minutes}"] if args.minutes is not None else []
    budget += [f"train.iters_per_epoch={args.iters}"] if args.iters is not None else []
    init = ["--init", args.init] if args.init else []
    return ["adapt", "--config", str(recipe), *init, "--source", source, "--target", target, "--target-eval", target,
            "--no-progress", f"seed={seed}", f"method.cls_loss={loss}", *budget, f"data.train_split={source_split}",
            f"data.target_split={target_split if target_split else 'null'}",
            f"data.target_eval_split={target_split if target_split else 'null'}", *target_options(target), *args.override]


def cell_dir(out: Path, method: str, loss: str, seed: int, target: str, target_split: str | None, argv: list[str]) -> Path:
    """Named by the cell and keyed by the hash of the config its command resolves to (rule 5: a run made with other
    settings is never reused)."""
    from _cells import keyed_dir

    return keyed_dir(out, f"{method}_{loss}_{Path(target.split(':', 1)[1]).name}_{target_split or 'all'}_s{seed}", argv)


def target_options(target: str) -> list[str]:
    """FER+ as a target: the 7-class majority protocol (contempt/unknown/non-face dropped), the source's classes."""
    if target.split(":", 1)[0] == "ferplus":
        opts = "{protocol: majority, num_classes: 7}"
        return [f"data.target_options={opts}", f"data.target_eval_options={opts}"]
    return []


def run_cell(out: Path, method: str, loss: str, seed: int, source: str, source_split: str, target: str,
             target_split: str | None, args: argparse.Namespace) -> Path:
    argv = cell_argv(method, loss, seed, source, source_split, target, target_split, args)
    run_dir = cell_dir(out, method, loss, seed, target, target_split, argv)
    run_cli_cell(run_dir, argv)
    return run_dir


def shard_of(k: int, target_index: int, per_target: int, n: int) -> int:
    """Shard of the k-th cell (seeds outermost, then targets, then methods x losses, ``per_target`` cells each).

    Plain ``k mod n`` would give one shard every MCD ``ce``/``difc`` cell and the other every ``di`` cell of a
    target when ``per_target`` is even, so the target index shifts the pattern there (each shard gets a mix of the
    slower MCD and the DANN cells); with an odd ``per_target`` consecutive targets already alternate."""
    return (k + (target_index if per_target % 2 == 0 else 0)) % n


def source_only(init: str, target: str, target_split: str | None, out: Path) -> dict:
    """The ``--init`` model itself on a target (the source-only row every adapted cell is compared with): one
    ``fairexpr eval`` of the same crops, cached in a directory keyed like the cells (by the command and the weights)."""
    import hashlib

    from _cells import weights_sha256

    argv = ["eval", "--checkpoint", init, "--data", target, "--no-progress", "--json"]
    argv += ["--split", target_split] if target_split else []
    if target.split(":", 1)[0] == "ferplus":
        argv += ["--option", "protocol=majority", "--option", "num_classes=7"]
    key = hashlib.sha256(json.dumps([argv, weights_sha256(init, "--init")]).encode()).hexdigest()[:10]
    run_dir = out / f"source_only_{Path(target.split(':', 1)[1]).name}_{target_split or 'all'}_{key}"
    if not (run_dir / "metrics.json").exists():
        cmd = [sys.executable, "-c", "import sys; from fairexpr.cli import main; sys.exit(main(sys.argv[1:]))", *argv,
               "--out", str(run_dir)]
        print("+", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise SystemExit(f"source-only evaluation failed (exit {proc.returncode}): {' '.join(cmd)}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics | {"checkpoint": init, "run": str(run_dir)}


def budget_meta(records: list[dict]) -> dict:
    """The budget the finished runs actually used (from their saved configs)."""
    seen = {}
    import yaml

    for r in records:
        cfg = yaml.safe_load((Path(r["run"]) / "config.yaml").read_text()) or {}
        t, m = cfg.get("train", {}), cfg.get("method", {})
        key = json.dumps({"model": cfg.get("model", {}).get("name"), "epochs": t.get("epochs"),
                          "iters_per_epoch": t.get("iters_per_epoch"), "batch_size": t.get("batch_size"),
                          "t1_epochs": m.get("t1_epochs"), "max_minutes": t.get("max_minutes"),
                          "budget_clock": t.get("budget_clock")}, sort_keys=True)
        seen[key] = seen.get(key, 0) + 1
    return {"settings": [json.loads(k) | {"runs": n} for k, n in seen.items()]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("FAIREXPR_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--source", help="FORMAT:PATH[@split] (default: fer2013 train)")
    p.add_argument("--target", action="append", help="FORMAT:PATH[@split]; repeatable (default: CK+48 all, FER+ test)")
    p.add_argument("--methods", nargs="+", default=["mcd", "dann"], choices=["mcd", "dann", "safn"])
    p.add_argument("--losses", nargs="+", default=["ce", "di", "difc"], choices=["ce", "di", "difc"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--recipe", choices=sorted(RECIPES), default="mobilenet",
                   help="configs/difc_{method}_cpu.yaml (small-stem ResNet-18 from scratch), "
                        "configs/difc_{method}_mobilenet_cpu.yaml (ImageNet MobileNetV2; the CPU benchmark recipe) or "
                        "configs/difc_mcd_dlib.yaml (dlib's face ResNet-29 at 112 px; the GPU run, MCD only)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the recipe's)")
    p.add_argument("--iters", type=int, help="steps per epoch, train.iters_per_epoch (default: the recipe's)")
    p.add_argument("--t1", type=int, help="DI phase length in epochs, DIFC from this epoch on (default: the recipe's)")
    p.add_argument("--minutes", type=float, help="time budget per run, train.max_minutes (default: the recipe's)")
    p.add_argument("--shard", default="0/1", help="i/n: run only every n-th cell starting at i (parallel processes); "
                                                 "tables are written from whatever runs have finished")
    p.add_argument("--collect", action="store_true", help="only build the tables from finished runs")
    add_archive_argument(p)
    p.add_argument("--status", action="store_true", help=STATUS_HELP)
    p.add_argument("--out", default=str(ROOT / "runs" / "difc_benchmark"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--override", nargs="*", default=[], help="extra key=value config overrides for every run")
    p.add_argument("--init", metavar="RUN|NAME",
                   help="start every cell from this trained source model (fairexpr adapt --init: backbone and classifier; "
                        "rule 1 of docs/benchmarks.md): a run folder or a packaged single-network model, e.g. `fer` (the "
                        "packaged MobileNetV2, what the difc_init_default study started from)")
    p.add_argument("--tag", default="difc",
                   help="results file prefix: <results>/<tag>_runs.json, <tag>_tables.md/.json, <tag>_per_class.png "
                        "(default difc; e.g. difc_init_default for the study from the shipped model)")
    args = p.parse_args(argv)
    if not args.tag.replace("_", "").replace("-", "").isalnum():
        p.error(f"--tag {args.tag!r}: letters, digits, '_' and '-' only (it names files)")
    if args.status and (args.collect or args.shard != "0/1"):
        p.error("--status lists every cell and stops: it takes no --collect or --shard")
    if args.collect and args.shard != "0/1":
        p.error(f"--shard {args.shard} splits the cells to run; --collect builds the tables from every shard's cells: "
                "drop --shard")
    missing = [m for m in args.methods if not (ROOT / "configs" / f"difc_{m}{RECIPES[args.recipe]}.yaml").is_file()]
    if missing:
        p.error(f"--recipe {args.recipe} has no recipe for {', '.join(missing)} (configs/difc_<method>{RECIPES[args.recipe]}.yaml)")
    data = Path(args.data)
    source, source_split = parse_target(args.source or f"fer2013:{data}/fer2013@train")
    targets = [parse_target(t) for t in (args.target or [f"ckplus:{data}/ckplus/CK+48", f"ferplus:{data}/ferplus@test"])]
    out = Path(args.out)
    if not args.status:
        restore_archive(p, args.archive, out)
    t_start = time.time()
    shard_i, shard_n = (int(v) for v in args.shard.split("/"))
    runs = []
    cells = [(seed, ti, target, tsplit, method, loss) for seed in args.seeds for ti, (target, tsplit) in enumerate(targets)
             for method in args.methods for loss in args.losses]  # seeds outermost: seed 0 of every cell first
    per_target = len(args.methods) * len(args.losses)
    for k, (seed, ti, target, tsplit, method, loss) in enumerate(cells):
        if args.status or args.collect or shard_of(k, ti, per_target, shard_n) != shard_i:
            argv = cell_argv(method, loss, seed, source, source_split or "train", target, tsplit, args)
            runs.append(cell_dir(out, method, loss, seed, target, tsplit, argv))
        else:
            runs.append(run_cell(out, method, loss, seed, source, source_split or "train", target, tsplit, args))
        if not args.status:
            keep_finished(p, args.archive, runs[-1:])  # as it finishes (with --collect: every finished cell)
    if args.status:
        print_status(runs, args.archive)
        return 0
    records = []
    for r in runs:
        try:
            records.append(load_run(r))
        except (FileNotFoundError, KeyError) as e:
            print(f"skipping unfinished run {r}: {e}", flush=True)
    # the --init model itself on every target: the source-only baseline of rule 1 (paired claims "adapted > source-only")
    so = {target: source_only(args.init, target, tsplit, out) for target, tsplit in targets} if args.init else None
    from fairexpr.labels import CANONICAL7

    classes = list(CANONICAL7)
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    meta = {"hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads",
            "recipe": args.recipe, "budget": budget_meta(records),
            "seeds": args.seeds, "source": f"{source}@{source_split}", "targets": [f"{t}@{s or 'all'}" for t, s in targets],
            "overrides": args.override, "init": args.init, "wall_minutes": (time.time() - t_start) / 60,
            "command": "python benchmarks/difc.py " + shlex.join(sys.argv[1:] if argv is None else argv)}
    if so:
        meta["source_only"] = {t: {k: m[k] for k in ("accuracy", "balanced_accuracy", "n", "run")} for t, m in so.items()}
    atomic_write_text(res / f"{args.tag}_runs.json", json.dumps({"meta": meta, "runs": [
        {k: v for k, v in r.items() if k != "history"} | {"train_seconds_history": [h.get("train_time_s") for h in r["history"]],
                                                          "difc_phase_reached": max([int(h.get("difc_phase") or 1)
                                                                                     for h in r["history"]] or [1]),
                                                          "best_epoch": json.loads((Path(r["run"]) / "result.json")
                                                                                   .read_text()).get("best_epoch"),
                                                          "epochs_run": len(r["history"]),
                                                          # the epoch the source validation split liked best (with
                                                          # train.select_metric=last the kept model is the last one)
                                                          "best_val_epoch": best_val_epoch(r["history"]),
                                                          "val_balanced_accuracy_history": [
                                                              h.get("val_balanced_accuracy") for h in r["history"]]}
        for r in records]}, indent=2, default=str))
    header = (f"# DIFC benchmark\n\nSource {meta['source']}; targets {', '.join(meta['targets'])}; seeds {args.seeds}; "
              f"recipe `{args.recipe}`; budget {json.dumps(meta['budget'])}; {meta['hardware']}.\n\n"
              f"Command: `{meta['command']}`\n")
    if args.init:
        header += (f"\nEvery cell starts from `{args.init}` (`fairexpr adapt --init`); *source-only* = that model on the "
                   "target. Overrides: " + (" ".join(f"`{o}`" for o in args.override) or "none") + ".\n")
    paths = write_tables(records, classes, res, prefix=args.tag, header=header, source_only=so)
    md = [paths["markdown"].read_text()]
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
