"""Issue-5/16 benchmark: the CUCN ablation (Fan et al. 2022, Table II shape) on real data, seeds paired, claims tested.

Rows (each a `fairexpr train` of the recipe with overrides; ``<plain>`` = the recipe's backbone without CBAM:
``resnet18`` for ``--recipe cpu``, dlib's face ResNet-29 ``dlib_resnet29`` for ``--recipe dlib``):

    plain_ce        backbone + μ head, unweighted CE on μ      model.name=<plain> method.mixing=false method.class_weights=none
    plain_weights   + class weights (Eq. 1, inverse frequency)  model.name=<plain> method.mixing=false
    cbam_weights    + CBAM                                      method.mixing=false
    cucn            + uncertainty mixing (full CUCN)            (the recipe as is)

The claims, each a paired per-seed difference B − A with its 95 % t interval (docs/benchmarks.md, rule 3):

    class weights shrink the max–min class gap      plain_ce -> plain_weights   gap (lower is the claim)
    CBAM recovers the accuracy the weights cost     plain_weights -> cbam_weights   accuracy, balanced accuracy
    mixing helps (under --noise label noise)        cbam_weights -> cucn        accuracy, balanced accuracy

Datasets: FER2013 train (minus a 10 % stratified holdout, seeded) -> PrivateTest; FER+ majority train -> test
(FER2013Valid as validation). ``--noise R`` flips round(R·N) training labels to uniformly drawn other classes
(``data.label_noise``, drawn per seed; validation and test stay clean). Each cell's directory is keyed by the hash
of its resolved config (``benchmarks/_cells.py``): a run made with other settings is never reused; a killed run
resumes. ``--shard i/n`` runs every n-th cell (parallel processes), ``--collect`` only builds the tables.
``--cbam-init identity`` builds the CBAM rows with gates that start at exactly 1 (``model.kwargs.cbam_init``; the
paper's fresh gates start near 0.5 and scale a pretrained trunk's residual branches by ~1/4); the other rows' cells
are unchanged and reused.

    python benchmarks/cucn.py --recipe dlib --rows cbam_weights cucn --noise 0.2 --seeds 0 1 2 --datasets fer2013 \\
        --epochs 12 --cpu-minutes 40 --tag cucn_dlib_noise20 --shard 0/2        # and 1/2, then --collect
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _cells import STATUS_HELP, add_archive_argument, keep_finished, print_status, restore_archive  # noqa: E402
from fairexpr._io import atomic_write_text  # noqa: E402
from fairexpr.evaluation.convergence import epochs_cell, rule2_fields, rule2_verdict  # noqa: E402

#: recipe -> (config file, the backbone without CBAM, what the recipe is, in words)
RECIPES: dict[str, tuple[str, str, str]] = {
    "cpu": ("configs/cucn_cpu.yaml", "resnet18",
            "configs/cucn_cpu.yaml: 48x48 grey ResNet-18 from scratch (standard stem), Adam 1e-3 / classifier 5e-3, "
            "ExponentialLR 0.9; no pretrained ResNet-18 can be had here (the paper fine-tunes MS-Celeb weights)"),
    "dlib": ("configs/cucn_dlib_cpu.yaml", "dlib_resnet29",
             "configs/cucn_dlib_cpu.yaml: 64x64 grey, dlib's face-recognition ResNet-29 (CC0, pretrained on faces; "
             "feature stage 3), CBAM freshly initialised in every residual branch, Adam 1e-5 / classifier 1e-3, "
             "ExponentialLR 0.9, bf16"),
}

#: row -> (label, overrides; ``{plain}`` = the recipe's backbone without CBAM)
ROWS: dict[str, tuple[str, list[str]]] = {
    "plain_ce": ("backbone, unweighted CE", ["model.name={plain}", "method.mixing=false", "method.class_weights=none"]),
    "plain_weights": ("+ class weights", ["model.name={plain}", "method.mixing=false"]),
    "cbam_weights": ("+ class weights + CBAM", ["method.mixing=false"]),
    "cucn": ("+ mixing (full CUCN)", []),
}

#: (claim, row A, row B, metrics, lower_is_claim)
CLAIMS: list[tuple[str, str, str, tuple[str, ...], bool]] = [
    ("class weights shrink the max–min class gap", "plain_ce", "plain_weights", ("per_class_accuracy_gap",), True),
    ("CBAM recovers the accuracy the weights cost", "plain_weights", "cbam_weights", ("accuracy", "balanced_accuracy"), False),
    ("mixing helps", "cbam_weights", "cucn", ("accuracy", "balanced_accuracy"), False),
]
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "per_class_accuracy_min", "per_class_accuracy_max",
           "per_class_accuracy_gap")


def datasets(a: argparse.Namespace) -> dict[str, list[str]]:
    if a.synthetic:
        syn = "synthetic:fer2013"
        return {"synthetic": [f"data.train={syn}", "data.train_split=train", "data.train_options={total: 420, seed: 1}",
                              f"data.val={syn}", "data.val_split=val", "data.val_options={total: 140, seed: 1}",
                              f"data.test={syn}", "data.test_split=test", "data.test_options={total: 140, seed: 1}",
                              "train.batch_size=32"]
                + (["data.image_size=32", "model.kwargs={small_input: false}"] if a.recipe == "cpu" else
                   ["data.image_size=56", "model.pretrained=null"])}  # dlib stage 3 needs >= 55 px
    fer, ferplus = f"fer2013:{a.data}/fer2013", f"ferplus:{a.data}/ferplus"
    maj = "{protocol: majority}"
    return {
        "fer2013": [f"data.train={fer}", "data.train_split=train", "data.val=holdout:0.1",
                    f"data.test={fer}", "data.test_split=private_test"],
        "ferplus": [f"data.train={ferplus}", "data.train_split=train", f"data.train_options={maj}",
                    f"data.val={ferplus}", "data.val_split=val", f"data.val_options={maj}",
                    f"data.test={ferplus}", "data.test_split=test", f"data.test_options={maj}"],
    }


#: ``--weights``: the rule of every weighted row (``method.class_weights``, named as in ``fairexpr.losses.weights``);
#: None = the recipe's (inverse frequency)
WEIGHT_RULES = {"inverse": "inverse frequency", "sqrt": "square-root inverse frequency",
                "effective": "effective number (method.weight_beta)"}


#: ``--cbam-init`` (the choices of ``fairexpr.models.layers.CBAM_INITS``) -> how the tables describe it
CBAM_INIT_WORDS = {"paper": "the paper's (sigmoid gates, default initialisation: each gate starts near 0.5)",
                   "identity": "identity (gates 2 sigmoid with their last layer zeroed: exactly 1 at the start, so "
                               "the network starts as the pretrained one; not in the paper)"}


def weighted(row: str) -> bool:
    return "method.class_weights=none" not in ROWS[row][1]


def has_cbam(row: str) -> bool:
    """The rows that keep the recipe's CBAM network (the others swap in the backbone without it)."""
    return not any(o.startswith("model.name=") for o in ROWS[row][1])


