"""HTML report, comparison table and the `fairexpr report` command on fabricated run dirs."""
import base64
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from fairexpr.cli import cli
from fairexpr.data.base import DataError
from fairexpr.evaluation.report import build_report, compare_table, load_runs, table_markdown

from fairexpr.labels import CANONICAL7


def test_compare_table_values_and_best(two_runs):
    df = compare_table(two_runs)
    assert list(df["run"]) == ["baseline", "cucn"]
    assert list(df["model"]) == ["resnet18_cbam"] * 2
    m = json.loads((two_runs[1] / "eval/test/metrics.json").read_text())
    row = df.iloc[1]
    assert row["accuracy"] == pytest.approx(m["accuracy"])
    assert row["balanced_accuracy"] == pytest.approx(m["balanced_accuracy"])
    assert row["gap"] == pytest.approx(m["per_class_accuracy_gap"])
    assert row["ece"] == pytest.approx(m["ece"]) and row["n"] == 140
    md = table_markdown(df)
    # the stronger run wins balanced accuracy: its cell is bold, the other is not
    cells = [line.split("|") for line in md.splitlines()[2:]]
    col = md.splitlines()[0].split("|").index(" balanced_accuracy (%) ")
    assert cells[1][col].strip().startswith("**") and not cells[0][col].strip().startswith("**")
    # max-class accuracy is descriptive (a collapsed model maximises it): never bolded
    col = md.splitlines()[0].split("|").index(" max_class_acc (%) ")
    assert not any(c[col].strip().startswith("**") for c in cells)


def test_build_report_self_contained(two_runs, tmp_path):
    out = tmp_path / "rep"
    html_path = build_report(two_runs, out, title="Ablation", tsne_max_points=100, tsne_max_iter=250)
    html = html_path.read_text()
    assert "<h1>Ablation</h1>" in html
    assert "src='data:image/png;base64," in html and "src='figures" not in html
    imgs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)
    pngs = sorted(p.name for p in out.glob("*.png"))
    for prefix in ("confusion_", "reliability_", "tsne_", "curves_", "imbalance_", "per_class_bars", "per_class_lines"):
        assert any(p.startswith(prefix) for p in pngs), prefix
    assert len(imgs) == len(pngs)
    assert "before / after temperature scaling" in html  # calibrated run draws two panels
    data = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in data["runs"]] == ["baseline", "cucn"]
    assert data["runs"][0]["metrics"]["classes"] == list(CANONICAL7)
    assert data["table"][1]["n"] == 140 and data["warnings"] == []
    assert (out / "report.md").read_text().startswith("# Ablation")


def test_accepts_metrics_dir_directly_and_split_dirs(tmp_path, make_run):
    run = make_run(tmp_path, "r1", skill=0.7, splits=("val", "test"))
    runs = load_runs([run])
    assert sorted(r.split for r in runs) == ["test", "val"]
    direct = load_runs([run / "eval" / "test"])
    assert direct[0].run_dir == run and direct[0].metrics_csv == run / "metrics.csv"
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "metrics.json").write_text((run / "eval/test/metrics.json").read_text())
    r = load_runs([loose])[0]
    assert r.run_dir is None and r.sidecar is None
    build_report([loose], tmp_path / "out")  # no sidecar, curves or predictions: still a report
    assert (tmp_path / "out" / "report.html").is_file()


def test_duplicate_run_names_disambiguated(tmp_path, make_run):
    a = make_run(tmp_path / "exp1", "seed0", skill=0.6, embeddings=False)
    b = make_run(tmp_path / "exp2", "seed0", skill=0.6, embeddings=False)
    assert [r.name for r in load_runs([a, b])] == ["exp1/seed0", "exp2/seed0"]


def test_optional_parts_skipped_are_reported(tmp_path, make_run):
    run = make_run(tmp_path, "r", skill=0.6)
    (run / "metrics.csv").write_text("step,foo\n1,2\n")
    np.savez(run / "eval/test/predictions.npz", y_true=np.zeros(3, int), embeddings=np.zeros((3, 2)))
    out = tmp_path / "o"
    build_report([run], out, tsne_max_iter=250)
    w = json.loads((out / "report.json").read_text())["warnings"]
    assert any("'epoch' column" in x for x in w) and any("n=140" in x for x in w)
    assert "Notes" in (out / "report.html").read_text()


