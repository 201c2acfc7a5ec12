"""benchmarks/recipes.py: each recipe runs as written (train, or adapt with the file's own source/target), keyed by its
resolved config, finished runs skipped, a held lock respected, a released or dead holder's one taken; the ECE table over the
finished runs, unfinished ones listed; bad input is one clear line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _bench import load_bench

SYN = "{total: 280, seed: 1}"
COMMON = f"""seed: 0
data:
  train: synthetic:fer2013
  train_split: train
  train_options: {SYN}
  val: synthetic:fer2013
  val_split: val
  val_options: {SYN}
  image_size: 32
  channels: 1
  cache_dir: null
model: {{name: resnet18, kwargs: {{small_input: false}}}}
optim: {{name: sgd, lr: 0.05}}
"""

def _train_recipe() -> str:
    # data.test* belong inside data: insert them after the val options
    return COMMON.replace(f"  val_options: {SYN}\n", f"  val_options: {SYN}\n  test: synthetic:fer2013\n"
                          f"  test_split: test\n  test_options: {SYN}\n") + \
        "train: {epochs: 1, batch_size: 32, eval_batch_size: 128}\n"


def _adapt_recipe(target: bool = True) -> str:
    extra = (f"  target: synthetic:fer2013\n  target_options: {SYN}\n  target_eval: synthetic:fer2013\n"
             f"  target_eval_split: test\n  target_eval_options: {SYN}\n") if target else ""
    return COMMON.replace(f"  val_options: {SYN}\n", f"  val_options: {SYN}\n{extra}") + \
        "method: {name: dann, cls_loss: di, t1_epochs: 1, disc_hidden: 16}\n" \
        "train: {epochs: 1, batch_size: 32, eval_batch_size: 128}\n"


@pytest.fixture(scope="module")
def rec():
    return load_bench("recipes")


def test_argv_as_written(rec, tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text(_train_recipe())
    assert rec.recipe_argv(t, 3) == ["train", "--config", str(t), "--no-progress", "seed=3"]
    a = tmp_path / "a.yaml"
    a.write_text(_adapt_recipe())
    assert rec.recipe_argv(a, 0) == ["adapt", "--config", str(a), "--source", "synthetic:fer2013", "--target",
                                     "synthetic:fer2013", "--target-eval", "synthetic:fer2013", "--no-progress", "seed=0"]
    # the folder is keyed by the resolved config: another seed, another folder; the same request, the same one
    assert rec.run_dir(tmp_path, t, 0) == rec.run_dir(tmp_path, t, 0) != rec.run_dir(tmp_path, t, 1)
    assert rec.run_dir(tmp_path, t, 0).name.startswith("t_s0_")


def test_bad_input_is_one_clear_line(rec, tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text(_adapt_recipe(target=False))
    with pytest.raises(SystemExit, match=r"a\.yaml: an adaptation recipe needs data\.target \(FORMAT:PATH\)"):
        rec.recipe_argv(a, 0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 0}\n")
    with pytest.raises(SystemExit, match=r"bad\.yaml: .*train\.epochs"):
        rec.recipe_argv(bad, 0)
    with pytest.raises(SystemExit, match="none.yaml: recipe file not found"):
        rec.main([str(tmp_path / "none.yaml")])
    t = tmp_path / "t.yaml"
    t.write_text(_train_recipe())
    with pytest.raises(SystemExit, match="listed twice"):
        rec.main([str(t), str(t)])


def test_lock_held_and_released(rec, tmp_path):
    run = tmp_path / "r"
    held = rec.take_lock(run)
    assert held is not None
    assert rec.take_lock(run) is None  # held (another open file on the same lock)
    held.close()
    again = rec.take_lock(run)  # released: a lock file left behind does not block
    assert again is not None
    again.close()
    # a lane killed while training: the kernel drops its lock with the process
    code = f"import sys; sys.path.insert(0, {str(rec.ROOT / 'benchmarks')!r}); import recipes, pathlib, os; " \
           f"fh = recipes.take_lock(pathlib.Path({str(run)!r})); assert fh is not None; os._exit(9)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    last = rec.take_lock(run)
    assert last is not None
    last.close()


def test_end_to_end_train_and_adapt(rec, tmp_path, capsys):
    t, a = tmp_path / "t.yaml", tmp_path / "a.yaml"
    t.write_text(_train_recipe())
    a.write_text(_adapt_recipe())
    out, res = tmp_path / "runs", tmp_path / "res"
    busy = rec.run_dir(out, a, 0)
    other_lane = rec.take_lock(busy)  # another lane is training the adaptation recipe
    assert rec.main([str(t), str(a), "--out", str(out), "--results-dir", str(res), "--tag", "x"]) == 0
    printed = capsys.readouterr().out
    assert "t.yaml: finished" in printed and "a.yaml: busy (another process)" in printed
    j = json.loads((res / "x.json").read_text())
    assert [r["recipe"] for r in j["runs"]] == [rec.label(t, 0)] and j["runs"][0]["epochs run"] == 1
    m = json.loads((rec.run_dir(out, t, 0) / "eval" / "test" / "metrics.json").read_text())
    assert j["runs"][0]["accuracy / balanced (%)"] == f"test {100 * m['accuracy']:.1f} / {100 * m['balanced_accuracy']:.1f}"
    assert j["meta"]["not finished"] == [rec.label(a, 0)]  # listed, not dropped
    roles = {r["role"] for r in j["rows"]}
    assert roles == {"val", "test"} and all(r["recipe / runs"] == rec.label(t, 0) for r in j["rows"])
    assert "**Not finished** (1)" in (res / "x.md").read_text()
    assert sorted(p.name for p in res.iterdir()) == ["x.json", "x.md"]  # written whole: no temporary file left
    other_lane.close()
    assert rec.main([str(t), str(a), "--out", str(out), "--results-dir", str(res), "--tag", "x", "--reverse"]) == 0
    printed = capsys.readouterr().out
    assert printed.index("a.yaml: finished") < printed.index("t.yaml: skipped (finished)")
    j = json.loads((res / "x.json").read_text())
    assert j["meta"]["not finished"] == [] and {r["role"] for r in j["rows"]} == {"val", "test", "target_eval"}
    assert rec.take_lock(busy) is not None  # the lane let go of it


def test_archive_keeps_logits_and_a_fresh_checkout_rebuilds_the_same_table_without_training(rec, tmp_path, capsys):
    import numpy as np

    t = tmp_path / "t.yaml"
    t.write_text(_train_recipe())
    arch, res = tmp_path / "cells", tmp_path / "res"
    argv = [str(t), "--results-dir", str(res), "--tag", "x", "--archive", str(arch)]
    assert rec.main(argv + ["--out", str(tmp_path / "runs")]) == 0
    assert "t.yaml: finished" in capsys.readouterr().out
    first = json.loads((res / "x.json").read_text())
    run = rec.run_dir(tmp_path / "runs", t, 0)
    kept = arch / run.name
    assert (kept / "result.json").is_file() and not list(kept.glob("*.safetensors"))
    for role in ("val", "test"):  # each role's predictions reduced to what the ECE table reads, the arrays unchanged
        with np.load(kept / "eval" / role / "predictions.npz") as small, \
                np.load(run / "eval" / role / "predictions.npz") as full:
            assert sorted(small.files) == ["logits", "y_true"] and "probs" in full.files
            assert np.array_equal(small["logits"], full["logits"]) and np.array_equal(small["y_true"], full["y_true"])
    # a fresh checkout: the run is restored from the archive, not trained, and the table is the same
    (res / "x.json").unlink()
    assert rec.main(argv + ["--out", str(tmp_path / "fresh")]) == 0
    printed = capsys.readouterr().out
    assert "restored 1 finished cell(s)" in printed and "t.yaml: skipped (finished)" in printed
    again = json.loads((res / "x.json").read_text())
    assert again["rows"] == first["rows"] and again["runs"][0]["accuracy / balanced (%)"] == \
        first["runs"][0]["accuracy / balanced (%)"]
    assert not list((tmp_path / "fresh").rglob("*.log"))  # nothing trained there


def test_archive_with_dry_run_is_a_clear_error(rec, tmp_path, capsys):
    t = tmp_path / "t.yaml"
    t.write_text(_train_recipe())
    with pytest.raises(SystemExit) as e:
        rec.main([str(t), "--dry-run", "--archive", str(tmp_path / "cells")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--archive restores and keeps finished runs; --dry-run trains nothing" in err and "Traceback" not in err
