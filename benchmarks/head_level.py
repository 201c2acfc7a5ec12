"""Head-level claims (docs/benchmarks.md, protocol item 4): losses and heads trained on cached backbone embeddings
for a full schedule with 10 seeds, paired per-seed differences with 95 % t intervals.

Backbones (each embeds every set once; cached under ``--runs`` by a hash of its embed command):

* ``default`` — the shipped default model (MobileNetV2, FER2013-trained; ``forward_features``, 1280-d): its
  features already encode FER2013's labels, so only claims about the *head on top* are asked of it;
* ``dlib`` — dlib's face-recognition ResNet-29 (stage 3, 64 px grey, 256-d) as pretrained, never trained on
  expressions: the backbone for the label-noise claim (clean-label training of the backbone would leak).

Claims (A = baseline head recipe, B = the method's; ``fairexpr.engine.head_level``):

* DI > CE — ``ldam_drw`` vs ``ce`` trained on FER2013 train, on PrivateTest and on the cross-dataset targets;
* DIFC > DI on the target — ``difc`` vs ``ldam_drw``, margins from the head's predictions on the unlabelled
  target (CK+48, FER+ test), reported on that target and on its top-3 confusing classes;
* class weights shrink the max-min class gap — ``weighted_ce`` vs ``ce`` (gap: lower is better);
* mixing helps under label noise — ``rul_weighted`` vs ``weighted_ce`` at 20 % and 30 % symmetric noise (dlib);
* GReFEL (dlib): RB > without RB — ``rb`` vs ``rb_none``; L_cls + L_a + L_c best — ``rb`` vs ``rb_cls`` and vs
  ``rb_cls_a``; RB more robust to label noise — ``rb`` vs ``rb_none`` at 10, 20 and 30 % symmetric noise.

    python benchmarks/head_level.py --data $FAIREXPR_DATA --seeds 10 --epochs 30
    python benchmarks/head_level.py --only rb_vs_norb rb_loss_vs_cls rb_loss_vs_cls_a rb_noise10 rb_noise20 rb_noise30 \
        --results benchmarks/results/head_level_grefel

Results: benchmarks/results/head_level.{json,md}.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fairexpr._io import atomic_write_text  # noqa: E402

BACKBONES = {
    # the packaged MobileNetV2 model (the default model until it became an ensemble; results are recorded under "default")
    "default": ["--checkpoint", "fer2013-mobilenetv2-ldam"],
    "dlib": ["--model", "dlib_resnet29", "--pretrained", "dlib", "--model-option", "feature_stage=3", "--image-size", "64",
             "--channels", "1"],
}


def sets(data: Path) -> dict[str, list[str]]:
    return {"fer2013_train": ["--data", f"fer2013:{data / 'fer2013'}", "--split", "train"],
            "fer2013_private": ["--data", f"fer2013:{data / 'fer2013'}", "--split", "private_test"],
            "ferplus_test": ["--data", f"ferplus:{data / 'ferplus'}", "--split", "test", "--option", "num_classes=7"],
            "ckplus48": ["--data", f"ckplus:{data / 'ckplus' / 'CK+48'}"]}


def embed_all(backbone: str, data: Path, runs: Path) -> dict:
    from fairexpr.engine.embed import load_embeddings

    out = {}
    for name, args in sets(data).items():
        cmd = ["embed", *BACKBONES[backbone], *args, "--no-progress"]
        key = hashlib.sha256(json.dumps(cmd).encode()).hexdigest()[:12]
        path = runs / f"{backbone}_{name}_{key}.npz"
        if not path.is_file():
            print(f"embedding {name} with {backbone} ...", flush=True)
            subprocess.run([sys.executable, "-m", "fairexpr.cli", *cmd, "--out", str(path)], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL)
        out[name] = load_embeddings(path)
    return out


CLAIMS = [
    # (claim id, text, backbone, A, B, noise, sets reported, metric, higher is better)
    ("di_vs_ce", "DI (LDAM-DRW, cosine head) > CE", "default", "ce", "ldam_drw", 0.0,
     ["fer2013_private", "ferplus_test", "ckplus48"], "balanced_accuracy", True),
    ("difc_vs_di_ckplus", "DIFC > DI on the target (margins from CK+48 predictions)", "default", "ldam_drw", "difc", 0.0,
     ["ckplus48"], "balanced_accuracy", True),
    ("difc_vs_di_ferplus", "DIFC > DI on the target (margins from FER+ test predictions)", "default", "ldam_drw", "difc",
     0.0, ["ferplus_test"], "balanced_accuracy", True),
    ("weights_gap", "class weights shrink the max-min class gap", "default", "ce", "weighted_ce", 0.0,
     ["fer2013_private", "ferplus_test"], "max_min_gap", False),
    ("weights_gap_dlib", "class weights shrink the max-min class gap (face backbone)", "dlib", "ce", "weighted_ce", 0.0,
     ["fer2013_private", "ferplus_test"], "max_min_gap", False),
    ("mixing_noise20", "mixing helps under 20 % symmetric label noise", "dlib", "weighted_ce", "rul_weighted", 0.2,
     ["fer2013_private", "ferplus_test"], "accuracy", True),
    ("mixing_noise30", "mixing helps under 30 % symmetric label noise", "dlib", "weighted_ce", "rul_weighted", 0.3,
     ["fer2013_private", "ferplus_test"], "accuracy", True),
    ("rb_vs_norb", "GReFEL: RB > without RB (reliability head, L_cls + L_a + L_c)", "dlib", "rb_none", "rb", 0.0,
     ["fer2013_private", "ferplus_test"], "accuracy", True),
    ("rb_loss_vs_cls", "GReFEL: L_cls + L_a + L_c > L_cls (full head)", "dlib", "rb_cls", "rb", 0.0,
     ["fer2013_private", "ferplus_test"], "accuracy", True),
    ("rb_loss_vs_cls_a", "GReFEL: L_cls + L_a + L_c > L_cls + L_a (full head)", "dlib", "rb_cls_a", "rb", 0.0,
     ["fer2013_private", "ferplus_test"], "accuracy", True),
    *[(f"rb_noise{int(r * 100)}", f"GReFEL: RB more robust to {int(r * 100)} % symmetric label noise", "dlib", "rb_none",
       "rb", r, ["fer2013_private", "ferplus_test"], "accuracy", True) for r in (0.1, 0.2, 0.3)],
]


def main() -> None:
    from fairexpr.engine.head_level import HeadConfig, run_cell
    from fairexpr.evaluation.stats import format_difference, paired_difference
    from compare_fer import hardware

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FAIREXPR_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--only", nargs="*", help="claim ids")
    ap.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs" / "embeddings")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "head_level")
    a = ap.parse_args()
    if a.seeds < 3:
        ap.error("--seeds: at least 3 (the protocol's minimum for a paired interval)")
    claims = [c for c in CLAIMS if not a.only or c[0] in a.only]
    if a.only and len(claims) != len(a.only):
        ap.error(f"--only: unknown claim ids {sorted(set(a.only) - {c[0] for c in CLAIMS})}; known: {[c[0] for c in CLAIMS]}")
    a.runs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    embs = {b: embed_all(b, a.data, a.runs) for b in sorted({c[2] for c in claims})}
    cache: dict[tuple, dict] = {}
    out_claims = []
    for cid, text, bb, ra, rb, noise, reported, metric, higher in claims:
        e = embs[bb]
        target = e[reported[0]] if rb == "difc" else None
        per = {}
        for recipe in (ra, rb):
            for s in range(a.seeds):
                key = (bb, recipe, noise, s, reported[0] if recipe == "difc" else None)
                if key not in cache:
                    cache[key] = run_cell(e["fer2013_train"], {n: e[n] for n in ("fer2013_private", "ferplus_test", "ckplus48")},
                                          HeadConfig(recipe=recipe, epochs=a.epochs, noise=noise, seed=s), target=target)
                per.setdefault(recipe, {})[s] = cache[key]
        rows = {}
        for n in reported:
            va = {s: per[ra][s]["metrics"][n][metric] for s in range(a.seeds)}
            vb = {s: per[rb][s]["metrics"][n][metric] for s in range(a.seeds)}
            d = paired_difference(va, vb)
            good = "b > a" if higher else "b < a"
            rows[n] = {"a_mean": sum(va.values()) / len(va), "b_mean": sum(vb.values()) / len(vb), "diff": d,
                       "reproduced": d["verdict"] == good,
                       "accuracy": {r: sum(per[r][s]["metrics"][n]["accuracy"] for s in range(a.seeds)) / a.seeds for r in (ra, rb)},
                       "balanced_accuracy": {r: sum(per[r][s]["metrics"][n]["balanced_accuracy"] for s in range(a.seeds)) / a.seeds
                                             for r in (ra, rb)}}
            if rb == "difc":
                orders = [per[rb][s]["log"]["difc_orders"][-1][:3] for s in range(a.seeds)]
                top3 = max(set(map(tuple, orders)), key=orders.count)
                cls = list(e[n].classes)
                ta = {s: sum(per[ra][s]["metrics"][n]["per_class_accuracy"][c] or 0 for c in top3) / 3 for s in range(a.seeds)}
                tb = {s: sum(per[rb][s]["metrics"][n]["per_class_accuracy"][c] or 0 for c in top3) / 3 for s in range(a.seeds)}
                rows[n]["top3_confusing"] = {"classes": list(top3), "orders_agreeing": orders.count(list(top3)),
                                             "diff": paired_difference(ta, tb), "classes_all": cls}
        out_claims.append({"id": cid, "claim": text, "backbone": bb, "a": ra, "b": rb, "noise": noise, "metric": metric,
                           "higher_is_better": higher, "rows": rows})
        print(f"{cid}: " + "; ".join(f"{n} {format_difference(r['diff'])} -> {'reproduced' if r['reproduced'] else 'not shown'}"
                                     for n, r in rows.items()), flush=True)
    rep = {"protocol": "head-level (docs/benchmarks.md item 4): backbone embeddings computed once, heads trained on them; "
                       "complements the end-to-end cells, never replaces them",
           "epochs": a.epochs, "seeds": list(range(a.seeds)), "hardware": hardware(), "torch": __import__("torch").__version__,
           "date": time.strftime("%Y-%m-%d"), "minutes": (time.time() - t0) / 60,
           "command": "python benchmarks/head_level.py " + " ".join(sys.argv[1:]),
           "embeddings": {b: {n: {"n": len(v), "dim": v.dim, "source": v.meta["source"], "exclusions": v.meta["exclusions"]}
                              for n, v in d.items()} for b, d in embs.items()},
           "claims": out_claims}
    a.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.results.with_suffix(".json"), json.dumps(rep, indent=2, default=float))
    atomic_write_text(a.results.with_suffix(".md"), markdown(rep))
    print(markdown(rep))


NAMES = {"fer2013_private": "FER2013 PrivateTest", "ferplus_test": "FER+ test", "ckplus48": "CK+48 (7 classes)"}


def verdict(row: dict, higher: bool) -> str:
    """**reproduced** (interval excludes 0 in the claimed direction), "opposite shown" (excludes it the other way),
    "not shown"."""
    from fairexpr.evaluation.stats import claim_verdict

    return claim_verdict(row["diff"], "b > a" if higher else "b < a")


def markdown(rep: dict) -> str:
    from fairexpr.evaluation.stats import format_difference

    hw = rep["hardware"]
    md = ["# Head-level claims (fixed backbone embeddings; labelled as such)", "",
          f"Heads trained on FER2013 train embeddings ({rep['epochs']} epochs, cosine SGD, seeds {rep['seeds'][0]}..{rep['seeds'][-1]}), "
          f"evaluated on each set; B − A paired by seed with the 95 % t interval; *reproduced* = the interval excludes 0 "
          f"in the claimed direction. {hw['cpu']}, {hw['logical_cpus']} CPUs, torch {rep['torch']}, {rep['minutes']:.1f} min. "
          f"`{rep['command']}`", "",
          "| claim | backbone | A → B | set | metric | A | B | B − A [95 % CI] (points) | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for c in rep["claims"]:
        for n, r in c["rows"].items():
            md.append(f"| {c['claim']} | {c['backbone']} | {c['a']} → {c['b']}{' @ %d %% noise' % round(100 * c['noise']) if c['noise'] else ''} "
                      f"| {NAMES.get(n, n)} | {c['metric'].replace('_', ' ')}{'' if c['higher_is_better'] else ' (lower better)'} "
                      f"| {100 * r['a_mean']:.2f} | {100 * r['b_mean']:.2f} | {format_difference(r['diff'])} "
                      f"| {verdict(r, c['higher_is_better'])} |")
            if "top3_confusing" in r:
                t = r["top3_confusing"]
                md.append(f"| ↳ top-3 confusing classes ({', '.join(t['classes'])}; {t['orders_agreeing']}/{len(rep['seeds'])} seeds) "
                          f"| | | | mean class acc | | | {format_difference(t['diff'])} | {t['diff']['verdict'].replace('b', 'B').replace('a', 'A')} |")
    md += ["", "Accuracy / balanced accuracy of each head recipe (mean over seeds, %):", "",
           "| backbone | recipe | noise | set | accuracy | balanced |", "|---|---|---|---|---|---|"]
    seen = set()
    for c in rep["claims"]:
        for n, r in c["rows"].items():
            for rec in (c["a"], c["b"]):
                k = (c["backbone"], rec, c["noise"], n)
                if k in seen:
                    continue
                seen.add(k)
                md.append(f"| {c['backbone']} | {rec} | {round(100 * c['noise'])} % | {NAMES.get(n, n)} | "
                          f"{100 * r['accuracy'][rec]:.2f} | {100 * r['balanced_accuracy'][rec]:.2f} |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
