"""Issue-6 benchmark: GReFEL (Wasi et al. 2024) ablations under one fixed budget per run.

Tables (``--tables``), each cell a separate ``fairexpr train`` process with the same recipe, epochs, time
budget and seeds (a crash loses one run; finished runs are skipped on a re-run, killed ones are resumed):

* ``a`` — Table 2 shape: head without RB (no anchors, no MHSA) / anchors only / MHSA only / anchors + MHSA;
  accuracy, macro-F1, parameters, FLOPs;
* ``b`` — Table 3 shape: the full head trained with L_cls / L_cls + L_a / L_cls + L_a + L_c
  (``method.lambda_anchor`` / ``method.lambda_center`` = 0 drop a term; "on" keeps the recipe's value);
* ``c`` — Table 7 shape: symmetric label noise 0/10/20/30 % on the training labels, without and with RB.

Runs shared by several tables (e.g. the full head, clean labels, full loss) are trained once. Every table also
gets the Davies–Bouldin / Calinski–Harabasz scores of the test embeddings, and a t-SNE plot of the test
embeddings is drawn for the first dataset and seed (with RB; and without RB when that run exists).

Datasets (``--datasets``): ``ferplus`` (FER+ majority protocol, 7 classes, train -> val -> test) and ``fer2013``
(train with a 10 % stratified holdout for model selection -> PrivateTest). ``synthetic`` uses the built-in
procedural faces (tiny, 32x32): it checks the pipeline in seconds, its numbers mean nothing, and it refuses to
write into ``benchmarks/results``.

Models (``--model``): ``reliability_balanced`` (default; ResNet-18 + RB head at 48x48 grey, the CPU recipe),
``grefel_small`` (the CPU-sized GReFEL at 112x112, for a GPU or a long CPU budget) or ``grefel`` (paper size).

    # CPU (2 cores): 1 seed, 3 epochs or 20 CPU-minutes per run
    python benchmarks/grefel.py --data $FAIREXPR_DATA --seeds 0 --epochs 3 --minutes 20
    # GPU: the GReFEL network itself, 3 seeds, 20 epochs
    python benchmarks/grefel.py --model grefel_small --seeds 0 1 2 --epochs 20 --minutes 60 --clock wall \\
        --override train.accelerator=cuda train.precision=bf16-mixed
    # a grid spanning sessions or fresh checkouts: finished cells kept in the repository (no weights), never rerun
    python benchmarks/grefel.py ... --tag T --archive benchmarks/results/cells/T
    # pipeline check
    python benchmarks/grefel.py --datasets synthetic --epochs 1 --results /tmp/grefel_smoke
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
from fairexpr.evaluation.grefel_tables import (change_table, claims_table, cluster_table, collapse_table,  # noqa: E402
                                               collapsed_runs_table, early_warning_table, epochs_table, load_run,
                                               loss_table, noise_table, rb_table, to_markdown)

RECIPE = ROOT / "configs" / "grefel_cpu.yaml"

#: head variants: name -> (use_anchors, use_mhsa)
VARIANTS = {"norb": (False, False), "anchors": (True, False), "mhsa": (False, True), "rb": (True, True)}
#: loss variants: name -> (L_a on, L_c on)
LOSSES = {"cls": (False, False), "cls_a": (True, False), "cls_a_c": (True, True)}
NOISE_RATES = (0.0, 0.1, 0.2, 0.3)

#: the one offline pretrained backbone (ImageNet MobileNetV2); FAIREXPR_WEIGHTS overrides its folder
MOBILENET_WEIGHTS = "${FAIREXPR_WEIGHTS:-../shared/weights}/mobilenet_v2-b0353104.pth"

#: model presets: name -> (registered model, model kwargs, image size, channels, pretrained weight file or None)
MODELS: dict[str, tuple[str, dict[str, Any], int, int, str | None]] = {
    "reliability_balanced": ("reliability_balanced", {"backbone": "resnet18", "backbone_kwargs": {"small_input": False}}, 48, 1, None),
    "rb_mobilenet": ("reliability_balanced", {"backbone": "mobilenet_v2", "backbone_kwargs": {"small_input": False}}, 48, 1,
                     MOBILENET_WEIGHTS),
    # the RB head on dlib's face-recognition ResNet-29 (issue 15's better backbone; `dlib` = the packaged CC0 weights)
    "rb_dlib": ("reliability_balanced", {"backbone": "dlib_resnet29", "backbone_kwargs": {"feature_stage": 3}}, 64, 1, "dlib"),
    "rb_dlib_112": ("reliability_balanced", {"backbone": "dlib_resnet29", "backbone_kwargs": {"feature_stage": 3}}, 112, 3,
                    "dlib"),
    "grefel_small": ("grefel_small", {}, 112, 1, None),
    "grefel": ("grefel", {}, 112, 3, None),
}


def model_recipe(recipe: Path, model: str, out: Path, extra_kwargs: dict[str, Any] | None = None) -> Path:
    """The recipe with its model replaced by a preset (written to ``out``). Head options of the recipe's
    ``model.kwargs`` (dropout, hidden, ...) are kept, backbone options are not."""
    from fairexpr.models.reliability import HEAD_OPTIONS

    cfg = yaml.safe_load(recipe.read_text())
    name, kwargs, size, chans, weights = MODELS[model]
    head = {k: v for k, v in (cfg.get("model", {}).get("kwargs") or {}).items() if k in HEAD_OPTIONS}
    kw = {**kwargs, **({"in_chans": chans} if name == "reliability_balanced" else {}), **head, **(extra_kwargs or {})}
    cfg["model"] = {"name": name, "pretrained": weights, "kwargs": kw}
    cfg["data"]["image_size"], cfg["data"]["channels"] = size, chans
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"recipe_{model}{'_' + '_'.join(map(str, extra_kwargs)) if extra_kwargs else ''}.yaml"
    from _cells import write_recipe

    write_recipe(path, f"# derived from {recipe.name} by benchmarks/grefel.py: model preset {model!r}\n"
                 + yaml.safe_dump(cfg, sort_keys=False))  # atomically: gpu/run.sh's parallel cells share it
    return path


def dataset_overrides(name: str, data: Path, synthetic_total: int) -> list[str]:
    """Config overrides selecting a benchmark dataset's train / validation / test data."""
    if name == "ferplus":
        fp, opts = f"ferplus:{data}/ferplus", "{protocol: majority, num_classes: 7}"
        return [f"data.train={fp}", "data.train_split=train", f"data.train_options={opts}",
                f"data.val={fp}", "data.val_split=val", f"data.val_options={opts}",
                f"data.test={fp}", "data.test_split=test", f"data.test_options={opts}"]
    if name == "fer2013":
        fer = f"fer2013:{data}/fer2013"
        return [f"data.train={fer}", "data.train_split=train", "data.val=holdout:0.1",
                f"data.test={fer}", "data.test_split=private_test"]
    if name == "synthetic":
        return ["data.train=synthetic:fer2013", "data.train_split=train", f"data.train_options={{total: {synthetic_total}}}",
                "data.val=holdout:0.1", "data.test=synthetic:fer2013", "data.test_split=test",
                f"data.test_options={{total: {synthetic_total}, seed: 1}}", "data.image_size=32"]
    raise ValueError(f"unknown dataset {name!r}")


