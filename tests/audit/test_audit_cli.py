"""`fairexpr audit` and `fairexpr list-datasets` through click's CliRunner."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fairexpr.cli import cli


def test_audit_cli_writes_json_manifest_chart(messy, tmp_path):
    root, p = messy
    out, man, chart = tmp_path / "a.json", tmp_path / "clean.csv", tmp_path / "c.png"
    res = CliRunner().invoke(cli, ["audit", f"folder:{root}", "--on-bad-file", "skip", "--json-out", str(out),
                                   "--clean-manifest", str(man), "--chart", str(chart), "--no-progress"])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["per_split"]["train"]["n"] == 28 and d["per_split"]["test"]["n"] == 17
    assert d["leakage"]["n"] == 2 and d["unreadable"]["n"] == 1
    assert d["outputs"]["clean_manifest"]["written"] == 43 and d["outputs"]["chart"] == str(chart)
    assert chart.stat().st_size > 1000 and man.read_text().startswith("path,label,subject,split")
    # the human summary: per-class counts with ratios, leakage and the corrupt file
    assert "happiness" in res.output and "5 (2.5)" in res.output
    assert "also in train (leakage)" in res.output and "corrupt.png" in res.output


def test_audit_cli_json_stdout_and_options(messy):
    root, _ = messy
    res = CliRunner().invoke(cli, ["audit", f"folder:{root}", "--on-bad-file", "skip", "--json",
                                   "--split", "train", "--near-blank-std", "0.01", "--no-progress"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["splits"] == ["train"] and d["near_blank"]["threshold_std"] == 0.01 and d["near_blank"]["n"] == 1


def test_audit_cli_errors_exit_2(messy, tmp_path):
    root, _ = messy
    r = CliRunner()
    res = r.invoke(cli, ["audit", f"folder:{root}", "--no-progress"])  # default --on-bad-file error
    assert res.exit_code == 2 and "corrupt.png" in res.output
    res = r.invoke(cli, ["audit", f"folder:{root}", "--drop", "bogus"])
    assert res.exit_code == 2 and "--drop" in res.output
    res = r.invoke(cli, ["audit", "nonsense", "--no-progress"])
    assert res.exit_code == 2 and "FORMAT:PATH" in res.output
    res = r.invoke(cli, ["audit", "synthetic:balanced?n=14&size=16", "--clean-manifest", str(tmp_path / "m.csv"),
                         "--no-progress"])
    assert res.exit_code == 2 and "inline pixels" in res.output


def test_list_datasets():
    r = CliRunner()
    res = r.invoke(cli, ["list-datasets", "--json"])
    assert res.exit_code == 0, res.output
    rows = {row["format"]: row for row in json.loads(res.output)}
    assert {"fer2013", "folder", "csv", "synthetic"} <= set(rows)
    assert rows["synthetic"]["needs_path"] is False and rows["fer2013"]["needs_path"] is True
    assert all(row["description"] for row in rows.values())
    res = r.invoke(cli, ["list-datasets"])
    assert res.exit_code == 0 and "synthetic" in res.output and "fer2013" in res.output


@pytest.mark.realdata
def test_audit_cli_fer2013(real_data, tmp_path):
    """Issue 2: `fairexpr audit fer2013:$FAIREXPR_DATA/fer2013 --json out.json` gives the official counts and
    finds the train/test duplicates; also writes a chart and a cleaned manifest."""
    from fairexpr.labels import CANONICAL7

    root = real_data / "fer2013"
    if not root.is_dir():
        pytest.skip(f"{root} is missing")
    out, man = tmp_path / "out.json", tmp_path / "m.csv"
    res = CliRunner().invoke(cli, ["audit", f"fer2013:{root}", "--json-out", str(out), "--no-progress",
                                   "--chart", str(tmp_path / "c.png"), "--clean-manifest", str(man)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["splits"] == ["train", "public_test", "private_test"]
    assert [d["per_split"][s]["n"] for s in d["splits"]] == [28709, 3589, 3589]
    assert [d["per_split"]["train"]["counts"][c] for c in CANONICAL7] == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert d["per_split"]["train"]["max_imbalance_ratio"] == pytest.approx(7215 / 436, abs=1e-3)
    # FER2013 is known to hold train/test duplicates, some with conflicting labels, and near-blank images
    leak = d["leakage"]["by_split"]
    assert leak["public_test"]["n"] > 0 and leak["private_test"]["n"] > 0
    assert d["duplicates"]["n_conflicting_groups"] > 0 and d["near_blank"]["n"] > 0
    assert d["unreadable"]["n"] == 0 and d["image_sizes"] == {"48x48": 35887}
    assert d["outputs"]["clean_manifest"]["written"] == 35887 - d["leakage"]["n"]
    assert len(man.read_text().splitlines()) == 1 + 35887 - d["leakage"]["n"]
