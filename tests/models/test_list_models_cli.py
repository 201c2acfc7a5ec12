import json

from click.testing import CliRunner

from fairexpr.cli.list_models import command, format_table, model_table
from fairexpr.models import create_model, list_models


def test_list_models_json_covers_registry():
    res = CliRunner().invoke(command, ["--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert set(rows) == set(list_models())
    assert rows["resnet18"]["input_size"] == [224, 224] and rows["mobilefacenet"]["input_size"] == [112, 112]
    assert rows["ensemble"]["params"] is None  # built from trained members: sizes are its members'
    text = CliRunner().invoke(command, []).output
    assert any(line.startswith("ensemble ") and " - " in line for line in text.splitlines())


def test_param_counts_and_table():
    rows = model_table(names=["resnet18", "mobilenet_v2"])
    by = {r["name"]: r for r in rows}
    assert by["resnet18"]["params"] == sum(p.numel() for p in create_model("resnet18").parameters())
    assert by["mobilenet_v2"]["num_features"] == 1280
    text = format_table(rows)
    assert "resnet18" in text and "11.18M" in text and "224x224" in text
