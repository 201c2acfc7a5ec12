"""GReFEL ablation tables (Tables 2/3/7 shape, cluster scores) from fabricated `fairexpr train` run directories."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fairexpr.evaluation.grefel_tables import (change_table, claims_table, cluster_table, collapse_table,
                                               collapsed_runs_table, complexity_of, early_warning_table, epochs_table, load_run,
                                               load_runs, loss_table, loss_variant, noise_table, rb_table, rb_variant,
                                               to_markdown)
from fairexpr.evaluation.metrics import _json, evaluate
from fairexpr.models import create_model
from fairexpr.models.grefel import model_complexity

CLASSES = ["anger", "disgust", "happiness"]
Y = np.array([0, 0, 1, 1, 2, 2])
KW = {"backbone": "resnet18", "in_chans": 1}


def write_run(root: Path, name: str, *, seed: int, pred, anchors=True, mhsa=True, la=1.0, lc=1.0, noise=0.0,
              dataset: str = "ferplus", emb=None) -> Path:
    d = root / name
    (d / "eval" / "test").mkdir(parents=True)
    cfg = {"seed": seed, "data": {"train": f"{dataset}:/x", "label_noise": noise, "label_noise_kind": "symmetric"},
           "method": {"name": "grefel", "use_anchors": anchors, "use_mhsa": mhsa, "lambda_cls": 1.0,
                      "lambda_anchor": la, "lambda_center": lc}}
    kwargs = {**KW, "num_anchors": 2, "use_anchors": anchors, "use_mhsa": mhsa, "delta": 1.0}
    (d / "model.json").write_text(json.dumps({"model": {"name": "reliability_balanced", "num_classes": 3, "kwargs": kwargs},
                                              "preprocess": {"input_size": [32, 32], "in_chans": 1}, "config": cfg}))
    m = evaluate(Y, None, CLASSES, y_pred=np.asarray(pred), embeddings=emb)
    (d / "eval" / "test" / "metrics.json").write_text(json.dumps(_json(m)))
    (d / "result.json").write_text(json.dumps({"train_seconds": 12.5, "steps": 7, "epochs_run": 1, "stopped_by": "epochs"}))
    return d


# predictions with accuracies 3/6, 4/6, 5/6, 6/6
P3, P4, P5, P6 = [0, 0, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2]


@pytest.fixture()
def runs(tmp_path):
    torch.set_num_threads(1)
    emb = np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 0.0], [5.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    return [
        write_run(tmp_path, "norb_s0", seed=0, pred=P3, anchors=False, mhsa=False, emb=emb),
        write_run(tmp_path, "norb_s1", seed=1, pred=P5, anchors=False, mhsa=False, emb=emb),
        write_run(tmp_path, "mhsa_s0", seed=0, pred=P4, anchors=False, mhsa=True),
        write_run(tmp_path, "anch_s0", seed=0, pred=P4, anchors=True, mhsa=False),
        write_run(tmp_path, "full_s0", seed=0, pred=P6, emb=emb),
        write_run(tmp_path, "full_s1", seed=1, pred=P5, emb=emb),
        write_run(tmp_path, "lcls_s0", seed=0, pred=P3, la=0.0, lc=0.0),
        write_run(tmp_path, "la_s0", seed=0, pred=P4, la=1.0, lc=0.0),
        write_run(tmp_path, "full_n20_s0", seed=0, pred=P4, noise=0.2),
        write_run(tmp_path, "norb_n20_s0", seed=0, pred=P3, anchors=False, mhsa=False, noise=0.2),
        write_run(tmp_path, "fer_full_s0", seed=0, pred=P6, dataset="fer2013"),
    ]


def test_variant_names():
    assert [rb_variant(a, m) for a, m in ((False, False), (True, False), (False, True), (True, True))] == \
        ["without RB", "anchors only", "MHSA only", "anchors + MHSA"]
    assert loss_variant(True, 0.0, 0.0) == "L_cls" and loss_variant(True, 1.0, 0.0) == "L_cls + L_a"
    assert loss_variant(True, 0.5, 2.0) == "L_cls + L_a + L_c" and loss_variant(True, 0.0, 1.0) == "L_cls + L_c"
    assert loss_variant(False, 1.0, 1.0) == "L_cls"  # no anchors: the anchor terms do not exist


def test_load_run_record_and_complexity(runs):
    r = load_run(runs[4])
    assert (r["dataset"], r["seed"], r["rb"], r["loss"], r["label_noise"]) == ("ferplus", 0, "anchors + MHSA",
                                                                                "L_cls + L_a + L_c", 0.0)
    assert r["accuracy"] == pytest.approx(1.0) and r["train_seconds"] == 12.5 and r["steps"] == 7
    assert r["davies_bouldin"] is not None and r["calinski_harabasz"] > 0
    # params / MACs: the rebuilt model counted at the sidecar's input size, equal to a direct count
    ref = create_model("reliability_balanced", num_classes=3, **KW, num_anchors=2, use_anchors=True, use_mhsa=True)
    c = model_complexity(ref, input_size=32, in_chans=1)
    assert r["params"] == c["params"] and r["macs"] == pytest.approx(c["macs"])
    # the RB head adds parameters over "without RB" (anchors 3x2x512 + the MHSA branch)
    assert load_run(runs[0])["params"] < r["params"]
    assert load_run(runs[3], complexity=False).get("params") is None


def test_rb_table_table2(runs):
    t = rb_table(load_runs(runs), as_text=False)
    fp = t[t["dataset"] == "ferplus"]
    assert list(fp["variant"]) == ["without RB", "anchors only", "MHSA only", "anchors + MHSA"]
    assert list(fp["seeds"]) == [2, 1, 1, 2]  # noisy and reduced-loss runs are excluded
    assert fp.iloc[0]["accuracy"] == pytest.approx((3 / 6 + 5 / 6) / 2)
    assert fp.iloc[3]["accuracy"] == pytest.approx((1 + 5 / 6) / 2)
    assert fp.iloc[0]["params (M)"] < fp.iloc[3]["params (M)"] and fp.iloc[0]["GFLOPs"] > 0
    assert list(t["dataset"]) == ["fer2013"] + ["ferplus"] * 4
    text = rb_table(load_runs(runs))
    cell = text[(text["dataset"] == "ferplus") & (text["variant"] == "without RB")].iloc[0]["accuracy"]
    assert cell == "66.67 ± 16.67"  # mean of 50 and 83.33 %, population std 16.67 points
    md = to_markdown(text)
    assert md.splitlines()[0] == "| dataset | variant | seeds | accuracy | balanced | macro-F1 | params (M) | GFLOPs |"


def test_loss_table_table3(runs):
    t = loss_table(load_runs(runs, complexity=False), as_text=False)
    fp = t[t["dataset"] == "ferplus"]
    assert list(fp["loss"]) == ["L_cls", "L_cls + L_a", "L_cls + L_a + L_c"]
    assert list(fp["accuracy"]) == pytest.approx([0.5, 4 / 6, (1 + 5 / 6) / 2])
    # balanced accuracy beside it: Y has two faces per class, so P3 -> recalls 1, 1/2, 0 -> 1/2; P4 -> 1, 1, 0 -> 2/3;
    # P6 and P5 -> 1 and (1 + 1 + 1/2) / 3 = 5/6
    assert list(t.columns) == ["dataset", "loss", "seeds", "accuracy", "balanced", "macro-F1"]
    assert list(fp["balanced"]) == pytest.approx([0.5, 2 / 3, (1 + 5 / 6) / 2])
    # Y is balanced, so those equal the accuracies: set distinct values to show the column reads balanced accuracy,
    # and an older run without it shows "–" instead of failing
    recs = load_runs(runs, complexity=False)
    for r in recs:
        if r["dataset"] == "ferplus" and r["loss"] == "L_cls" and r["rb"] == "anchors + MHSA":
            r["balanced_accuracy"] = 0.25
        if r["dataset"] == "fer2013":
            r["balanced_accuracy"] = None
    t2 = loss_table(recs, as_text=False)
    assert t2[t2["dataset"] == "ferplus"].iloc[0]["balanced"] == pytest.approx(0.25)
    assert loss_table(recs).set_index(["dataset", "loss"]).loc[("fer2013", "L_cls + L_a + L_c"), "balanced"] == "–"


def test_noise_table_table7(runs):
    t = noise_table(load_runs(runs, complexity=False), as_text=False)
    fp = t[t["dataset"] == "ferplus"].set_index("model")
    assert list(t.columns) == ["dataset", "model", "seeds", "0%", "20%"]
    assert fp.loc["without RB", "0%"] == pytest.approx((0.5 + 5 / 6) / 2) and fp.loc["without RB", "20%"] == pytest.approx(0.5)
    assert fp.loc["with RB", "20%"] == pytest.approx(4 / 6) and fp.loc["with RB", "seeds"] == 2
    fer = t[t["dataset"] == "fer2013"].iloc[0]
    assert fer["model"] == "with RB" and math.isnan(fer["20%"])
    assert noise_table(load_runs(runs, complexity=False)).set_index(["dataset", "model"]).loc[("fer2013", "with RB"), "20%"] == "–"
    # the same table of balanced accuracy (grefel.py writes it beside accuracy and macro-F1): without RB at 20 % predicts
    # P3 = [0, 0, 1, 0, 0, 0] -> recalls 2/2, 1/2, 0/2 -> 1/2; with RB P4 -> 2/2, 2/2, 0/2 -> 2/3
    b = noise_table(load_runs(runs, complexity=False), metric="balanced_accuracy", as_text=False)
    b = b[b["dataset"] == "ferplus"].set_index("model")
    assert b.loc["without RB", "20%"] == pytest.approx(0.5) and b.loc["with RB", "20%"] == pytest.approx(2 / 3)
    recs = load_runs(runs, complexity=False)
    for r in recs:
        if r["label_noise"] == 0.2 and r["rb"] == "without RB":
            r["balanced_accuracy"] = 0.3  # distinct from its accuracy (0.5): the table reads the metric it is given
    b = noise_table(recs, metric="balanced_accuracy", as_text=False).set_index(["dataset", "model"])
    assert b.loc[("ferplus", "without RB"), "20%"] == pytest.approx(0.3)


def test_collapse_table_counts_and_fisher_by_hand(runs):
    t = collapse_table(load_runs(runs, complexity=False), 0.6).set_index(["dataset", "label noise"])
    # ferplus, clean: without RB s0 P3 = 50.0 % (collapsed), s1 P5 = 83.3 %; with RB (full loss only) s0 P6, s1 P5.
    # One event, both runs' margins 2: P(it is A's) = C(2,1) C(2,0) / C(4,1) = 1/2
    clean = t.loc[("ferplus", "0%")]
    assert clean["without RB collapsed"] == "1 of 2" and clean["with RB collapsed"] == "0 of 2"
    assert clean["without RB by seed"] == "s0: 50.0*, s1: 83.3" and clean["with RB by seed"] == "s0: 100.0, s1: 83.3"
    assert clean["Fisher p (without RB collapses more)"] == "0.500" and clean["collapse: below"] == "60%"
    noisy = t.loc[("ferplus", "20%")]  # P3 vs P4: 1 of 1 vs 0 of 1 -> C(1,1) C(1,0) / C(2,1) = 1/2
    assert (noisy["without RB collapsed"], noisy["with RB collapsed"]) == ("1 of 1", "0 of 1")
    assert noisy["with RB by seed"] == "s0: 66.7"
    fer = t.loc[("fer2013", "0%")]  # one head only: nothing to test
    assert fer["without RB collapsed"] == "–" and fer["Fisher p (without RB collapses more)"] == "–"
    assert len(t) == 3  # the MHSA-only, anchors-only and partial-loss runs are not Table 7's heads
    low = collapse_table(load_runs(runs, complexity=False), 0.4).set_index(["dataset", "label noise"])
    assert low["without RB collapsed"].to_dict() == {("fer2013", "0%"): "–", ("ferplus", "0%"): "0 of 2",
                                                     ("ferplus", "20%"): "0 of 1"}
    assert low.loc[("ferplus", "0%"), "Fisher p (without RB collapses more)"] == "1.000"
    for bad in (0.0, 1.0, 50):
        with pytest.raises(ValueError, match="fraction in"):
            collapse_table(load_runs(runs, complexity=False), bad)



def test_collapse_table_describes_rb_on_the_seeds_where_neither_head_collapsed(runs):
    recs = load_runs(runs, complexity=False)
    acc, bal = ("RB − without RB, accuracy, neither collapsed (described)",
                "RB − without RB, balanced, neither collapsed (described)")
    t = collapse_table(recs, 0.6).set_index(["dataset", "label noise"])
    # ferplus clean at 60 %: without RB s0 (50 %) collapsed, so seed 1 alone: P5 vs P5, 83.3 − 83.3 = 0
    assert t.loc[("ferplus", "0%"), acc] == "+0.00 (n=1, no interval)"
    assert t.loc[("ferplus", "0%"), bal] == "+0.00 (n=1, no interval)"  # 3 balanced classes: balanced = accuracy here
    assert t.loc[("ferplus", "20%"), acc] == "–"  # its only MLP run collapsed: no seed left
    assert t.loc[("fer2013", "0%"), acc] == "–"  # one head only
    # at 40 % nothing collapses: both seeds, d = (100 − 50, 83.3 − 83.3) = (50, 0) points; mean 25, sd 50/√2,
    # half-width t(0.975, 1) · sd / √2 = 12.70620 · 25 = 317.655
    low = collapse_table(recs, 0.4).set_index(["dataset", "label noise"])
    assert low.loc[("ferplus", "0%"), acc] == "+25.00 [−292.66, +342.66] (n=2)".replace("−", "-")


def test_collapsed_runs_table_lists_each_collapsed_run_with_its_recall_per_class(runs):
    t = collapsed_runs_table(load_runs(runs, complexity=False), 0.6)
    # the two MLP runs with P3 (ferplus clean s0, 20 % noise s0): y = [0, 0, 1, 1, 2, 2], P3 = [0, 0, 1, 0, 0, 0]
    # -> anger 2/2, disgust 1/2, happiness 0/2
    assert t.columns.tolist() == ["dataset", "label noise", "head", "seed", "accuracy", "balanced", "anger recall",
                                  "disgust recall", "happiness recall"]
    assert t.values.tolist() == [["ferplus", "0%", "without RB", 0, "50.0", "50.0", "100.0", "50.0", "0.0"],
                                 ["ferplus", "20%", "without RB", 0, "50.0", "50.0", "100.0", "50.0", "0.0"]]
    assert len(collapsed_runs_table(load_runs(runs, complexity=False), 0.4)) == 0
    with pytest.raises(ValueError, match="fraction in"):
        collapsed_runs_table(load_runs(runs, complexity=False), 60)


def test_cluster_table_hand_computed(runs):
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

    emb = np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 0.0], [5.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    # class means (0, .5), (5, .5), (10, .5); within scatter s_i = 0.5, centroid distances 5 and 10:
    # DB = mean_i max_j (s_i + s_j) / d_ij = 1/5
    assert davies_bouldin_score(emb, Y) == pytest.approx(0.2)
    t = cluster_table(load_runs(runs, complexity=False), as_text=False)
    row = t[(t["dataset"] == "ferplus") & (t["variant"] == "anchors + MHSA")].iloc[0]
    assert row["Davies-Bouldin ↓"] == pytest.approx(0.2)
    assert row["Calinski-Harabasz ↑"] == pytest.approx(calinski_harabasz_score(emb, Y))
    no_emb = t[(t["dataset"] == "ferplus") & (t["variant"] == "MHSA only")].iloc[0]
    assert math.isnan(no_emb["Davies-Bouldin ↓"])  # runs without embeddings have no cluster scores


def test_bad_run_dirs_raise(tmp_path, runs):
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_run(tmp_path / "nope")
    side = json.loads((runs[0] / "model.json").read_text())
    side["config"]["method"]["name"] = "supervised"
    (runs[0] / "model.json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match="expected 'grefel'"):
        load_run(runs[0])
    with pytest.raises(ValueError, match="preprocess"):
        complexity_of({"model": {"name": "resnet18", "num_classes": 3}})


def test_claims_table_paired_by_hand(runs):
    t = claims_table(load_runs(runs, complexity=False))
    assert set(t["dataset"]) == {"ferplus"}  # fer2013 has the full head only: no pair, no claim listed
    rb = t[(t["claim"] == "RB > without RB") & (t["metric"] == "accuracy")].iloc[0]
    # without RB 3/6 and 5/6, RB 6/6 and 5/6: differences +50 and 0 points -> mean 25, sd 35.36,
    # t_{0.975,1} = 12.706 -> half width 12.706 * 35.36 / sqrt(2) = 317.66
    assert (rb["A"], rb["B"]) == ("66.67", "91.67")
    assert rb["B − A [95 % CI] (points)"] == "+25.00 [-292.66, +342.66] (n=2)" and rb["verdict"] == "not shown"
    losses = t[t["claim"] == "L_cls + L_a + L_c best"]
    assert list(losses[losses["metric"] == "accuracy"]["A → B"]) == ["L_cls → L_cls + L_a + L_c",
                                                                     "L_cls + L_a → L_cls + L_a + L_c"]
    one = losses[losses["metric"] == "accuracy"].iloc[0]  # only seed 0 has L_cls: 3/6 -> 6/6
    assert one["B − A [95 % CI] (points)"] == "+50.00 (n=1, no interval)" and one["verdict"] == "one seed: no interval"
    noise = t[(t["claim"] == "RB more robust to 20 % label noise") & (t["metric"] == "accuracy")].iloc[0]
    assert noise["B − A [95 % CI] (points)"] == "+16.67 (n=1, no interval)"
    assert set(t["metric"]) == {"accuracy", "balanced accuracy", "macro-F1"}


def test_claims_verdicts_follow_the_interval(runs, tmp_path):
    recs = load_runs(runs, complexity=False)
    extra = [write_run(tmp_path / "x", f"n{i}", seed=s, pred=p, anchors=False, mhsa=False, dataset="raf")
             for i, (s, p) in enumerate(((0, P3), (1, P4), (2, P3)))]
    extra += [write_run(tmp_path / "x", f"f{i}", seed=s, pred=p, dataset="raf")
              for i, (s, p) in enumerate(((0, P5), (1, P6), (2, P5)))]
    t = claims_table(recs + load_runs(extra, complexity=False))
    raf = t[(t["dataset"] == "raf") & (t["metric"] == "accuracy")].iloc[0]
    assert raf["B − A [95 % CI] (points)"] == "+33.33 [+33.33, +33.33] (n=3)" and raf["verdict"] == "**reproduced**"
    flipped = [dict(r, rb="anchors + MHSA" if r["rb"] == "without RB" else "without RB",
                    use_anchors=r["rb"] == "without RB", use_mhsa=r["rb"] == "without RB", loss="L_cls + L_a + L_c")
               for r in load_runs(extra, complexity=False)]
    f = claims_table(flipped)
    assert f[f["metric"] == "accuracy"].iloc[0]["verdict"] == "opposite shown"


def test_epochs_table(runs):
    (runs[0] / "result.json").write_text(json.dumps({"epochs_run": 8, "best_epoch": 6}))
    t = epochs_table(load_runs(runs, complexity=False))
    norb = t[(t["dataset"] == "ferplus") & (t["variant"] == "without RB") & (t["label noise"] == "0%")].iloc[0]
    assert norb["epochs (best)"] == "s0: 8 (6), s1: 1 (–)"


def test_epochs_table_states_rule2_with_the_last_epochs_lead(runs):
    """Seed 0 keeps its last epoch (55.4 % after a best earlier 55.2 %: +0.20 points), seed 1 turned at epoch 2."""
    hist0 = [{"epoch": e, "val_balanced_accuracy": v} for e, v in ((1, 0.50), (2, 0.552), (3, 0.548), (4, 0.554))]
    hist1 = [{"epoch": e, "val_balanced_accuracy": v} for e, v in ((1, 0.50), (2, 0.56), (3, 0.55), (4, 0.55))]
    (runs[0] / "result.json").write_text(json.dumps({"epochs_run": 4, "best_epoch": 4, "history": hist0}))
    (runs[1] / "result.json").write_text(json.dumps({"epochs_run": 4, "best_epoch": 2, "history": hist1}))
    t = epochs_table(load_runs(runs, complexity=False))
    norb = t[(t["dataset"] == "ferplus") & (t["variant"] == "without RB") & (t["label noise"] == "0%")].iloc[0]
    assert norb["epochs (best)"] == "s0: 4 (4, last +0.20), s1: 4 (2)"
    # neither 4-epoch tail rises beyond its noise (seed 0's slope +1.58, interval -2.14 to +5.30 with t(0.975, 2))
    assert norb["rule 2"] == "not met (1 of 2; last epoch ahead by ≤ 0.20 points); tail still rising on 0 of 2"
    (runs[0] / "result.json").write_text(json.dumps({"epochs_run": 4, "best_epoch": 2, "history": hist1}))
    norb = epochs_table(load_runs(runs, complexity=False))
    assert norb[(norb["dataset"] == "ferplus") & (norb["variant"] == "without RB")].iloc[0]["rule 2"] == "met"


def test_claims_rb_head_against_mlp_head_with_the_same_loss(runs, tmp_path):
    """The RB head trained with L_cls alone against the MLP head (whose loss is L_cls too), paired by seed."""
    extra = [write_run(tmp_path / "y", f"n{s}", seed=s, pred=p, anchors=False, mhsa=False, dataset="raf")
             for s, p in ((0, P3), (1, P4), (2, P3))]
    extra += [write_run(tmp_path / "y", f"c{s}", seed=s, pred=p, la=0.0, lc=0.0, dataset="raf")
              for s, p in ((0, P4), (1, P5), (2, P5))]
    extra += [write_run(tmp_path / "y", f"f{s}", seed=s, pred=P3, dataset="raf") for s in (0, 1, 2)]  # full loss
    t = claims_table(load_runs(extra, complexity=False))
    row = t[(t["claim"] == "RB head > MLP head, both L_cls") & (t["metric"] == "accuracy")].iloc[0]
    # differences +16.67, +16.67, +33.33 points: mean 22.22, sd 9.623, t_{0.975,2} = 4.3027 -> half width 23.90
    assert row["A → B"] == "without RB → anchors + MHSA (L_cls)"
    assert (row["A"], row["B"]) == ("55.56", "77.78")
    assert row["B − A [95 % CI] (points)"] == "+22.22 [-1.68, +46.13] (n=3)" and row["verdict"] == "not shown"
    full = t[(t["claim"] == "RB > without RB") & (t["metric"] == "accuracy")].iloc[0]
    assert full["B"] == "50.00"  # the full-loss row is a different claim: the L_cls cells do not leak into it
    # the shared fixture has the L_cls cell on seed 0 only: one seed, no interval
    one = claims_table(load_runs(runs, complexity=False))
    one = one[(one["claim"] == "RB head > MLP head, both L_cls") & (one["metric"] == "accuracy")].iloc[0]
    assert one["B − A [95 % CI] (points)"] == "+0.00 (n=1, no interval)"


def test_change_table_pairs_each_cell_by_seed_by_hand(runs, tmp_path):
    base = load_runs(runs, complexity=False)
    assert {r["anchor_init"] for r in base if r["use_anchors"]} == {"normal"} and base[0]["anchor_init"] is None
    changed = [dict(r, accuracy=r["accuracy"] + d, run=r["run"] + "_b") for r, d in
               ((base[4], -0.10), (base[5], +0.02))]  # the full head, clean, seeds 0 and 1; 6/6 and 5/6 before
    t = change_table(base, changed, "model.kwargs.anchor_init=data")
    assert set(t["variant"]) == {"anchors + MHSA"} and set(t["loss"]) == {"L_cls + L_a + L_c"}
    acc = t[t["metric"] == "accuracy"].iloc[0]
    # differences -10 and +2 points: mean -4, sd 8.485, t_{0.975,1} = 12.706 -> half width 76.24
    assert (acc["A"], acc["B"], acc["seeds"]) == ("91.67", "87.67", "0 1")
    assert acc["B − A [95 % CI] (points)"] == "-4.00 [-80.24, +72.24] (n=2)" and acc["verdict"] == "no difference shown"
    bal = t[t["metric"] == "balanced accuracy"].iloc[0]
    assert bal["B − A [95 % CI] (points)"] == "+0.00 [+0.00, +0.00] (n=2)"  # unchanged: sd 0
    assert change_table(base, [], "x").empty


def test_early_warning_table_counts_and_exact_intervals_by_hand(runs):
    recs = load_runs(runs, complexity=False)
    # holdout balanced accuracy at epoch 3 (flag below 34 %) against collapse (test accuracy below 60 %)
    curves = {"norb_s0": [[1, 0.1], [3, 0.20]],          # flagged, collapsed (50 %)      -> flagged, collapsed
              "norb_s1": [[3, 0.40]],                    # not flagged, trained (83.3 %)  -> not flagged, trained
              "full_s0": [[3, 0.30]],                    # flagged, trained (100 %)       -> flagged, trained
              "full_s1": [[1, 0.1], [2, 0.2]],           # no epoch 3                     -> counted, not dropped
              "norb_n20_s0": [[3, 0.50]],                # not flagged, collapsed (50 %)  -> not flagged, collapsed
              "full_n20_s0": [[3, 0.45]]}                # not flagged, trained (66.7 %)
    for r in recs:
        r["val_curve"] = curves.get(Path(r["run"]).name, [])
    t = early_warning_table(recs, 0.6, 3, 0.34).set_index(["dataset", "label noise", "head"])
    assert set(t.index) == {("ferplus", "0%", "without RB"), ("ferplus", "0%", "with RB"), ("ferplus", "0%", "both heads"),
                            ("ferplus", "20%", "without RB"), ("ferplus", "20%", "with RB"),
                            ("ferplus", "20%", "both heads"), ("fer2013", "0%", "with RB")}
    counts = ["flagged, collapsed", "flagged, trained", "not flagged, collapsed", "not flagged, trained", "no such epoch"]
    assert t.loc[("ferplus", "0%", "without RB"), counts].tolist() == [1, 0, 0, 1, 0]
    assert t.loc[("ferplus", "0%", "with RB"), counts].tolist() == [0, 1, 0, 0, 1]
    assert t.loc[("ferplus", "0%", "both heads"), counts].tolist() == [1, 1, 0, 1, 1]
    assert t.loc[("fer2013", "0%", "with RB"), counts].tolist() == [0, 0, 0, 0, 1]
    # 1/1: [0.025^1, 1] = [2.5, 100]; 0/1: [0, 97.5]; 1/2: [1 - √0.975, √0.975] = [1.3, 98.7]
    assert t.loc[("ferplus", "0%", "without RB"), "sensitivity [95 % CI]"] == "1/1 (100 % [2.5, 100.0])"
    assert t.loc[("ferplus", "0%", "with RB"), "sensitivity [95 % CI]"] == "–"  # nothing collapsed: no sensitivity
    assert t.loc[("ferplus", "0%", "with RB"), "specificity [95 % CI]"] == "0/1 (0 % [0.0, 97.5])"
    assert t.loc[("ferplus", "0%", "both heads"), "specificity [95 % CI]"] == "1/2 (50 % [1.3, 98.7])"
    assert t.loc[("ferplus", "20%", "both heads"), "sensitivity [95 % CI]"] == "0/1 (0 % [0.0, 97.5])"
    assert t.loc[("ferplus", "0%", "without RB"), "flag"] == "epoch 3 holdout balanced < 34%"
    for bad in ((0.6, 0, 0.34), (0.6, 3, 34), (60, 3, 0.34), (0.6, 2.5, 0.34)):
        with pytest.raises(ValueError):
            early_warning_table(recs, *bad)


def test_load_run_keeps_the_holdout_curve(tmp_path):
    d = write_run(tmp_path, "norb_curve", seed=0, pred=P3, anchors=False, mhsa=False)
    (d / "result.json").write_text(json.dumps({"history": [{"epoch": 1, "val_balanced_accuracy": 0.25},
                                                           {"epoch": 2, "val_balanced_accuracy": 0.5}]}))
    assert load_run(d, complexity=False)["val_curve"] == [[1, 0.25], [2, 0.5]]