def row_overrides(row: str, recipe: str, weights: str | None = None, cbam_init: str | None = None) -> list[str]:
    """A row's config overrides; ``weights`` sets the class-weight rule of the weighted rows only (the unweighted
    baseline's cells, and so their keys, stay the same); ``cbam_init`` the CBAM rows' gate initialisation
    (``model.kwargs.cbam_init``; None = the paper's, and no override, so earlier cells keep their keys)."""
    base = [o.format(plain=RECIPES[recipe][1]) for o in ROWS[row][1]]
    return (base + ([f"method.class_weights={weights}"] if weights and weighted(row) else [])
            + ([f"model.kwargs.cbam_init={cbam_init}"] if cbam_init and has_cbam(row) else []))


def cell_argv(recipe: str, args: list[str]) -> list[str]:
    return ["train", "--config", str(ROOT / RECIPES[recipe][0]), "--no-progress", *args]


def cell_name(ds: str, row: str, seed: int, noise: float, weights: str | None = None,
              cbam_init: str | None = None) -> str:
    return (f"{ds}_{row}" + (f"_w{weights}" if weights and weighted(row) else "")
            + (f"_cbam{cbam_init}" if cbam_init and has_cbam(row) else "")
            + (f"_noise{round(noise * 100)}" if noise else "") + f"_s{seed}")


def run_one(run_dir: Path, argv: list[str], log: Path) -> int:
    """Run (or resume) one cell, its output in ``log``; returns the exit status."""
    cmd = [sys.executable, "-m", "fairexpr.cli", *argv, "--out", str(run_dir)]
    if (run_dir / "last.json").exists():
        cmd.append("--resume")
    with open(log, "w") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).returncode