def test_missing_or_bad_metrics_errors(tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty_run.*no evaluation metrics.*eval/<split>/metrics.json"):
        load_runs([empty])
    with pytest.raises(DataError, match="does not exist"):
        load_runs([tmp_path / "nope"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_runs([bad])
    (bad / "metrics.json").write_text(json.dumps({"n": 3, "classes": ["a", "b"]}))
    with pytest.raises(DataError, match=r"lacks \['accuracy'"):
        load_runs([bad])


def test_cli_report(two_runs, tmp_path):
    out = tmp_path / "cli_out"
    res = CliRunner().invoke(cli, ["report", *map(str, two_runs), "--out", str(out), "--title", "T",
                                   "--tsne-max-points", "60", "--tsne-iter", "250", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["report"] == str(out / "report.html") and (out / "report.html").is_file()
    assert [row["run"] for row in info["table"]] == ["baseline", "cucn"]
    assert any(f.startswith("confusion_") for f in info["figures"])
    human = CliRunner().invoke(cli, ["report", str(two_runs[0] / "eval" / "test"), "--out", str(tmp_path / "h"),
                                     "--tsne-max-points", "30", "--tsne-iter", "250"])
    assert human.exit_code == 0 and "| run |" in human.output and "report:" in human.output


def test_cli_report_clear_error(tmp_path):
    empty = tmp_path / "run_without_eval"
    empty.mkdir()
    res = CliRunner().invoke(cli, ["report", str(empty), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "run_without_eval" in res.output and "no evaluation metrics" in res.output
    assert not (tmp_path / "o" / "report.html").exists()


def test_best_only_within_one_dataset_and_split(tmp_path, make_run):
    """A figure on one test set is never 'best' against a figure on another: with one run per (dataset, split)
    nothing is bold; with two on the same split, the better one is."""
    runs = [make_run(tmp_path / "r", "strong", skill=0.9, seed=1, splits=("test", "val")),
            make_run(tmp_path / "r", "weak", skill=0.3, seed=2, splits=("test",))]
    df = compare_table(runs)
    assert sorted(zip(df["run"], df["split"])) == [("strong", "test"), ("strong", "val"), ("weak", "test")]
    md = table_markdown(df)
    col = md.splitlines()[0].split("|").index(" balanced_accuracy (%) ")
    rows = {(c[1].strip(), c[4].strip()): c[col].strip() for c in (line.split("|") for line in md.splitlines()[2:])}
    assert rows[("strong", "test")].startswith("**") and not rows[("weak", "test")].startswith("**")
    assert not rows[("strong", "val")].startswith("**")  # alone on its split: nothing to beat


def test_table_names_datasets_without_absolute_paths(two_runs):
    from fairexpr.evaluation.report import short_dataset

    assert short_dataset("ckplus:/work/shared/data/ckplus/CK+48") == "ckplus:CK+48"
    assert short_dataset("synthetic:fer2013") == "synthetic:fer2013" and short_dataset(None) == ""
    df = compare_table(two_runs)
    assert all(not d.split(":", 1)[1].startswith("/") for d in df["dataset"])
    assert max(len(line) for line in table_markdown(df).splitlines()) < 260  # fits a 1280 px page


def test_no_tsne_and_one_imbalance_chart_per_training_set(two_runs, tmp_path):
    out = tmp_path / "rep"
    build_report(two_runs, out, tsne=False)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert not any(p.startswith("tsne_") for p in pngs)
    # both fabricated runs trained on the same set (same counts, no data section): one chart, naming both users
    assert sum(p.startswith("imbalance_") for p in pngs) == 1
    caps = [f["caption"] for f in json.loads((out / "report.json").read_text())["figures"]["imbalance"]]
    assert len(caps) == 1 and "baseline" in caps[0] and "cucn" in caps[0]
    res = CliRunner().invoke(cli, ["report", *map(str, two_runs), "--out", str(tmp_path / "c"), "--no-tsne"])
    assert res.exit_code == 0, res.output
    assert not list((tmp_path / "c").glob("tsne_*.png"))
    bad = CliRunner().invoke(cli, ["report", str(two_runs[0]), "--out", str(tmp_path / "d"), "--no-tsne",
                                   "--tsne-iter", "300"])
    assert bad.exit_code == 2 and "no effect with --no-tsne" in bad.output


def _capture_figures(monkeypatch):
    from fairexpr.evaluation import plots

    figs = []
    real = plots.save_figure

    def keep(fig, path):
        figs.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    return plots, figs


def test_absent_class_gets_no_bar(tmp_path, monkeypatch):
    plots, figs = _capture_figures(monkeypatch)
    plots.plot_per_class_bars({"a": [0.5, None, 0.7], "b": [0.4, None, 0.9]}, ["x", "y", "z"], tmp_path / "b.png")
    ax = figs[0].axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == [40.0, 50.0, 70.0, 90.0]  # 2 runs x 2 present classes; no 0-height bar for 'y'
    assert any(t.get_text() == "absent" for t in ax.texts)
    assert ax.get_legend() is not None and ax.get_legend().get_bbox_to_anchor().x0 > 0  # legend outside the axes


def test_reliability_diagram_has_tick_labels(tmp_path, monkeypatch):
    from fairexpr.evaluation.calibration import reliability_diagram

    plots, figs = _capture_figures(monkeypatch)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 200)
    rel = reliability_diagram(p, rng.integers(0, 4, 200))
    plots.plot_reliability(rel, tmp_path / "r.png", after=rel)
    fig = figs[0]
    fig.canvas.draw()
    lower = [ax for ax in fig.axes if ax.get_xlabel().startswith("confidence")]
    upper = [ax for ax in fig.axes if ax.get_ylabel() == "accuracy"]
    assert len(lower) == 2 and len(upper) == 2
    for ax in lower:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    for ax in upper:
        assert len(ax.get_yticklabels()) == 6 and all(t.get_text() for t in ax.get_yticklabels())
        assert ax.get_legend() is None  # one figure legend below the panels instead
    assert len(fig.legends) == 1
