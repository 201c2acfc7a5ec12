"""`fairexpr demo` end to end on a shrunken budget: both models train and the comparison report exists."""
import json

from click.testing import CliRunner


def test_demo_runs_and_writes_report(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "cache"))
    from fairexpr.demo import run_demo

    res = run_demo(tmp_path / "demo", minutes=0.5, progress=False, total=280, epochs=2)
    assert set(res["runs"]) == {"ce", "ldam_drw"}
    for m in res["runs"].values():
        assert 0.0 <= m["balanced_accuracy"] <= 1.0
    report = tmp_path / "demo" / "report" / "report.html"
    assert report.exists() and report.stat().st_size > 10_000  # images are embedded
    # LDAM-DRW switched its re-weighting on in the last epoch
    hist = json.loads((tmp_path / "demo" / "ldam_drw" / "result.json").read_text())["history"]
    assert [h["loss_reweighted"] for h in hist] == [0, 1]
    # a second call reuses the finished runs instead of failing on the existing run directories
    again = run_demo(tmp_path / "demo", minutes=0.5, progress=False, total=280, epochs=2)
    assert again["runs"] == res["runs"]


def test_demo_cli_help():
    from fairexpr.cli import cli

    r = CliRunner().invoke(cli, ["demo", "--help"])
    assert r.exit_code == 0 and "LDAM-DRW" in r.output