def cells(tables: list[str], noise_rates: tuple[float, ...] = NOISE_RATES,
          variants: tuple[str, ...] = tuple(VARIANTS), losses: tuple[str, ...] = tuple(LOSSES)) -> list[tuple[str, str, float]]:
    """Distinct (head variant, loss variant, noise rate) cells needed by the requested tables, in run order
    (``noise_rates``: the Table-7 rates to include; ``variants``: the Table-2 rows to include, and of Table 7's two
    rows, norb and rb, the ones to run: two processes can then share one noise rate's cells; ``losses``: the
    Table-3 rows to include, so that table b's cells can be split the same way)."""
    want: list[tuple[str, str, float]] = []
    if "a" in tables:
        want += [(v, "cls_a_c", 0.0) for v in VARIANTS if v in variants]
    if "b" in tables:
        want += [("rb", loss, 0.0) for loss in LOSSES if loss in losses]
    if "c" in tables:
        want += [(v, "cls_a_c", rate) for rate in noise_rates for v in ("norb", "rb") if v in variants]
    return list(dict.fromkeys(want))


def cell_overrides(variant: str, loss: str, noise: float, recipe: dict[str, Any]) -> list[str]:
    use_a, use_m = VARIANTS[variant]
    la_on, lc_on = LOSSES[loss]
    meth = recipe.get("method", {})
    la, lc = float(meth.get("lambda_anchor", 1.0)), float(meth.get("lambda_center", 1.0))
    return [f"method.use_anchors={str(use_a).lower()}", f"method.use_mhsa={str(use_m).lower()}",
            f"method.lambda_anchor={la if la_on else 0.0}", f"method.lambda_center={lc if lc_on else 0.0}",
            f"data.label_noise={noise}", "data.label_noise_kind=symmetric"]


