"""DIFC + MCD from the CLI on real data: FER2013 (5 % of train, per class) -> CK+48 (unlabelled target, then
evaluated with its labels): both phases run, the margins move at the switch, CK+'s contempt images are dropped
from the 7-class evaluation and counted, and the run feeds the paper-shaped tables."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_cli_adapts_fer2013_to_ckplus(real_data, tmp_path):
    from click.testing import CliRunner

    from fairexpr.cli import cli
    from fairexpr.evaluation.difc_tables import accuracy_table, confusion_order_table, load_run
    from fairexpr.labels import CANONICAL7

    fer, ck = real_data / "fer2013", real_data / "ckplus" / "CK+48"
    if not (fer.is_dir() and ck.is_dir()):
        pytest.skip("FER2013 or CK+48 not found under FAIREXPR_DATA")
    out = tmp_path / "run"
    args = ["adapt", "--config", str(ROOT / "configs" / "difc_mcd_cpu.yaml"), "--source", f"fer2013:{fer}",
            "--target", f"ckplus:{ck}", "--target-eval", f"ckplus:{ck}", "--out", str(out), "--json",
            "data.train_split=train/frac0.05", "data.val=holdout:0.2", "data.target_split=null",
            "data.target_eval_split=null", "model.kwargs.small_input=false", "train.epochs=2",
            "train.iters_per_epoch=4", "method.t1_epochs=1", "method.num_k=1", "method.drw_epoch=1",
            "train.batch_size=16", "train.max_minutes=null", "train.progress=false"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    result = json.loads((out / "result.json").read_text())
    hist = result["history"]
    assert [h["difc_phase"] for h in hist] == [1, 2] and result["steps"] == 8
    m1, m2 = json.loads(hist[0]["margins"]), json.loads(hist[1]["margins"])
    order = json.loads(hist[1]["difc_order"])
    assert sorted(order) == list(range(7))
    # Eq. 6: the most confusing class gains eps = 0.02, the next eps / 2, ...
    assert m2[order[0]] - m1[order[0]] == pytest.approx(0.02, abs=1e-5)
    assert m2[order[1]] - m1[order[1]] == pytest.approx(0.01, abs=1e-5)
    ev = result["eval"]["target_eval"]
    assert ev["n"] == 927  # 981 CK+48 images minus 54 contempt (not in FER2013's 7 classes)
    rec = load_run(out)
    table = accuracy_table([rec], as_text=False)
    assert len(table) == 1 and table["accuracy"].iloc[0] == pytest.approx(ev["accuracy"], abs=1e-9)
    conf = confusion_order_table([rec], CANONICAL7)
    assert conf["1"].iloc[0] == CANONICAL7[order[0]]  # rank 1 = the most confusing class after the DI phase
