"""Does ``train.precision=bf16-mixed`` change what a recipe learns? Paired seeds, fp32 vs bf16 autocast.

Each seed trains the same recipe twice — ``train.precision=32-true`` and ``bf16-mixed`` (memory format ``auto``
= channels_last in both) — for the same number of epochs (no time budget, so both see identical data), one
thread per run, two runs at a time. Reports test accuracy and balanced accuracy per seed, the paired
difference bf16 - fp32 with its 95 % t interval (:mod:`fairexpr.evaluation.stats`) and the training img/s of
both (the ratio is measured in one run; absolute figures depend on the machine's load).

    python benchmarks/precision_parity.py --data $FAIREXPR_DATA --seeds 0 1 2 --epochs 3 \
        --recipe configs/baseline_ce_cpu.yaml model.kwargs.small_input=false

Results: ``benchmarks/results/precision_parity.{json,md}``; runs under ``benchmarks/runs/precision_parity/``
(a finished run made by the same command from the same recipe-file content is reused, any other is retrained).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fairexpr._io import atomic_write_text  # noqa: E402

PRECISIONS = ("32-true", "bf16-mixed")


def run_cell(cmd: list[str], out: Path, threads: int) -> dict:
    """Train one cell unless a finished one with the same command and the same recipe-file content exists."""
    res = out / "result.json"
    recipe = ROOT / cmd[cmd.index("--config") + 1]
    record = {"cmd": cmd, "recipe_sha256": hashlib.sha256(recipe.read_bytes()).hexdigest()}
    if res.is_file() and (out / "command.json").is_file() and json.loads((out / "command.json").read_text()) == record:
        return json.loads(res.read_text())
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(cmd + ["--out", str(out)], check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    atomic_write_text(out / "command.json", json.dumps(record))
    return json.loads(res.read_text())


def main() -> None:
    from fairexpr.evaluation.stats import format_difference, paired_difference

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("FAIREXPR_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--recipe", nargs="+", default=["configs/baseline_ce_cpu.yaml", "model.kwargs.small_input=false"],
                    help="recipe YAML then config overrides")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="threads per run (two runs at a time)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "precision_parity"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "precision_parity"))
    a = ap.parse_args()
    if len(a.seeds) < 2:
        ap.error("--seeds: give at least 2 seeds (a paired interval needs two)")
    os.environ["FAIREXPR_DATA"] = a.data
    recipe, overrides = a.recipe[0], a.recipe[1:]
    cells = {}
    for s in a.seeds:
        for p in PRECISIONS:
            cmd = [sys.executable, "-m", "fairexpr.cli", "train", "--config", recipe, *overrides, f"seed={s}",
                   f"train.precision={p}", f"train.epochs={a.epochs}", "train.max_minutes=null", "train.early_stop_patience=null",
                   "--no-progress"]
            cells[(s, p)] = (cmd, Path(a.runs) / f"{p}_s{s}")
    t0 = time.time()
    with ThreadPoolExecutor(a.parallel) as ex:
        futs = {k: ex.submit(run_cell, cmd, out, a.threads) for k, (cmd, out) in cells.items()}
        results = {k: f.result() for k, f in futs.items()}
    rows, per = [], {p: {"accuracy": {}, "balanced_accuracy": {}, "img_s": {}} for p in PRECISIONS}
    for (s, p), r in sorted(results.items()):
        test = r["eval"]["test"]
        ips = [h["train_images_per_s"] for h in r["history"][1:]] or [r["history"][0]["train_images_per_s"]]
        per[p]["accuracy"][s], per[p]["balanced_accuracy"][s] = test["accuracy"], test["balanced_accuracy"]
        per[p]["img_s"][s] = max(ips)
        rows.append({"seed": s, "precision": p, "accuracy": test["accuracy"], "balanced_accuracy": test["balanced_accuracy"],
                     "best_epoch": r["best_epoch"], "epochs": r["epochs_run"], "train_images_per_s": max(ips),
                     "run": str(cells[(s, p)][1])})
    diffs = {m: paired_difference(per["32-true"][m], per["bf16-mixed"][m]) for m in ("accuracy", "balanced_accuracy")}
    speed = paired_difference({s: 1.0 for s in a.seeds}, {s: per["bf16-mixed"]["img_s"][s] / per["32-true"]["img_s"][s]
                                                         for s in a.seeds})
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compare_fer import hardware

    rep = {"question": "does bf16-mixed training change test accuracy vs fp32 (same recipe, seeds, epochs)?",
           "recipe": recipe, "overrides": overrides, "epochs": a.epochs, "seeds": a.seeds, "threads_per_run": a.threads,
           "parallel_runs": a.parallel, "hardware": hardware(), "torch": __import__("torch").__version__,
           "date": time.strftime("%Y-%m-%d"), "wall_minutes": (time.time() - t0) / 60,
           "command": "python benchmarks/precision_parity.py " + " ".join(sys.argv[1:]), "rows": rows,
           "bf16_minus_fp32": diffs, "bf16_over_fp32_speed": {"mean": 1 + speed["mean"], "ci": [1 + c for c in speed["ci"]]}}
    res = Path(a.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(res.with_suffix(".json"), json.dumps(rep, indent=2))
    hw = rep["hardware"]
    hw_line = f"{hw['cpu']}, {hw['logical_cpus']} logical CPUs, {hw['memory_gib']} GiB, Python {hw['python']}"
    say = {"b > a": "bf16 > fp32", "b < a": "bf16 < fp32"}
    md = [f"# bf16-mixed vs fp32 training: `{recipe} {' '.join(overrides)}`, {a.epochs} epochs, seeds {a.seeds}", "",
          f"{hw_line}, torch {rep['torch']}, {a.threads} thread(s) per run, {a.parallel} runs at a time; "
          f"`{rep['command']}`", "", "| seed | precision | test acc % | balanced % | best epoch | train img/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['seed']} | {r['precision']} | {100 * r['accuracy']:.2f} | {100 * r['balanced_accuracy']:.2f} | "
                  f"{r['best_epoch']}/{r['epochs']} | {r['train_images_per_s']:.0f} |")
    md += ["", f"bf16 − fp32, paired by seed, 95 % CI: accuracy {format_difference(diffs['accuracy'])} points "
               f"({say.get(diffs['accuracy']['verdict'], diffs['accuracy']['verdict'])}), balanced "
               f"{format_difference(diffs['balanced_accuracy'])} points; speed bf16/fp32 "
               f"{rep['bf16_over_fp32_speed']['mean']:.2f}× [{rep['bf16_over_fp32_speed']['ci'][0]:.2f}, "
               f"{rep['bf16_over_fp32_speed']['ci'][1]:.2f}]"]
    atomic_write_text(res.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