def cell_argv(recipe: Path, overrides: list[str], args: argparse.Namespace) -> list[str]:
    """The `fairexpr train` command of one cell (without --out / --resume)."""
    return ["train", "--config", str(recipe), "--no-progress", f"train.epochs={args.epochs}",
            f"train.budget_clock={args.clock}", f"train.max_minutes={args.minutes if args.minutes else 'null'}",
            *overrides, *args.override]


def run_cell(run_dir: Path, recipe: Path, overrides: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Train one cell unless finished; resume it when a previous process was killed."""
    return run_cli_cell(run_dir, cell_argv(recipe, overrides, args))


def tsne(run_dir: Path, path: Path, title: str, seed: int = 0) -> bool:
    """t-SNE of a run's test embeddings (``eval/test/predictions.npz``); False when the run has none."""
    import numpy as np

    from fairexpr.evaluation.plots import plot_tsne

    npz = run_dir / "eval" / "test" / "predictions.npz"
    if not npz.is_file():
        return False
    with np.load(npz) as z:
        if "embeddings" not in z.files:
            return False
        emb, y = z["embeddings"], z["y_true"]
    keep = y >= 0
    classes = json.loads((run_dir / "model.json").read_text())["classes"]
    plot_tsne(emb[keep], y[keep], classes, path, seed=seed, title=title)
    return True


#: CPU-budget options timed by ``--speed``: name -> (model preset, extra model kwargs)
SPEED_CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "grefel_small 112px": ("grefel_small", {}),
    "grefel_small 112px, frozen landmark stream": ("grefel_small", {"freeze_landmark": True}),
    "RB + resnet18 48px (small_input false)": ("reliability_balanced", {}),
    "RB + resnet18 48px (small_input true)": ("reliability_balanced", {"backbone_kwargs": {"small_input": True}}),
}


def measure_speed(images: int, batch: int, recipe: Path) -> dict[str, Any]:
    """Training images/s of each :data:`SPEED_CANDIDATES` entry with the engine (the CPU recipe: full GReFEL loss,
    augmentation, class-balanced sampler) on synthetic faces; the second epoch is timed (no data decoding)."""
    import tempfile

    import torch

    from fairexpr.config import load_config
    from fairexpr.engine import fit
    from fairexpr.evaluation.grefel_tables import complexity_of

    out: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "batch": batch, "images_per_epoch": images}
    for name, (model, extra) in SPEED_CANDIDATES.items():
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(str(model_recipe(recipe, model, Path(tmp), extra)), ["data.train=synthetic:fer2013", f"data.train_options={{total: {images}}}",
                                            "data.val=null", "data.test=null", "train.epochs=2", "train.max_minutes=null",
                                            f"train.batch_size={batch}", "train.progress=false"])
            res = fit(cfg, Path(tmp) / "run")
            side = json.loads((Path(tmp) / "run" / "model.json").read_text())
        c = complexity_of(side)
        out[name] = {"train_images_per_s": res["history"][-1]["train_images_per_s"], "params_M": c["params"] / 1e6,
                     "GMACs_per_image": c["macs"] / 1e9}
        print(name, out[name], flush=True)
    return out


