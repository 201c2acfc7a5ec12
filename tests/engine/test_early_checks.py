"""Method option names and required data roles are checked before any dataset is decoded."""
from __future__ import annotations

import pytest

from fairexpr.config import ConfigError, load_config
from fairexpr.engine import fit


@pytest.fixture()
def no_decoding(monkeypatch):
    import fairexpr.engine.loop as loop

    def boom(*a, **k):
        raise AssertionError("a dataset was decoded before the config error")

    monkeypatch.setattr(loop, "build_splits", boom)


def test_unknown_method_option_before_decoding(tmp_path, no_decoding):
    cfg = load_config(None, extra={"method": {"name": "mcd", "bogus": 1}, "data": {"train": "synthetic:fer2013",
                                                                                  "target": "synthetic:fer2013"}})
    with pytest.raises(ConfigError, match="method.bogus: unknown option for method 'mcd'"):
        fit(cfg, tmp_path / "r")


@pytest.mark.parametrize("method, role", [("dann", "data.target"), ("face2exp", "data.unlabelled")])
def test_missing_data_role_before_decoding(method, role, tmp_path, no_decoding):
    cfg = load_config(None, extra={"method": {"name": method}, "data": {"train": "synthetic:fer2013"}})
    with pytest.raises(ConfigError, match=f"set {role}"):
        fit(cfg, tmp_path / "r")
