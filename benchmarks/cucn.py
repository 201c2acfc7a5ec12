"""Issue-5 benchmark: the CUCN ablation (Fan et al. 2022, Table II shape) on real data, same CPU budget per row.

Rows (each a `fairexpr train` of configs/cucn_cpu.yaml with overrides; fixed seed, from scratch — no
pretrained ResNet weights can be had on these machines, whereas the paper fine-tunes an MS-Celeb ResNet-18):

    resnet18_ce        ResNet-18 + μ head, unweighted CE on μ     model.name=resnet18 method.mixing=false method.class_weights=none
    resnet18_weights   + class weights (Eq. 1, inverse frequency)  model.name=resnet18 method.mixing=false
    cbam_weights       + CBAM                                      method.mixing=false
    cucn               + uncertainty mixing (full CUCN)            (the recipe as is)

Datasets: FER2013 train (minus a 10 % stratified holdout) -> PrivateTest; FER+ majority train -> test
(FER2013Valid as validation). Results: benchmarks/results/cucn.json, cucn.md, and per dataset the
Table II CSV/Markdown and the Fig. 4 per-class line chart (cucn_<dataset>_*). Finished runs are skipped
when the script is re-run; a killed run is resumed.

    python benchmarks/cucn.py --data $FAIREXPR_DATA --cpu-minutes 20 --epochs 8
    python benchmarks/cucn.py --synthetic --cpu-minutes 0.2 --epochs 1 --out /tmp/cucn_smoke \\
        --results-dir /tmp/cucn_smoke/results          # a seconds-long smoke run on synthetic faces
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

ROWS: dict[str, tuple[str, list[str]]] = {
    "resnet18_ce": ("ResNet-18 CE", ["model.name=resnet18", "method.mixing=false", "method.class_weights=none"]),
    "resnet18_weights": ("+ class weights", ["model.name=resnet18", "method.mixing=false"]),
    "cbam_weights": ("+ class weights + CBAM", ["method.mixing=false"]),
    "cucn": ("+ mixing (full CUCN)", []),
}


def datasets(a: argparse.Namespace) -> dict[str, list[str]]:
    if a.synthetic:
        syn = "synthetic:fer2013"
        return {"synthetic": [f"data.train={syn}", "data.train_split=train", "data.train_options={total: 420, seed: 1}",
                              f"data.val={syn}", "data.val_split=val", "data.val_options={total: 140, seed: 1}",
                              f"data.test={syn}", "data.test_split=test", "data.test_options={total: 140, seed: 1}",
                              "data.image_size=32", "model.kwargs={small_input: false}", "train.batch_size=32"]}
    fer, ferplus = f"fer2013:{a.data}/fer2013", f"ferplus:{a.data}/ferplus"
    maj = "{protocol: majority}"
    return {
        "fer2013": [f"data.train={fer}", "data.train_split=train", "data.val=holdout:0.1",
                    f"data.test={fer}", "data.test_split=private_test"],
        "ferplus": [f"data.train={ferplus}", "data.train_split=train", f"data.train_options={maj}",
                    f"data.val={ferplus}", "data.val_split=val", f"data.val_options={maj}",
                    f"data.test={ferplus}", "data.test_split=test", f"data.test_options={maj}"],
    }


def cell_argv(args: list[str]) -> list[str]:
    return ["train", "--config", str(ROOT / "configs" / "cucn_cpu.yaml"), "--no-progress", *args]


def run_one(run_dir: Path, args: list[str], log: Path) -> None:
    cmd = [sys.executable, "-m", "fairexpr.cli", *cell_argv(args), "--out", str(run_dir)]
    if (run_dir / "last.json").exists():
        cmd.append("--resume")
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("FAIREXPR_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "cucn"), help="run directories")
    ap.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--cpu-minutes", type=float, default=20.0, help="process CPU-time training budget per row")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", choices=list(ROWS), help="subset of rows")
    ap.add_argument("--datasets", nargs="*", help="subset of datasets (fer2013, ferplus)")
    ap.add_argument("--synthetic", action="store_true", help="smoke run on synthetic faces instead of the real data")
    a = ap.parse_args()
    from _cells import keyed_dir
    from fairexpr.evaluation.cucn_tables import table2, table2_markdown, write_report

    out, res_dir = Path(a.out), Path(a.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    res_dir.mkdir(parents=True, exist_ok=True)
    common = [f"train.max_minutes={a.cpu_minutes}", "train.budget_clock=process", f"train.epochs={a.epochs}",
              f"seed={a.seed}"]
    results: dict[str, dict] = {}
    md: list[str] = []
    for ds, ds_args in datasets(a).items():
        if a.datasets and ds not in a.datasets:
            continue
        done: dict[str, Path] = {}
        for row, (label, row_args) in ROWS.items():
            if a.only and row not in a.only:
                continue
            # keyed by the resolved config's hash: a run made with other settings is never reused (rule 5)
            run_dir = keyed_dir(out, f"{ds}_{row}_s{a.seed}", cell_argv(ds_args + row_args + common))
            if not (run_dir / "result.json").exists():
                print(f"[cucn] {ds} / {row} ...", flush=True)
                t0 = time.time()
                run_one(run_dir, ds_args + row_args + common, out / f"{ds}_{row}_s{a.seed}.log")
                print(f"[cucn] {ds} / {row} done in {(time.time() - t0) / 60:.1f} min", flush=True)
            r = json.loads((run_dir / "result.json").read_text())
            m = r["eval"]["test"]
            results.setdefault(ds, {})[row] = {
                "label": label, "overrides": row_args, "epochs": r["epochs_run"], "best_epoch": r["best_epoch"],
                "train_seconds_cpu": r["train_seconds"], "stopped_by": r["stopped_by"],
                "test": {k: m[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "per_class_accuracy",
                                           "per_class_accuracy_min", "per_class_accuracy_max", "per_class_accuracy_gap")},
            }
            done[label] = run_dir
        if done:
            write_report(done, res_dir / f"cucn_{ds}", "test", title=f"CUCN ablation, {ds} test: per-class accuracy")
            md += [f"### {ds}", "", table2_markdown(table2(done))]
    import torch

    meta = {"hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__}",
            "budget": f"{a.cpu_minutes} CPU-minutes of training per row (process time), at most {a.epochs} epochs",
            "recipe": "configs/cucn_cpu.yaml (48x48 grey, standard ResNet stem (the stride-1 small-input stem is too slow on 2 CPU cores), Adam 1e-3 / classifier 5e-3, ExponentialLR 0.9)",
            "weights": "from scratch: no pretrained ResNet-18 (the paper fine-tunes MS-Celeb weights)",
            "class_weights": "inverse frequency from the training counts (the paper's hand-set values are unpublished)",
            "seed": a.seed, "selection": "best validation balanced accuracy",
            "data": "synthetic faces (smoke run)" if a.synthetic else
                    "FER2013 train (10% holdout val) -> PrivateTest; FER+ majority train (FER2013Valid val) -> test",
            "date": time.strftime("%Y-%m-%d")}
    (res_dir / "cucn.json").write_text(json.dumps({"meta": meta, "datasets": results}, indent=2))
    (res_dir / "cucn.md").write_text("## CUCN ablation (Table II shape)\n\n" + "\n".join(md) + "\n"
                                     + "\n".join(f"- {k}: {v}" for k, v in meta.items()) + "\n")
    print((res_dir / "cucn.md").read_text())


if __name__ == "__main__":
    main()
