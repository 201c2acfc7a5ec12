"""`fairexpr demo` end to end on a shrunken budget: the shipped model on the public-domain photo, the shipped model
as it is on synthetic faces, and CE vs LDAM-DRW fine-tuned from its backbone — CE learns (well above chance), and
the report exists."""
import json

from click.testing import CliRunner


def test_demo_runs_and_writes_report(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "cache"))
    from fairexpr.demo import SHIPPED, run_demo

    res = run_demo(tmp_path / "demo", minutes=1.0, progress=False, total=840, epochs=3)
    assert set(res["runs"]) == {SHIPPED, "ce", "ldam_drw"}
    for m in res["runs"].values():
        assert 0.0 <= m["balanced_accuracy"] <= 1.0
    # the CE baseline trains: from the shipped backbone it is far above chance (1/7) with the same budget as LDAM
    assert res["runs"]["ce"]["balanced_accuracy"] >= 0.3, res["runs"]
    report = tmp_path / "demo" / "report" / "report.html"
    assert report.exists() and report.stat().st_size > 10_000  # images are embedded
    # LDAM-DRW switched its re-weighting on in the last epoch; both runs started from the shipped model's backbone
    hist = json.loads((tmp_path / "demo" / "ldam_drw" / "result.json").read_text())["history"]
    assert [h["loss_reweighted"] for h in hist] == [0, 0, 1]
    cfg = (tmp_path / "demo" / "ce" / "config.yaml").read_text()
    assert "pretrained: fer2013-mobilenetv2-ldam" in cfg  # one network: the default model is an ensemble
    ph = res["photo"]
    if "skipped" not in ph:
        assert sum(f["status"] == "ok" for f in ph["faces"]) >= 3
        shown = json.loads(open(ph["faces_json"]).read())
        assert shown["faces"] and shown["model"]["tta"] == "crops"  # what `fairexpr predict photo.jpg` runs
    # a second call reuses the finished runs instead of failing on the existing run directories
    again = run_demo(tmp_path / "demo", minutes=1.0, progress=False, total=840, epochs=3)
    assert again["runs"] == res["runs"]


def test_demo_cli_help():
    from fairexpr.cli import cli

    r = CliRunner().invoke(cli, ["demo", "--help"])
    assert r.exit_code == 0 and "LDAM-DRW" in r.output