def _torch_version() -> str:
    import torch

    return torch.__version__


def cell_key(r: dict[str, Any]) -> tuple:
    return (r["dataset"], r["rb"], r["loss"], r["label_noise"])


def _override_keys(items: list[str], where: str) -> dict[str, str]:
    """``key.path=value`` items by their key (the last item of a key wins, as in the config)."""
    from fairexpr.config import ConfigError, parse_override

    out: dict[str, str] = {}
    for o in items:
        try:
            out[".".join(parse_override(o)[0])] = o
        except ConfigError as e:
            raise ValueError(f"{where}: {e}") from None
    return out


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def verify_change(baseline: list[dict[str, Any]], records: list[dict[str, Any]], change: list[str]) -> dict[str, Any]:
    """Check, pair by pair (same cell and seed), that the saved ``config.yaml`` of this run's cell differs from the
    baseline cell's in the changed settings only (``change``: this run's ``--override`` items that differ), so that
    a baseline whose recipe file has been edited since cannot pass as the same settings. Pairs whose run folders are
    not on this machine are counted, not checked. Raises ``ValueError`` (one line) on a pair that differs elsewhere
    or not at all."""
    keys = set(_override_keys(change, "change"))
    mine = {(*cell_key(r), r["seed"]): r for r in records}
    checked = missing = 0
    for r in baseline:
        k = (*cell_key(r), r["seed"])
        if k not in mine:
            continue
        a, b = Path(r["run"]) / "config.yaml", Path(mine[k]["run"]) / "config.yaml"
        if not (a.is_file() and b.is_file()):
            missing += 1
            continue
        fa, fb = _flat(yaml.safe_load(a.read_text())), _flat(yaml.safe_load(b.read_text()))
        diff = sorted(x for x in set(fa) | set(fb) if fa.get(x, "<unset>") != fb.get(x, "<unset>"))
        if not diff:
            raise ValueError(f"--baseline: {a.parent} and {b.parent} ran the same config: nothing changed")
        other = [x for x in diff if x not in keys and not any(x.startswith(c + ".") for c in keys)]
        if other:
            x = other[0]
            raise ValueError(f"--baseline: {b.parent} differs from {a.parent} in {x} ({fa.get(x, '<unset>')!r} -> "
                             f"{fb.get(x, '<unset>')!r}), not only in {' '.join(change)}")
        checked += 1
    return {"pairs_checked": checked, "pairs_not_on_this_machine": missing}