def parse_shard(s: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in s.split("/"))
    except ValueError:
        raise SystemExit(f"--shard: expected i/n (e.g. 0/2), got {s!r}") from None
    if n < 1 or not 0 <= i < n:
        raise SystemExit(f"--shard: need 0 <= i < n, got {s!r}")
    return i, n


def claims_table(cells: dict[str, dict[int, dict[str, Any]]], noise: float) -> list[dict[str, str]]:
    """Every claim whose two rows were run, per metric: A, B (means over the shared seeds, %), B − A [95 % CI] and the
    verdict (*reproduced* only when the interval excludes 0 in the claimed direction)."""
    from fairexpr.evaluation.stats import format_difference, paired_difference

    out = []
    for claim, ra, rb, metrics, lower in CLAIMS:
        if ra not in cells or rb not in cells:
            continue
        label = claim + (f" under {noise * 100:g} % symmetric label noise" if noise and rb == "cucn" else "")
        for metric in metrics:
            a = {s: m[metric] for s, m in cells[ra].items()}
            b = {s: m[metric] for s, m in cells[rb].items()}
            shared = sorted(set(a) & set(b))
            if not shared:
                out.append({"claim": label, "A → B": f"{ra} → {rb}", "metric": metric, "A": "–", "B": "–",
                            "B − A [95 % CI] (points)": "–", "verdict": f"no shared seed ({sorted(a)} vs {sorted(b)})"})
                continue
            d = paired_difference(a, b)
            want, other = ("b < a", "b > a") if lower else ("b > a", "b < a")
            verdict = ("**reproduced**" if d["verdict"] == want else "opposite shown" if d["verdict"] == other
                       else "not shown" if d["ci"] is not None else d["verdict"])
            out.append({"claim": label, "A → B": f"{ra} → {rb}", "metric": metric,
                        "A": f"{100 * sum(a[s] for s in shared) / len(shared):.2f}",
                        "B": f"{100 * sum(b[s] for s in shared) / len(shared):.2f}",
                        "B − A [95 % CI] (points)": format_difference(d), "verdict": verdict})
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]) + "\n"


