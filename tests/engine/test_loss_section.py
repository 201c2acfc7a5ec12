"""The loss: section is read by the methods that use it (supervised, Meta-Face2Exp — including LDAM-DRW's epoch
hook) and is a config error for the others, instead of being silently ignored."""
from __future__ import annotations

import pytest

from fairexpr.config import ConfigError, _merge_free, load_config
from fairexpr.engine import fit

from .test_precision_format import method_config


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path / "unused"))


@pytest.mark.parametrize("method", ["cucn", "grefel", "mcd", "dann", "safn"])
def test_methods_without_a_loss_section_refuse_one(method):
    cfg = method_config(method)
    with pytest.raises(ConfigError, match=rf"'loss' is not used by method '{method}'.*remove it"):
        load_config(None, extra=_merge_free(cfg, {"loss": {"name": "ldam", "kwargs": {}}}))


def test_face2exp_switches_drw_on(tmp_path):
    cfg = method_config("face2exp", epochs=2)
    cfg = load_config(None, extra=_merge_free(cfg, {"loss": {"name": "ldam", "kwargs": {"drw_epoch": 1, "s": 30.0}},
                                                     "model": {"kwargs": {"head": "normed"}}}))
    res = fit(cfg, tmp_path / "run")
    assert [h["loss_reweighted"] for h in res["history"]] == [0, 1]


def test_checkpoint_every_is_gone():
    with pytest.raises(ConfigError, match="checkpoint_every"):
        load_config(None, extra={"train": {"checkpoint_every": 2}})
