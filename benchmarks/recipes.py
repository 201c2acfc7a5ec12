"""Train every recipe once, as written, and report its ECE before / after the end-of-training temperature (issue 14:
"ECE figures before/after for every recipe").

Each recipe file runs as its own `fairexpr train` process — or `fairexpr adapt` for the adaptation recipes (a config
whose method needs a target), with ``--source`` / ``--target`` / ``--target-eval`` taken from the file's own
``data.train`` / ``data.target`` / ``data.target_eval`` — with nothing changed but the seed. Run directories are keyed
by the hash of the resolved config (docs/benchmarks.md rule 5: a run made with other settings is never reused);
finished runs are skipped, a killed one resumes from its last checkpoint, and a run another process of this script is
training right now (it holds a lock on ``.recipes.lock``) is left to it, so two processes can share one list from its two ends
(``--reverse``). When this process has nothing left, it writes the table of every finished run in the list
(``benchmarks/calibration.py``'s, one group per recipe file) to ``benchmarks/results/<tag>.{md,json}``; runs not
finished yet are listed there, not dropped.

    python benchmarks/recipes.py configs/ldam_drw_cpu.yaml configs/baseline_ce_cpu.yaml --seed 0 --tag recipes_calibration
    python benchmarks/recipes.py --reverse configs/ldam_drw_cpu.yaml configs/baseline_ce_cpu.yaml ...   # a second lane

With ``--archive benchmarks/results/cells/<tag>`` each finished run's small files are kept in the repository (result,
sidecar, config, metrics, and each role's ``predictions.npz`` reduced to its logits and labels, which the ECE table
needs) and restored into ``--out`` first, so a list spanning fresh checkouts never retrains a finished recipe and its
table can be rebuilt anywhere:

    python benchmarks/recipes.py configs/*.yaml --seed 0 --tag recipes_calibration --archive benchmarks/results/cells/recipes_calibration

A failed run is reported with its log and counted; the others go on. Set ``OMP_NUM_THREADS`` for the children
(the recipes' budgets are wall- or process-clock as the files say: fewer threads, fewer epochs; each run's epochs
are in the table).
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
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cells import add_archive_argument, keep_finished, restore_archive  # noqa: E402
LOCK = ".recipes.lock"


def recipe_argv(recipe: Path, seed: int) -> list[str]:
    """The CLI command of one recipe as written (without ``--out`` / ``--resume``): ``train``, or ``adapt`` with the
    file's own source / target / target-eval."""
    from fairexpr.config import load_config
    from fairexpr.errors import ConfigError
    from fairexpr.methods.base import get_method

    try:
        cfg = load_config(recipe)
    except ConfigError as e:
        raise SystemExit(f"{recipe}: {e}") from None
    if not get_method(cfg["method"]["name"]).needs_target:
        return ["train", "--config", str(recipe), "--no-progress", f"seed={seed}"]
    data = cfg["data"]
    missing = [k for k in ("train", "target") if not data.get(k)]
    if missing:
        raise SystemExit(f"{recipe}: an adaptation recipe needs data.{missing[0]} (FORMAT:PATH) to run as written")
    argv = ["adapt", "--config", str(recipe), "--source", data["train"], "--target", data["target"]]
    if data.get("target_eval"):
        argv += ["--target-eval", data["target_eval"]]
    return argv + ["--no-progress", f"seed={seed}"]


def run_dir(out: Path, recipe: Path, seed: int) -> Path:
    from _cells import keyed_dir

    return keyed_dir(out, f"{recipe.stem}_s{seed}", recipe_argv(recipe, seed))


