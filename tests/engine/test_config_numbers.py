"""Numbers in config files and key=value overrides are read as YAML 1.2 numbers: ``1e-5`` is a float, not the string
'1e-5' that PyYAML's YAML 1.1 resolver makes of it (found when ``optim.lr=1e-5`` was refused as "must be > 0")."""
import pytest

from fairexpr.config import load_config, parse_override, yaml_load
from fairexpr.errors import ConfigError


@pytest.mark.parametrize("raw, expected", [("1e-5", 1e-5), ("3E+2", 300.0), ("-2e3", -2000.0), ("1.5e-3", 0.0015),
                                           ("0.1", 0.1), (".5", 0.5), ("12", 12), ("1_000", 1000)])
def test_override_numbers(raw, expected):
    _, value = parse_override(f"optim.lr={raw}")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("raw", ["1e", "e5", "abc", "1e-5x", "v1.0"])
def test_override_strings_stay_strings(raw):
    assert parse_override(f"name={raw}")[1] == raw


def test_config_file_and_override_lr(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim: {name: adam, lr: 3e-4}\n")
    assert load_config(f)["optim"]["lr"] == pytest.approx(3e-4)
    assert load_config(f, ["optim.lr=1e-5"])["optim"]["lr"] == pytest.approx(1e-5)


def test_non_positive_lr_still_refused(tmp_path):
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr=-1e-5"])


def test_yaml_load_lists():
    assert yaml_load("[1e-3, 2, x]") == [1e-3, 2, "x"]
