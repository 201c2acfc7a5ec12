"""benchmarks/face_backbone.py --study face2exp: the MobileNetV2 arm's derived config differs from the dlib recipe only
in the backbone and its optimiser/precision settings, every Meta-Face2Exp setting is shared, and it is a valid config."""
from __future__ import annotations

import yaml
from _bench import load_bench


def _load():
    return load_bench("face_backbone")


def test_face2exp_arms_share_every_method_setting(tmp_path, monkeypatch):
    fb = _load()
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))
    dlib = yaml.safe_load(fb.derived_config("dlib_resnet29", tmp_path / "dlib.yaml").read_text())
    mob = yaml.safe_load(fb.derived_config("mobilenet_v2 (ImageNet)", tmp_path / "mob.yaml").read_text())
    assert dlib == yaml.safe_load((fb.ROOT / fb.F2E_RECIPE).read_text())  # the dlib arm is the recipe itself
    assert mob["model"]["name"] == "mobilenet_v2" and "feature_stage" not in mob["model"]["kwargs"]
    assert {k: v for k, v in mob["method"].items() if k != "adaptation_lr"} == \
        {k: v for k, v in dlib["method"].items() if k != "adaptation_lr"}
    assert mob["method"]["adaptation_lr"] == 0.002 and mob["optim"]["lr"] == 0.01
    assert mob["train"]["precision"] == "32-true"
    assert {k: v for k, v in mob["train"].items() if k != "precision"} == \
        {k: v for k, v in dlib["train"].items() if k != "precision"}
    for k in ("data", "loss", "sampler", "augment", "schedule", "seed"):
        assert mob[k] == dlib[k], k
    from fairexpr.config import load_config

    cfg = load_config(tmp_path / "mob.yaml")
    assert cfg["data"]["label_fraction"] == 0.1 and cfg["model"]["kwargs"]["small_input"] is False
    # rewriting an unchanged derived config keeps the file (its mtime) as it is
    before = (tmp_path / "mob.yaml").stat().st_mtime_ns
    fb.derived_config("mobilenet_v2 (ImageNet)", tmp_path / "mob.yaml")
    assert (tmp_path / "mob.yaml").stat().st_mtime_ns == before