def take_lock(run: Path) -> IO[str] | None:
    """An exclusive ``flock`` on ``run/.recipes.lock`` (the open file, to keep open while training), or None when
    another process holds it. The kernel drops the lock when its holder exits, so a killed lane leaves no stale lock."""
    import fcntl

    run.mkdir(parents=True, exist_ok=True)
    fh = open(run / LOCK, "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def train_one(out: Path, recipe: Path, seed: int) -> tuple[Path, str]:
    """Run (or resume) one recipe; returns its directory and ``finished`` / ``skipped (finished)`` /
    ``busy (another process)`` / ``failed (exit N; log)``."""
    run = run_dir(out, recipe, seed)
    if (run / "result.json").is_file():
        return run, "skipped (finished)"
    lock = take_lock(run)
    if lock is None:
        return run, "busy (another process)"
    try:
        if (run / "result.json").is_file():  # finished by the lane that held the lock until now
            return run, "skipped (finished)"
        cmd = [sys.executable, "-m", "fairexpr.cli", *recipe_argv(recipe, seed), "--out", str(run)]
        if (run / "last.json").is_file():
            cmd.append("--resume")
        log = run.parent / f"{run.name}.log"
        print("+", " ".join(cmd), f"> {log}", flush=True)
        with open(log, "a") as fh:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        if proc.returncode != 0 or not (run / "result.json").is_file():
            return run, f"failed (exit {proc.returncode}; {log})"
        return run, "finished"
    finally:
        lock.close()


def label(recipe: Path, seed: int) -> str:
    try:
        rel = recipe.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        rel = str(recipe)
    return f"{rel} (seed {seed}, as written)"


def scores(run: Path) -> str:
    """``role acc / bal`` per evaluated role other than ``val`` (test, target_eval), from ``eval/<role>/metrics.json``:
    a recipe left at chance has a trivially small ECE, so the table shows what the model can do beside it."""
    from calibration import role_order

    out = []
    for f in sorted(run.glob("eval/*/metrics.json"), key=lambda p: role_order(p.parent.name)):
        if f.parent.name == "val":
            continue
        m = json.loads(f.read_text())
        out.append(f"{f.parent.name} {100 * m['accuracy']:.1f} / {100 * m['balanced_accuracy']:.1f}")
    return "; ".join(out) or "–"


def write_table(out: Path, recipes: list[Path], seed: int, results_dir: Path, tag: str, argv: list[str]) -> str:
    """``calibration.py``'s table over the finished runs, plus per run its epochs, best epoch and minutes."""
    from calibration import group_table, markdown

    from fairexpr._io import atomic_write_bytes

    groups: dict[str, list[Path]] = {}
    runs: list[dict[str, Any]] = []
    unfinished = []
    for r in recipes:
        d = run_dir(out, r, seed)
        if not ((d / "result.json").is_file() and (d / "model.json").is_file() and (d / "eval").is_dir()):
            unfinished.append(label(r, seed))
            continue
        groups[label(r, seed)] = [d]
        res = json.loads((d / "result.json").read_text())
        runs.append({"recipe": label(r, seed), "run": str(d.relative_to(ROOT) if d.is_relative_to(ROOT) else d),
                     "epochs run": res.get("epochs_run"), "best epoch": res.get("best_epoch"),
                     "stopped by": res.get("stopped_by"), "accuracy / balanced (%)": scores(d),
                     "train minutes": (round(res["train_seconds"] / 60, 1)
                                       if isinstance(res.get("train_seconds"), (int, float)) else None)})
    rows = group_table(groups) if groups else []
    meta = {"command": "python benchmarks/recipes.py " + " ".join(argv),
            "hardware": f"{platform.machine()}, {os.cpu_count()} logical CPUs, no GPU; OMP_NUM_THREADS="
                        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}",
            "ece": "15 equal-width confidence bins; T fitted on each run's validation split by NLL at the end of training; "
                   "T = 1 is the network's raw output (a cosine head's logits without LDAM's s)",
            "goal": "ECE <= 5% on the test split (issue 14)", "seed": seed, "date": time.strftime("%Y-%m-%d"),
            "not finished": unfinished}
    # two lanes may finish together: each file is replaced whole (temporary file + os.replace), never interleaved
    atomic_write_bytes(results_dir / f"{tag}.json", json.dumps({"meta": meta, "runs": runs, "rows": rows}, indent=2,
                                                               ensure_ascii=False).encode())
    text = (f"## Every recipe once, as written: ECE before / after the end-of-training temperature ({tag})\n\n"
            + (markdown(rows) if rows else "(no finished run yet)\n") + "\n"
            + (markdown(runs) + "\n" if runs else "")
            + "\n".join(f"- {k}: {v}" for k, v in meta.items() if k != "not finished") + "\n"
            + (f"\n**Not finished** ({len(unfinished)}): " + ", ".join(f"`{u}`" for u in unfinished) + "\n"
               if unfinished else ""))
    atomic_write_bytes(results_dir / f"{tag}.md", text.encode())
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="+", type=Path, help="recipe files (configs/*.yaml)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "recipes")
    ap.add_argument("--reverse", action="store_true", help="work through the list from its end (a second lane)")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--tag", default="recipes_calibration")
    ap.add_argument("--dry-run", action="store_true", help="print each recipe's command and run folder, train nothing")
    add_archive_argument(ap)
    a = ap.parse_args(argv)
    if a.dry_run and a.archive is not None:
        ap.error("--archive restores and keeps finished runs; --dry-run trains nothing: pass one of them")
    for r in a.recipes:
        if not r.is_file():
            raise SystemExit(f"{r}: recipe file not found")
    if len(set(map(Path.resolve, a.recipes))) != len(a.recipes):
        raise SystemExit("recipes: a recipe file is listed twice")
    order = list(reversed(a.recipes)) if a.reverse else list(a.recipes)
    if a.dry_run:
        for r in order:
            print(" ".join(recipe_argv(r, a.seed)), "->", run_dir(a.out, r, a.seed))
        return 0
    restore_archive(ap, a.archive, a.out)
    status = {}
    for i, r in enumerate(order, 1):
        print(f"[{i}/{len(order)}] {r}", flush=True)
        d, s = train_one(a.out, r, a.seed)
        status[str(r)] = s
        keep_finished(ap, a.archive, [d], logits=True)  # the ECE table reads each role's logits
        print(f"[{i}/{len(order)}] {r}: {s} ({d.name})", flush=True)
    print(write_table(a.out, a.recipes, a.seed, a.results_dir, a.tag, argv))
    failed = [r for r, s in status.items() if s.startswith("failed")]
    if failed:
        print(f"{len(failed)} recipe(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