def summary_rows(cells: dict[str, dict[int, dict[str, Any]]], runs: dict[str, dict[int, dict[str, Any]]]) -> list[dict]:
    """Per row: seeds, epochs run (best epoch per seed), mean ± sd of accuracy, balanced accuracy, min/max class
    accuracy and the gap (%)."""
    import numpy as np

    out = []
    for row, by_seed in cells.items():
        seeds = sorted(by_seed)

        def ms(metric: str) -> str:
            v = np.array([by_seed[s][metric] for s in seeds], dtype=float) * 100
            return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

        out.append({"row": f"{row} ({ROWS[row][0]})", "seeds": " ".join(map(str, seeds)),
                    "epochs (best)": ", ".join(epochs_cell(runs[row][s]["epochs"], runs[row][s]["best_epoch"],
                                                           runs[row][s].get("rule2_last_lead")) for s in seeds),
                    "rule 2": rule2_verdict([runs[row][s] for s in seeds]),
                    "accuracy": ms("accuracy"), "balanced": ms("balanced_accuracy"),
                    "min class": ms("per_class_accuracy_min"), "max class": ms("per_class_accuracy_max"),
                    "gap": ms("per_class_accuracy_gap")})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("FAIREXPR_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "cucn"), help="run directories")
    ap.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--tag", default="cucn", help="results file prefix: <results-dir>/<tag>.{json,md}")
    ap.add_argument("--cpu-minutes", type=float, default=20.0, help="process CPU-time training budget per cell")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--noise", type=float, default=0.0, help="symmetric label-noise rate on the training labels")
    ap.add_argument("--weights", choices=list(WEIGHT_RULES), default=None,
                    help="class-weight rule of the weighted rows (default: the recipe's, inverse frequency): "
                         + ", ".join(f"{k} = {v}" for k, v in WEIGHT_RULES.items()))
    from fairexpr.models.layers import CBAM_INITS

    ap.add_argument("--cbam-init", choices=list(CBAM_INITS), default=None,
                    help="gate initialisation of the CBAM rows (default: the paper's): identity = gates 2 sigmoid that "
                         "start at exactly 1, so the pretrained network starts unchanged (fairexpr.models.layers)")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="subset of rows")
    ap.add_argument("--datasets", nargs="+", choices=["fer2013", "ferplus"], help="subset of datasets")
    ap.add_argument("--synthetic", action="store_true", help="smoke run on synthetic faces instead of the real data")
    ap.add_argument("--shard", default="0/1", help="i/n: run only every n-th cell starting at i (parallel processes)")
    ap.add_argument("--collect", action="store_true", help="only build the tables from the finished cells")
    add_archive_argument(ap)
    ap.add_argument("--status", action="store_true", help=STATUS_HELP)
    ap.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra config overrides for every cell (part of each cell's key)")
    a = ap.parse_args(argv)
    if not 0.0 <= a.noise < 1.0:
        ap.error(f"--noise must be in [0, 1), got {a.noise}")
    # an option no selected cell would use is an error, not silently ignored
    if a.weights and not any(weighted(r) for r in a.rows):
        ap.error(f"--weights {a.weights}: none of --rows {' '.join(a.rows)} uses class weights "
                 f"(the weighted rows: {', '.join(r for r in ROWS if weighted(r))})")
    if a.cbam_init and not any(has_cbam(r) for r in a.rows):
        ap.error(f"--cbam-init {a.cbam_init}: none of --rows {' '.join(a.rows)} has CBAM "
                 f"(the CBAM rows: {', '.join(r for r in ROWS if has_cbam(r))})")
    if a.synthetic and a.datasets:
        ap.error(f"--datasets {' '.join(a.datasets)} picks real datasets, --synthetic runs the built-in synthetic "
                 "faces instead: give one of them")
    if a.status and (a.collect or a.shard != "0/1"):
        ap.error("--status lists every cell and stops: it takes no --collect or --shard")
    if a.collect and a.shard != "0/1":
        ap.error(f"--shard {a.shard} splits the cells to run; --collect builds the tables from every shard's cells: "
                 "drop --shard")
    if a.cbam_init == "paper":
        a.cbam_init = None  # the default: no override, the same cells (and keys) as without the flag
    shard = parse_shard(a.shard)
    from _cells import keyed_dir
    from fairexpr.evaluation.cucn_tables import table2, table2_markdown, write_report

    out, res_dir = Path(a.out), Path(a.results_dir)
    if not a.status:
        out.mkdir(parents=True, exist_ok=True)
        res_dir.mkdir(parents=True, exist_ok=True)
        restore_archive(ap, a.archive, out, "--synthetic" if a.synthetic else None)
    common = [f"train.max_minutes={a.cpu_minutes}", "train.budget_clock=process", f"train.epochs={a.epochs}"]
    if a.noise:
        common += [f"data.label_noise={a.noise}", "data.label_noise_kind=symmetric"]
    common += list(a.override)
    todo = [(ds, row, seed) for seed in a.seeds for ds in datasets(a) if not a.datasets or ds in a.datasets
            for row in a.rows]
    dirs = {c: keyed_dir(out, cell_name(c[0], c[1], c[2], a.noise, a.weights, a.cbam_init),
                         cell_argv(a.recipe, datasets(a)[c[0]] + row_overrides(c[1], a.recipe, a.weights, a.cbam_init) + common
                                   + [f"seed={c[2]}"]))
            for c in todo}
    if a.status:
        print_status([dirs[c] for c in todo], a.archive)
        return 0
    failed: list[str] = []
    if not a.collect:
        mine = [c for k, c in enumerate(todo) if k % shard[1] == shard[0]]
        for k, c in enumerate(mine):
            run_dir = dirs[c]
            if (run_dir / "result.json").exists():
                continue
            ds, row, seed = c
            print(f"[cucn] cell {k + 1}/{len(mine)}: {ds} / {row} / seed {seed} ...", flush=True)
            t0 = time.time()
            argv_c = cell_argv(a.recipe, datasets(a)[ds] + row_overrides(row, a.recipe, a.weights, a.cbam_init) + common
                               + [f"seed={seed}"])
            log = out / f"{cell_name(ds, row, seed, a.noise, a.weights, a.cbam_init)}.log"
            rc = run_one(run_dir, argv_c, log)
            if rc != 0:
                last = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] or [""]
                print(f"[cucn] {ds} / {row} / seed {seed} FAILED (exit {rc}): {last[0]} (log: {log})", flush=True)
                failed.append(cell_name(ds, row, seed, a.noise, a.weights, a.cbam_init))
                continue
            print(f"[cucn] {ds} / {row} / seed {seed} done in {(time.time() - t0) / 60:.1f} min", flush=True)
            keep_finished(ap, a.archive, [run_dir])
        if shard[1] > 1:
            print(f"[cucn] shard {a.shard} done" + (f", {len(failed)} cell(s) failed: {', '.join(failed)}" if failed else "")
                  + "; build the tables with --collect once every shard has finished")
            return 1 if failed else 0
    keep_finished(ap, a.archive, dirs.values())  # also the cells finished before --archive was used
    missing = [cell_name(c[0], c[1], c[2], a.noise, a.weights, a.cbam_init) for c in todo if not (dirs[c] / "result.json").exists()]
    results: dict[str, Any] = {}
    md: list[str] = []
    for ds in dict.fromkeys(c[0] for c in todo):
        cells: dict[str, dict[int, dict[str, Any]]] = {}
        runs: dict[str, dict[int, dict[str, Any]]] = {}
        for (d, row, seed), run_dir in dirs.items():
            if d != ds or not (run_dir / "result.json").exists():
                continue
            r = json.loads((run_dir / "result.json").read_text())
            m = r["eval"]["test"]
            cells.setdefault(row, {})[seed] = {k: m[k] for k in METRICS}
            runs.setdefault(row, {})[seed] = {
                "run": str(run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir),
                "epochs": r["epochs_run"], "best_epoch": r["best_epoch"], "train_seconds_cpu": r["train_seconds"],
                "stopped_by": r["stopped_by"], **rule2_fields(r.get("history")),
                "test": {k: m[k] for k in ("n", *METRICS, "per_class_accuracy")}}
        if not cells:
            continue
        claims = claims_table(cells, a.noise)
        results[ds] = {"rows": runs, "claims": claims}
        first = min(a.seeds)
        seed_runs = {ROWS[row][0]: dirs[(ds, row, first)] for row in a.rows if (ds, row, first) in dirs
                     and (dirs[(ds, row, first)] / "result.json").exists()}
        if seed_runs:
            write_report(seed_runs, res_dir / f"{a.tag}_{ds}", "test",
                         title=f"CUCN ablation, {ds} test, seed {first}: per-class accuracy")
        md += [f"### {ds}", "", "Mean ± sd over seeds (%), test split:", "", markdown(summary_rows(cells, runs)),
               "Claims, paired by seed (B − A, points; 95 % Student-t interval):", "", markdown(claims) or "(no claim has both rows)\n",
               f"Seed {first}, Table II shape:", "", table2_markdown(table2(seed_runs)) if seed_runs else ""]
    import torch

    meta = {"hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__}",
            "budget": f"{a.epochs} epochs per cell, at most {a.cpu_minutes} CPU-minutes of training (process time)",
            "recipe": RECIPES[a.recipe][2] + (f"; overrides: {' '.join(a.override)}" if a.override else ""),
            "class_weights": WEIGHT_RULES[a.weights or "inverse"]
                             + " from the training counts (the paper's hand-set values are unpublished)",
            "cbam_init": (CBAM_INIT_WORDS[a.cbam_init or "paper"]
                          if any(has_cbam(r) for r in a.rows) else "no CBAM row run"),
            "label_noise": f"{a.noise:g} symmetric on the training labels (per seed)" if a.noise else "none added",
            "seeds": a.seeds, "selection": "best validation balanced accuracy",
            "data": "synthetic faces (smoke run)" if a.synthetic else
                    "FER2013 train (10% holdout val) -> PrivateTest; FER+ majority train (FER2013Valid val) -> test",
            "command": "python benchmarks/cucn.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "missing_cells": missing, "date": time.strftime("%Y-%m-%d")}
    atomic_write_text(res_dir / f"{a.tag}.json", json.dumps({"meta": meta, "datasets": results}, indent=2))
    atomic_write_text(res_dir / f"{a.tag}.md",
        f"## CUCN ablation ({a.tag})\n\n" + "\n".join(md) + "\n"
        + ("**Missing cells** (not finished, left out of the tables): " + ", ".join(missing) + "\n\n" if missing else "")
        + "\n".join(f"- {k}: {v}" for k, v in meta.items() if k != "missing_cells") + "\n")
    print((res_dir / f"{a.tag}.md").read_text())
    if failed:
        print(f"[cucn] {len(failed)} cell(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