def load_baseline(paths: list[Path], meta: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Records of earlier runs files and the change of settings this run makes over them (its ``--override`` items
    the baseline did not use). Raises ``ValueError`` (one line) when a file is not a runs file of this benchmark, was
    made with another model, recipe or budget, used an override this run drops, or when this run changes nothing, or
    two files hold different runs for one cell and seed."""
    records: dict[tuple, dict[str, Any]] = {}
    changes = set()
    mine = _override_keys(meta["overrides"], "--override")
    for path in paths:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--baseline {path}: cannot read a runs JSON ({e})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("meta"), dict) or not isinstance(doc.get("runs"), list):
            raise ValueError(f"--baseline {path}: expected a benchmarks/grefel.py <tag>_runs.json with 'meta' and 'runs'")
        bm = doc["meta"]
        for k in ("model", "recipe", "budget"):
            if bm.get(k) != meta[k]:
                raise ValueError(f"--baseline {path}: its {k} is {bm.get(k)!r}, this run's is {meta[k]!r}")
        theirs = _override_keys(bm.get("overrides", []), f"--baseline {path}")
        dropped = [o for k, o in theirs.items() if k not in mine]
        if dropped:
            raise ValueError(f"--baseline {path}: it ran with --override {' '.join(dropped)}, which this run does not")
        # a setting this run adds, or sets to another value than the baseline did, is the change
        changes.add(tuple(o for k, o in mine.items() if theirs.get(k) != o))
        for r in doc["runs"]:
            r = dict(r)
            if r.get("use_anchors") and "anchor_init" not in r:  # runs file made before the option existed
                r["anchor_init"] = "normal"
            k = (*cell_key(r), r["seed"])
            if k in records and records[k]["run"] != r["run"]:
                raise ValueError(f"--baseline: two runs for cell {k[:4]} seed {k[4]}: {records[k]['run']} and {r['run']}")
            records[k] = r
    if len(changes) != 1 or not next(iter(changes)):
        raise ValueError("--baseline: " + ("this run uses the same --override as the baseline: nothing changed"
                                           if changes == {()} else f"the files differ from this run by different "
                                           f"overrides ({' | '.join(sorted(' '.join(c) for c in changes))})"))
    return list(records.values()), list(next(iter(changes)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("FAIREXPR_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--datasets", nargs="+", default=["ferplus", "fer2013"], choices=["ferplus", "fer2013", "synthetic"])
    p.add_argument("--model", default="reliability_balanced", choices=sorted(MODELS))
    p.add_argument("--recipe", type=Path, default=RECIPE, help="base config (default configs/grefel_cpu.yaml)")
    p.add_argument("--tables", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--minutes", type=float, default=20.0, help="time budget per run (0 = epochs only)")
    p.add_argument("--clock", choices=["wall", "process"], default="process",
                   help="budget clock: process CPU time is fair on a shared CPU machine; use wall on a GPU")
    p.add_argument("--synthetic-total", type=int, default=400, help="images per split in --datasets synthetic")
    p.add_argument("--override", nargs="*", default=[], help="extra key=value config overrides for every run")
    p.add_argument("--out", default=str(ROOT / "runs" / "grefel_benchmark"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default="grefel", help="results file prefix: <results>/<tag>_{runs.json,tables.json,tables.md}, "
                   "<tag>_tsne*.png")
    p.add_argument("--noise", nargs="+", type=float, default=None,
                   help="label-noise rates of table c (default: all of 0 0.1 0.2 0.3; split the grid over processes "
                        "without overlapping cells)")
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                   help="table-a rows to run (default: all; norb = without RB, rb = anchors + MHSA); table c runs the "
                        "ones of norb and rb named here (--collect with both to get its table)")
    p.add_argument("--losses", nargs="+", default=None, choices=list(LOSSES),
                   help="table-b rows to run (default: all; cls = L_cls, cls_a = + L_a, cls_a_c = + L_a + L_c; "
                        "--collect with all three to get its table)")
    p.add_argument("--baseline", nargs="+", type=Path, default=None, metavar="RUNS_JSON",
                   help="earlier <tag>_runs.json files made with the same model, recipe and budget and a subset of this "
                        "run's --override: adds the table of the change (this run's extra overrides) per cell, paired "
                        "by seed")
    p.add_argument("--borrow", nargs="+", default=None, choices=list(VARIANTS),
                   help="with --baseline: head variants whose cells the change cannot affect (e.g. norb, which has no "
                        "anchors, for an anchor setting): the claims are recomputed with the baseline's cells of those "
                        "variants that this run did not make")
    p.add_argument("--collapse-below", type=float, default=None, metavar="PCT",
                   help="tables a and c: also count the runs of the two heads (without RB, RB) whose test accuracy is "
                        "below PCT %% (a threshold fixed before the runs) per noise rate (0 %% for table a), with the "
                        "one-sided Fisher exact p that the head without RB collapses more often")
    p.add_argument("--early-warning", nargs=2, type=float, default=None, metavar=("EPOCH", "PCT"),
                   help="with --collapse-below: also test whether a holdout balanced accuracy below PCT %% at EPOCH "
                        "foretells a collapse (2 x 2 counts, sensitivity and specificity with exact intervals)")
    p.add_argument("--collect", action="store_true",
                   help="train nothing: gather the finished runs of the requested cells into the tables")
    add_archive_argument(p)
    p.add_argument("--status", action="store_true", help=STATUS_HELP)
    p.add_argument("--speed", action="store_true",
                   help="only time training images/s of the CPU options (SPEED_CANDIDATES) -> <results>/grefel_speed.json")
    p.add_argument("--speed-images", type=int, default=256)
    args = p.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.tag):
        p.error(f"--tag {args.tag!r}: expected a file-name prefix (letters, digits, '_', '.', '-')")
    # a row filter for tables that are not requested would be silently ignored: refuse it
    for opt, used_by, what in (("noise", "c", "picks rows of"), ("variants", "ac", "picks rows of"),
                               ("losses", "b", "picks rows of"), ("collapse_below", "ac", "counts runs of")):
        if getattr(args, opt) is not None and not set(used_by) & set(args.tables):
            p.error(f"--{opt.replace('_', '-')} {what} table {' or '.join(used_by)}, but --tables is "
                    f"{' '.join(args.tables)}")
    if args.early_warning is not None:
        ew_epoch, ew_pct = args.early_warning
        if args.collapse_below is None:
            p.error("--early-warning tests a flag against collapses: give --collapse-below too")
        if ew_epoch != int(ew_epoch) or not 1 <= ew_epoch <= args.epochs:
            p.error(f"--early-warning {ew_epoch:g} {ew_pct:g}: EPOCH must be a whole epoch from 1 to --epochs ({args.epochs})")
        if not 0 < ew_pct < 100:
            p.error(f"--early-warning {ew_epoch:g} {ew_pct:g}: PCT must be a holdout balanced accuracy in % between 0 and 100")
    if args.collapse_below is not None and not 0 < args.collapse_below < 100:
        p.error(f"--collapse-below {args.collapse_below:g}: expected a test accuracy in % between 0 and 100")
    if args.borrow and not args.baseline:
        p.error("--borrow takes cells from a --baseline runs file: give --baseline too")
    if args.archive is not None and args.speed:
        p.error("--archive keeps trained cells; --speed trains none")
    if args.status and (args.collect or args.speed or args.baseline):
        p.error("--status lists the cells and stops: it takes no --collect, --speed or --baseline")
    args.noise = args.noise if args.noise is not None else list(NOISE_RATES)
    args.variants = args.variants if args.variants is not None else list(VARIANTS)
    args.losses = args.losses if args.losses is not None else list(LOSSES)
    if not args.speed and not cells(args.tables, tuple(args.noise), tuple(args.variants), tuple(args.losses)):
        p.error(f"--tables {' '.join(args.tables)} with --variants {' '.join(args.variants)} --losses "
                f"{' '.join(args.losses)}: no cell to run (table c runs norb and/or rb)")
    res = Path(args.results)
    if args.speed:
        speed = measure_speed(args.speed_images, 64, Path(args.recipe))
        res.mkdir(parents=True, exist_ok=True)
        speed["hardware"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads"
        atomic_write_text(res / "grefel_speed.json", json.dumps(speed, indent=2))
        return 0
    if "synthetic" in args.datasets and res.resolve() == (ROOT / "benchmarks" / "results").resolve():
        p.error("--datasets synthetic numbers are meaningless: pass --results to a scratch folder")
    recipe = yaml.safe_load(Path(args.recipe).read_text())
    meta = {"hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads",
            "model": args.model, "recipe": str(Path(args.recipe).resolve().relative_to(ROOT))
            if Path(args.recipe).resolve().is_relative_to(ROOT) else str(args.recipe),
            "budget": {"epochs": args.epochs, "max_minutes_per_run": args.minutes or None, "clock": args.clock},
            "datasets": args.datasets, "seeds": args.seeds, "tables": args.tables, "overrides": args.override,
            "collapse_below_pct": args.collapse_below,
            "early_warning": ({"epoch": int(args.early_warning[0]), "below_pct": args.early_warning[1]}
                              if args.early_warning is not None else None),
            "archive": str(args.archive) if args.archive is not None else None,
            "wall_minutes": None,
            "command": "python benchmarks/grefel.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "torch": _torch_version(), "date": time.strftime("%Y-%m-%d")}
    baseline, change_items = [], []
    if args.baseline:  # checked before any training: a mismatch is found in seconds, not after the cells
        try:
            baseline, change_items = load_baseline(args.baseline, meta)
        except ValueError as e:
            p.error(str(e))
        meta["baseline"] = {"files": [str(f) for f in args.baseline], "change": " ".join(change_items)}
    change = " ".join(change_items)
    out = Path(args.out) / args.model
    run_recipe = model_recipe(Path(args.recipe), args.model, out)
    t_start = time.time()
    from _cells import keyed_dir

    if not args.status:
        restore_archive(p, args.archive, out, "--datasets synthetic" if "synthetic" in args.datasets else None)

    log, dirs = [], []
    tsne_dirs: dict[tuple, Path] = {}
    for ds in args.datasets:
        base = dataset_overrides(ds, Path(args.data), args.synthetic_total)
        for seed in args.seeds:
            for variant, loss, noise in cells(args.tables, tuple(args.noise), tuple(args.variants), tuple(args.losses)):
                ov = [*base, f"seed={seed}", *cell_overrides(variant, loss, noise, recipe)]
                # keyed by the resolved config's hash: a run made with other settings is never reused (rule 5)
                run_dir = keyed_dir(out, f"{ds}_{variant}_{loss}_n{int(round(noise * 100))}_s{seed}",
                                    cell_argv(run_recipe, ov, args))
                tsne_dirs.setdefault((ds, variant, loss, noise, seed), run_dir)
                if args.status:
                    dirs.append(run_dir)
                    continue
                status = ({"run": str(run_dir), "status": "collected" if (run_dir / "result.json").exists() else "missing"}
                          if args.collect else run_cell(run_dir, run_recipe, ov, args))
                keep_finished(p, args.archive, [run_dir])  # as it finishes: a lane cut off later keeps it
                log.append({**status, "dataset": ds, "seed": seed, "variant": variant, "loss": loss, "label_noise": noise})
                dirs.append(run_dir)
    if args.status:
        print_status(dirs, args.archive)
        return 0
    records = []
    for d in dirs:
        try:
            records.append(load_run(d))
        except (FileNotFoundError, KeyError, ValueError) as e:
            print(f"skipping unfinished run {d}: {e}", flush=True)
    if baseline and records:  # the pairs' saved configs differ in the change only (a recipe edit would show here)
        try:
            meta["baseline"]["configs"] = verify_change(baseline, records, change_items)
        except ValueError as e:
            p.error(str(e))
    res.mkdir(parents=True, exist_ok=True)
    meta["wall_minutes"] = (time.time() - t_start) / 60
    atomic_write_text(res / f"{args.tag}_runs.json", json.dumps({"meta": meta, "runs": records, "log": log}, indent=2, default=str))
    tables: dict[str, Any] = {}
    if records and baseline:
        tables["change_vs_baseline"] = change_table(baseline, records, change)
        if args.borrow:
            from fairexpr.evaluation.grefel_tables import rb_variant

            made = {cell_key(r) for r in records}
            lend = {rb_variant(*VARIANTS[v]) for v in args.borrow}
            borrowed = [r for r in baseline if cell_key(r) not in made and r["rb"] in lend]
            claims = claims_table([*records, *borrowed])
            if len(claims):
                tables["claims_with_baseline_cells"] = claims
    if records:
        if "a" in args.tables:
            tables["table2_reliability_balancing"] = rb_table(records)
        if "b" in args.tables:
            tables["table3_loss_terms"] = loss_table(records)
        if "c" in args.tables:
            tables["table7_label_noise_accuracy"] = noise_table(records)
            tables["table7_label_noise_balanced_accuracy"] = noise_table(records, metric="balanced_accuracy")
            tables["table7_label_noise_macro_f1"] = noise_table(records, metric="macro_f1")
        if args.collapse_below is not None:  # the two heads of table a (clean) and/or c, one row per noise rate
            tables["label_noise_collapses"] = collapse_table(records, args.collapse_below / 100)
            if args.early_warning is not None:
                tables["label_noise_early_warning"] = early_warning_table(
                    records, args.collapse_below / 100, int(args.early_warning[0]), args.early_warning[1] / 100)
            collapsed = collapsed_runs_table(records, args.collapse_below / 100)
            if len(collapsed):
                tables["label_noise_collapsed_runs_per_class"] = collapsed
        clusters = cluster_table(records)
        if len(clusters):  # clean full-loss cells only: none in a noise-only run
            tables["embedding_cluster_quality"] = clusters
        claims = claims_table(records)
        if len(claims):
            tables["claims_paired_by_seed"] = claims
        tables["epochs_run_and_kept"] = epochs_table(records)
    atomic_write_text(res / f"{args.tag}_tables.json", json.dumps({k: json.loads(v.to_json(orient="split", force_ascii=False))
                                                        for k, v in tables.items()}, indent=2, ensure_ascii=False))
    figures = []
    for variant, name, label in (("rb", f"{args.tag}_tsne.png", "with RB"),
                                 ("norb", f"{args.tag}_tsne_without_rb.png", "without RB")):
        run_dir = tsne_dirs.get((args.datasets[0], variant, "cls_a_c", 0.0, args.seeds[0]))
        if run_dir is not None and (run_dir / "result.json").exists() and tsne(run_dir, res / name,
                                                       f"t-SNE, {args.datasets[0]} test, {args.model} {label}",
                                                       seed=args.seeds[0]):
            figures.append(name)
    smoke = " (SYNTHETIC PIPELINE CHECK: numbers are void)" if "synthetic" in args.datasets else ""
    md = [f"# GReFEL ablations{smoke}\n",
          f"Model `{args.model}` from `{meta['recipe']}`; seeds {args.seeds}; budget {args.epochs} epochs"
          + (f", at most {args.minutes} min ({args.clock} clock)" if args.minutes else "") + f" per run; "
          f"{meta['hardware']}; extra overrides {args.override or 'none'}. Accuracy and macro-F1 in % on the test "
          "split (FER+: majority protocol, 7 classes, test; FER2013: PrivateTest), mean ± std over seeds. "
          "GFLOPs = multiply-accumulates at the model's input size (the paper's unit). Cluster scores of the test "
          "embeddings grouped by true class: Davies–Bouldin lower is better, Calinski–Harabasz higher is better. "
          "Claims: B − A paired by seed, mean [95 % Student-t interval] in points, **reproduced** only when the "
          "interval excludes 0 in the claimed direction. Epochs: epochs run (epoch kept by validation) per seed."
          + (f" Collapses: runs with test accuracy below {args.collapse_below:g} % (marked *), per head, with the "
             "one-sided Fisher exact p that the head without RB collapses more often; RB − without RB on the seeds "
             "where neither collapsed is described, not tested (the split is made by the outcome); every collapsed "
             "run's recall per class is listed."
             + (f" Early warning: a run is flagged when its holdout balanced accuracy at epoch {int(args.early_warning[0])} "
                f"is below {args.early_warning[1]:g} %; sensitivity and specificity with exact 95 % intervals."
                if args.early_warning is not None else "")
             if args.collapse_below is not None else "") + "\n",
          f"- command: `{meta['command']}`", f"- torch {meta['torch']}, {meta['date']}\n"]
    if baseline:
        md += [f"Baseline (A): {', '.join(f'`{f}`' for f in args.baseline)}; this run (B) differs by `{change}`. "
               "`change_vs_baseline`: every cell both made, B − A paired by seed."
               + (f" Saved configs of the paired runs compared: {meta['baseline']['configs']['pairs_checked']} differ "
                  f"in the change only, {meta['baseline']['configs']['pairs_not_on_this_machine']} not on this "
                  "machine to check." if meta["baseline"].get("configs") else "")
               + (f" `claims_with_baseline_cells`: the claims over this run's cells plus the baseline's cells of "
                  f"{', '.join(args.borrow)} (`--borrow`: variants the change cannot affect) that this run did not make."
                  if args.borrow else "") + "\n"]
    for name, df in tables.items():
        md += [f"## {name}\n", to_markdown(df), ""]
    md += [f"![{f}]({f})" for f in figures]
    atomic_write_text(res / f"{args.tag}_tables.md", "\n".join(md) + "\n")
    print("\n".join(md))
    failed = [r for r in log if r["status"].startswith("failed")]
    return 1 if failed and not records else 0


if __name__ == "__main__":
    sys.exit(main())
