"""Issue-14 benchmark: would an ensemble of trained models beat each of them, and by how much, on the same faces?

Each member (a run folder, a checkpoint, or a packaged model's name: ``fer`` = the packaged MobileNetV2, ``default`` =
the default model, itself the packaged ensemble) is evaluated on each test set with its own
preprocessing and its own stored temperature (calibrated probabilities; ``--tta hflip`` averages each face and its
mirror); the ensemble is the weighted mean of those probabilities (``--weights``, equal by default; give them from a
selection split, never from a test set). Reported per set: accuracy, balanced accuracy, macro-F1 and ECE of every
member and of the ensemble, and the ensemble minus each member **paired by image** with a 95 % percentile-bootstrap
interval (``--boot`` resamples of the test images, seeded): one pair of trained models, so the interval covers the
choice of test faces, not the training seed.

    python benchmarks/ensemble.py --member mobilenet=fer --member dlib=benchmarks/runs/default_model_dlib \\
        --standard --data $FAIREXPR_DATA --tta hflip --tag ensemble_default_dlib
    # any other set: --set NAME FORMAT:PATH SPLIT [KEY=VALUE ...]   (SPLIT "-" = the whole dataset)

``--standard`` = FER2013 PublicTest (the selection split), PrivateTest, PrivateTest minus the images duplicated in
train (``fairexpr audit --clean-manifest``, written into ``--out``), FER+ test (majority, 7 classes) and CK+48: the
sets of the default model's card. Members must share their class list (one clear error otherwise).

``--subsets`` (or ``--subsets all``) also scores the equal-weight ensembles of every subset containing the first member
(of every subset), ranked on the first set; ``--max-train-minutes M`` ranks only those whose members' training took at
most M minutes in all (issue 14's budget) and names the winner ("selected" in the JSON):

    python benchmarks/ensemble.py --member a=RUN_A --member b=RUN_B --member c=RUN_C --standard --subsets all \\
        --max-train-minutes 150 --tta crops --tag selection
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


class EnsembleError(SystemExit):
    """One clear line (exit status 2) for a bad command line or members that cannot be combined."""

    def __init__(self, msg: str) -> None:
        super().__init__(f"ensemble.py: {msg}")
        self.code = 2


def parse_member(s: str) -> tuple[str, str]:
    name, sep, path = s.partition("=")
    if not sep or not name or not path:
        raise EnsembleError(f"--member {s!r}: expected NAME=CHECKPOINT (a run folder, a checkpoint file or a packaged model's name)")
    return name, path


def parse_set(v: list[str]) -> dict[str, Any]:
    if len(v) < 3:
        raise EnsembleError(f"--set {' '.join(v)}: expected NAME FORMAT:PATH SPLIT [KEY=VALUE ...]")
    opts: dict[str, Any] = {}
    for kv in v[3:]:
        k, sep, val = kv.partition("=")
        if not sep or not k:
            raise EnsembleError(f"--set {v[0]}: option {kv!r} must look like key=value")
        from fairexpr.config import yaml_load

        opts[k] = yaml_load(val)
    return {"key": v[0], "name": v[0], "spec": v[1], "split": None if v[2] == "-" else v[2], "options": opts}


def standard_sets(data: Path, out: Path) -> list[dict[str, Any]]:
    fer = data / "fer2013"
    if not fer.is_dir():
        raise EnsembleError(f"--standard: {fer} not found (give --data, the folder holding fer2013/, ferplus/, ckplus/)")
    clean = out / "fer2013_clean.csv"
    if not clean.exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "fairexpr.cli", "audit", f"fer2013:{fer}", "--json-out",
                        str(out / "fer2013_audit.json"), "--clean-manifest", str(clean), "--no-progress"], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return [
        {"key": "fer2013_public", "name": "FER2013 PublicTest (selection split)", "spec": f"fer2013:{fer}",
         "split": "public_test", "options": {}},
        {"key": "fer2013_private", "name": "FER2013 PrivateTest", "spec": f"fer2013:{fer}", "split": "private_test",
         "options": {}},
        {"key": "fer2013_private_dedup", "name": "FER2013 PrivateTest minus train duplicates", "spec": f"csv:{clean}",
         "split": "private_test", "options": {}},
        {"key": "ferplus_test", "name": "FER+ test (majority, 7 classes)", "spec": f"ferplus:{data / 'ferplus'}",
         "split": "test", "options": {"num_classes": 7}},
        {"key": "ckplus48", "name": "CK+48 (contempt dropped; no neutral)", "spec": f"ckplus:{data / 'ckplus' / 'CK+48'}",
         "split": None, "options": {}},
    ]


def combine(probs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Weighted mean of the members' probabilities (weights normalised to sum 1)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return sum(wi * p.astype(np.float64) for wi, p in zip(w, probs))


def _acc_bal(y: np.ndarray, pred: np.ndarray, k: int) -> tuple[float, float]:
    from fairexpr.evaluation.metrics import accuracy, balanced_accuracy

    return accuracy(y, pred), balanced_accuracy(y, pred, k)


def paired_bootstrap(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, k: int, boot: int = 1000,
                     seed: int = 0) -> dict[str, dict[str, float]]:
    """B − A in accuracy and balanced accuracy on the same images, with the 2.5/97.5 % percentiles of ``boot``
    resamples of the images (the same resample for both sides)."""
    rng = np.random.default_rng(seed)
    a, b = _acc_bal(y, pred_a, k), _acc_bal(y, pred_b, k)
    d = np.empty((boot, 2))
    for i in range(boot):
        idx = rng.integers(0, len(y), len(y))
        aa, bb = _acc_bal(y[idx], pred_a[idx], k), _acc_bal(y[idx], pred_b[idx], k)
        d[i] = (bb[0] - aa[0], bb[1] - aa[1])
    lo, hi = np.percentile(d, [2.5, 97.5], axis=0)
    return {m: {"diff": b[j] - a[j], "lo": float(lo[j]), "hi": float(hi[j])}
            for j, m in enumerate(("accuracy", "balanced_accuracy"))}


def fmt_diff(r: dict[str, float]) -> str:
    return f"{100 * r['diff']:+.2f} [{100 * r['lo']:+.2f}, {100 * r['hi']:+.2f}]"


def member_predictions(name: str, ckpt: str, ts: dict[str, Any], out: Path, tta: str) -> dict[str, Any]:
    from fairexpr.engine.evaluate import evaluate_checkpoint

    d = out / name / ts["key"]
    evaluate_checkpoint(ckpt, ts["spec"], ts["split"], options=ts["options"], tta=tta, progress=False, out_dir=d)
    z = np.load(d / "predictions.npz")
    return {"y": z["y_true"], "probs": z["probs"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--member", action="append", default=[], metavar="NAME=CHECKPOINT", help="two or more")
    ap.add_argument("--weights", nargs="+", type=float, default=None, help="one per member (default: equal)")
    ap.add_argument("--set", action="append", nargs="+", default=[], metavar="ARG",
                    help="NAME FORMAT:PATH SPLIT [KEY=VALUE ...] (SPLIT '-' = the whole dataset)")
    ap.add_argument("--standard", action="store_true", help="the default model card's sets from --data")
    ap.add_argument("--data", default=os.environ.get("FAIREXPR_DATA"))
    from fairexpr.evaluation.tta import TTA_MODES

    ap.add_argument("--tta", choices=TTA_MODES, default="hflip", help="none | hflip | crops (fairexpr.evaluation.tta)")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of the test images")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "ensemble"), help="member predictions")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--tag", default="ensemble")
    ap.add_argument("--subsets", nargs="?", const="first", choices=("first", "all"), default=None,
                    help="also score equal-weight ensembles of the members on each set, ranked on the FIRST set by "
                         "accuracy + balanced accuracy (a selection split, never a test set): 'first' (the default) "
                         "every subset that contains the first member, 'all' every non-empty subset; "
                         "<tag>_subsets.md/.json")
    ap.add_argument("--max-train-minutes", type=float, default=None, metavar="M",
                    help="with --subsets: rank only the subsets whose members' training took at most M minutes in all "
                         "(each member's result.json next to its checkpoint, or a packaged model's recorded training "
                         "time); the others are listed, marked over budget")
    a = ap.parse_args(argv)
    members = [parse_member(m) for m in a.member]
    if len(members) < 2:
        raise EnsembleError("give at least two --member NAME=CHECKPOINT")
    if len({n for n, _ in members}) != len(members):
        raise EnsembleError(f"--member names must differ, got {[n for n, _ in members]}")
    weights = a.weights or [1.0] * len(members)
    if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise EnsembleError(f"--weights: one non-negative weight per member ({len(members)}), not all 0; got {a.weights}")
    if a.boot < 100:
        raise EnsembleError(f"--boot must be >= 100, got {a.boot}")
    if a.max_train_minutes is not None and (a.subsets is None or not a.max_train_minutes > 0):
        raise EnsembleError("--max-train-minutes needs --subsets and a positive number of minutes, got "
                            f"{a.max_train_minutes} {'with' if a.subsets else 'without'} --subsets")
    from fairexpr.checkpoint import read_json, resolve_checkpoint
    from fairexpr.cli.common import UserError, resolve_checkpoint_arg
    from fairexpr.errors import FairexprError
    from fairexpr.evaluation.metrics import evaluate

    ckpts, sides = {}, {}
    for name, path in members:
        try:
            ckpts[name] = resolve_checkpoint_arg(path)
            sides[name] = read_json(resolve_checkpoint(ckpts[name], "model")[1])
        except (UserError, FairexprError) as e:
            raise EnsembleError(f"--member {name}: {getattr(e, 'message', e)}") from None
    minutes = {n: member_train_minutes(ckpts[n], sides[n]) for n, _ in members}
    if a.max_train_minutes is not None:
        unknown = [n for n, m in minutes.items() if m is None]
        if unknown:
            raise EnsembleError(f"--max-train-minutes: no training time recorded for member(s) {unknown} (expected "
                                "result.json beside a run's checkpoint or a packaged model's zoo.train.train_minutes)")
    classes = {n: tuple(s["classes"]) for n, s in sides.items()}
    first = members[0][0]
    for n, c in classes.items():
        if c != classes[first]:
            raise EnsembleError(f"--member {n}: classes {list(c)} differ from {first}'s {list(classes[first])}; "
                                "an ensemble averages probabilities of the same classes")
    cls = list(classes[first])
    out = Path(a.out)
    sets = [parse_set(s) for s in a.set]
    if a.standard:
        if not a.data:
            raise EnsembleError("--standard needs --data (or $FAIREXPR_DATA)")
        sets = standard_sets(Path(a.data), out) + sets
    if not sets:
        raise EnsembleError("no test set: give --standard and/or --set NAME FORMAT:PATH SPLIT")

    results: dict[str, Any] = {}
    t0 = time.time()
    for ts in sets:
        print(f"[ensemble] {ts['name']} ...", flush=True)
        try:
            preds = {n: member_predictions(n, ckpts[n], ts, out, a.tta) for n, _ in members}
        except FairexprError as e:
            raise EnsembleError(f"{ts['name']}: {e}") from None
        y = preds[first]["y"]
        for n, p in preds.items():
            if not np.array_equal(p["y"], y):
                raise EnsembleError(f"{ts['name']}: member {n} saw other labels than {first} (different data?)")
        probs = {n: p["probs"] for n, p in preds.items()}
        probs["ensemble"] = combine([probs[n] for n, _ in members], weights)
        rows = {}
        for n, p in probs.items():
            m = evaluate(y, p, cls)
            rows[n] = {k: m[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "ece")}
            rows[n]["per_class_accuracy"] = m["per_class_accuracy"]
        ens_pred = probs["ensemble"].argmax(1)
        diffs = {n: paired_bootstrap(y, probs[n].argmax(1), ens_pred, len(cls), a.boot) for n, _ in members}
        results[ts["key"]] = {"name": ts["name"], "spec": ts["spec"], "split": ts["split"], "rows": rows,
                              "ensemble_minus_member": diffs}
        if a.subsets:
            results[ts["key"]]["subsets"] = subset_scores(y, probs, [n for n, _ in members], len(cls),
                                                          with_first=a.subsets == "first")
        e = rows["ensemble"]
        print(f"  ensemble acc {100 * e['accuracy']:.2f} bal {100 * e['balanced_accuracy']:.2f}  "
              + "  ".join(f"{n} {100 * rows[n]['accuracy']:.2f}/{100 * rows[n]['balanced_accuracy']:.2f}"
                          for n, _ in members), flush=True)
    import torch

    def shown(c: str) -> str:  # a path inside the repository is shown relative to it
        p = Path(c).resolve()
        return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else c

    meta = {"members": {n: {"checkpoint": shown(ckpts[n]), "model": sides[n]["model"]["name"],
                            "temperature": sides[n].get("temperature", 1.0)} for n, _ in members},
            "weights": dict(zip([n for n, _ in members], weights)), "tta": a.tta, "bootstrap_resamples": a.boot,
            "train_minutes": minutes, "subsets": a.subsets, "max_train_minutes": a.max_train_minutes,
            "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
            "command": "python benchmarks/ensemble.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": time.strftime("%Y-%m-%d"), "minutes": round((time.time() - t0) / 60, 1)}
    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    from fairexpr.checkpoint import atomic_write_bytes, atomic_write_json

    if a.subsets:
        meta["selected"] = select_subset(results, minutes, a.max_train_minutes)
    atomic_write_json(res / f"{a.tag}.json", {"meta": meta, "sets": results})
    atomic_write_bytes(res / f"{a.tag}.md", markdown(meta, results, [n for n, _ in members]).encode())
    print((res / f"{a.tag}.md").read_text())
    if a.subsets:
        atomic_write_bytes(res / f"{a.tag}_subsets.md", subsets_markdown(meta, results).encode())
        print((res / f"{a.tag}_subsets.md").read_text())
    return 0


def member_train_minutes(ckpt: str, side: dict[str, Any]) -> float | None:
    """Minutes a member's training took: a packaged model's recorded ``zoo.train.train_minutes``, else the
    ``train_seconds`` of the ``result.json`` beside the checkpoint (a run folder or a file in one); None if neither."""
    from fairexpr.checkpoint import read_json

    zoo = (side.get("zoo") or {}).get("train") or {}
    if zoo.get("train_minutes") is not None:
        return float(zoo["train_minutes"])
    p = Path(ckpt)
    r = (p if p.is_dir() else p.parent) / "result.json"
    if r.is_file():
        sec = read_json(r).get("train_seconds")
        return None if sec is None else float(sec) / 60
    return None


def subset_scores(y: np.ndarray, probs: dict[str, np.ndarray], names: list[str], k: int,
                  with_first: bool = True) -> list[dict[str, Any]]:
    """Accuracy and balanced accuracy of the equal-weight mean of every subset of ``names`` that contains the first
    (alone included; ``with_first=False``: every non-empty subset), in a fixed order (by size, then member order)."""
    from itertools import combinations

    subs = ([[names[0], *extra] for size in range(len(names)) for extra in combinations(names[1:], size)]
            if with_first else [list(c) for size in range(1, len(names) + 1) for c in combinations(names, size)])
    out = []
    for sub in subs:
        acc, bal = _acc_bal(y, combine([probs[n] for n in sub], [1.0] * len(sub)).argmax(1), k)
        out.append({"members": sub, "accuracy": acc, "balanced_accuracy": bal})
    return out


def _subset_minutes(members: list[str], minutes: dict[str, float | None]) -> float | None:
    m = [minutes.get(n) for n in members]
    return None if any(v is None for v in m) else float(sum(m))


def subset_order(results: dict[str, Any], minutes: dict[str, float | None],
                 budget: float | None) -> tuple[list[int], list[int]]:
    """Indices of the subsets ranked on the first set by accuracy + balanced accuracy (ties: fewer members, then the
    fixed order), and those left unranked because their training minutes exceed ``budget``."""
    first = results[next(iter(results))]["subsets"]
    over = [i for i, s in enumerate(first)
            if budget is not None and _subset_minutes(s["members"], minutes) > budget]
    ranked = sorted((i for i in range(len(first)) if i not in over),
                    key=lambda i: (-(first[i]["accuracy"] + first[i]["balanced_accuracy"]), len(first[i]["members"]), i))
    return ranked, over


def select_subset(results: dict[str, Any], minutes: dict[str, float | None], budget: float | None) -> dict[str, Any] | None:
    """The first-ranked subset (see subset_order), with its selection-split scores and training minutes."""
    ranked, _ = subset_order(results, minutes, budget)
    if not ranked:
        return None
    s = results[next(iter(results))]["subsets"][ranked[0]]
    return {"members": s["members"], "accuracy": s["accuracy"], "balanced_accuracy": s["balanced_accuracy"],
            "train_minutes": _subset_minutes(s["members"], minutes)}


def subsets_markdown(meta: dict[str, Any], results: dict[str, Any]) -> str:
    keys = list(results)
    first = results[keys[0]]["subsets"]
    minutes, budget = meta.get("train_minutes", {}), meta.get("max_train_minutes")
    ranked, over = subset_order(results, minutes, budget)
    kind = "containing the first member" if meta.get("subsets", "first") == "first" else "of the members"
    rule = (f" Only subsets whose members trained for at most {budget:g} minutes in all are ranked; {len(over)} over "
            "that budget are listed below the ranking, unranked." if budget is not None else "")
    lines = [f"## Equal-weight ensembles of every subset {kind} ({meta['date']}, TTA {meta['tta']})", "",
             f"Ranked on **{results[keys[0]]['name']}** by accuracy + balanced accuracy (the selection split: choose "
             f"there, report the others once; ties: fewer members first).{rule} Accuracy / balanced accuracy in %.", "",
             "| rank | members | training min | " + " | ".join(results[k]["name"] for k in keys) + " |",
             "|---:|---|---:|" + "---|" * len(keys)]
    for r, i in [*((str(r), i) for r, i in enumerate(ranked, 1)), *(("over budget", i) for i in over)]:
        cells = [f"{100 * results[k]['subsets'][i]['accuracy']:.2f} / {100 * results[k]['subsets'][i]['balanced_accuracy']:.2f}"
                 for k in keys]
        m = _subset_minutes(first[i]["members"], minutes)
        lines.append(f"| {r} | {' + '.join(first[i]['members'])} | {'–' if m is None else f'{m:.1f}'} | "
                     + " | ".join(cells) + " |")
    sel = meta.get("selected")
    if sel:
        lines += ["", f"Selected: **{' + '.join(sel['members'])}** ({100 * sel['accuracy']:.2f} / "
                      f"{100 * sel['balanced_accuracy']:.2f} on {results[keys[0]]['name']}"
                      + ("" if sel["train_minutes"] is None else f", {sel['train_minutes']:.1f} training minutes") + ")."]
    elif not ranked:
        lines += ["", f"Selected: **none** — every subset is over the {budget:g}-minute budget."]
    lines += ["", f"- command: `{meta['command']}`", ""]
    return "\n".join(lines)


def markdown(meta: dict[str, Any], results: dict[str, Any], names: list[str]) -> str:
    w = ", ".join(f"{n} {v:g}" for n, v in meta["weights"].items())
    lines = [f"## Ensemble of {', '.join(names)} ({meta['date']})", "",
             f"Mean of the members' calibrated probabilities (each with its own temperature), weights {w}, "
             f"TTA {meta['tta']}. Accuracy / balanced accuracy / macro-F1 / ECE in %. Ensemble − member: paired by "
             f"image, 95 % percentile bootstrap over {meta['bootstrap_resamples']} resamples of the test images (one "
             "trained model per member: the interval covers the choice of faces, not the training seed).", "",
             "| set | n | " + " | ".join(names) + " | ensemble | " + " | ".join(f"ensemble − {n}" for n in names) + " |",
             "|---|---:|" + "---|" * (2 * len(names) + 1)]
    for r in results.values():
        rows = r["rows"]
        cell = lambda m: (f"{100 * m['accuracy']:.2f} / {100 * m['balanced_accuracy']:.2f} / "  # noqa: E731
                          f"{100 * m['macro_f1']:.2f} / {100 * m['ece']:.1f}")
        diffs = [f"{fmt_diff(r['ensemble_minus_member'][n]['accuracy'])} / "
                 f"{fmt_diff(r['ensemble_minus_member'][n]['balanced_accuracy'])}" for n in names]
        lines.append(f"| {r['name']} | {rows['ensemble']['n']} | " + " | ".join(cell(rows[n]) for n in names)
                     + f" | **{cell(rows['ensemble'])}** | " + " | ".join(diffs) + " |")
    lines += ["", *(f"- {n}: `{m['checkpoint']}` ({m['model']}, T = {float(m['temperature']):.4g})"
                    for n, m in meta["members"].items()),
              f"- hardware: {meta['hardware']}", f"- command: `{meta['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
