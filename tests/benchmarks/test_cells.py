"""Rule 5 (no stale numbers): benchmark cells are keyed by the hash of the config their command resolves to."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _cells  # noqa: E402
from _bench import load_bench  # noqa: E402
from fairexpr.config import load_config  # noqa: E402


def _load(name: str):
    return load_bench(name, f"{name}_bench")


def test_train_command_resolves_like_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))
    argv = ["train", "--config", str(ROOT / "configs" / "cucn_cpu.yaml"), "--epochs", "3", "seed=4", "train.batch_size=32"]
    cfg = _cells.resolved_config(argv)
    want = load_config(ROOT / "configs" / "cucn_cpu.yaml", ["seed=4", "train.batch_size=32"], extra={"train": {"epochs": 3}})
    assert cfg == want
    key = _cells.config_key(cfg)
    assert len(key) == 10
    assert _cells.config_key(_cells.resolved_config(argv + ["--no-progress"])) == key  # display only
    assert _cells.config_key(_cells.resolved_config(argv[:-1] + ["train.batch_size=16"])) != key
    assert _cells.config_key(_cells.resolved_config(["train", "--config", argv[2], "--epochs", "4", *argv[5:]])) != key


def test_a_changed_recipe_file_changes_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))
    recipe = tmp_path / "r.yaml"
    text = (ROOT / "configs" / "cucn_cpu.yaml").read_text()
    recipe.write_text(text)
    a = _cells.keyed_dir(tmp_path, "cell", ["train", "--config", str(recipe)])
    recipe.write_text(text.replace("batch_size: 64", "batch_size: 32") if "batch_size: 64" in text else text + "\nseed: 9\n")
    b = _cells.keyed_dir(tmp_path, "cell", ["train", "--config", str(recipe)])
    assert a.parent == b.parent == tmp_path and a.name.startswith("cell_") and a != b


def test_difc_cells_with_other_settings_get_other_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))
    difc = _load("difc")
    base = dict(recipe="mobilenet", t1=None, epochs=None, minutes=None, iters=None, init=None, override=[])
    src, tgt = f"fer2013:{tmp_path}/fer2013", f"ckplus:{tmp_path}/ckplus/CK+48"

    def d(**kw):
        a = argparse.Namespace(**{**base, **kw})
        argv = difc.cell_argv("mcd", "difc", 0, src, "train", tgt, None, a)
        return difc.cell_dir(tmp_path, "mcd", "difc", 0, tgt, None, argv)

    same = d()
    assert d() == same and same.name.startswith("mcd_difc_CK+48_all_s0_")
    assert len({same, d(epochs=3), d(t1=2), d(init="fer"), d(override=["method.epsilon=0.2"])}) == 5


def test_face2exp_mobilenet_recipe_deploys_b_and_the_override_remakes_the_a_selected_cells(tmp_path, monkeypatch):
    """The recipe deploys B; the README's tables ran it with `deploy: adaptation`, and the command it gives
    (`--override method.deploy=adaptation`) resolves to exactly the config of the recipe as it was then; SL cells,
    which have no method options, are not touched by it."""
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))
    f2e = _load("face2exp")
    recipe = ROOT / "configs" / "face2exp_mobilenet_cpu.yaml"
    assert load_config(recipe)["method"]["deploy"] == "base"
    before = tmp_path / "face2exp_mobilenet_cpu.yaml"
    before.write_text(recipe.read_text().replace("  deploy: base\n", "  deploy: adaptation\n"))
    assert load_config(before)["method"]["deploy"] == "adaptation"
    ov = list(f2e.datasets(tmp_path, smoke=True)["fer2013"]["overrides"])
    plain = argparse.Namespace(epochs=8, minutes=12.0, clock="process", override=[])
    forced = argparse.Namespace(**{**vars(plain), "override": ["method.deploy=adaptation"]})
    assert f2e.cell_dir(tmp_path, recipe, "face2exp", "fer2013", 0.1, 0, ov, forced) == \
        f2e.cell_dir(tmp_path, before, "face2exp", "fer2013", 0.1, 0, ov, plain)
    assert f2e.cell_dir(tmp_path, recipe, "face2exp", "fer2013", 0.1, 0, ov, plain) != \
        f2e.cell_dir(tmp_path, before, "face2exp", "fer2013", 0.1, 0, ov, plain)
    assert f2e.cell_argv(recipe, "sl", 0.1, 0, ov, forced) == f2e.cell_argv(recipe, "sl", 0.1, 0, ov, plain)


def test_face2exp_grefel_cucn_cells_are_keyed(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))
    f2e, grefel, cucn = _load("face2exp"), _load("grefel"), _load("cucn")
    a = argparse.Namespace(epochs=8, minutes=12.0, clock="process", override=[])
    ov = list(f2e.datasets(tmp_path, smoke=True)["fer2013"]["overrides"])
    recipe = ROOT / "configs" / "face2exp_mobilenet_cpu.yaml"
    d = f2e.cell_dir(tmp_path, recipe, "face2exp", "fer2013", 0.1, 0, ov, a)
    assert d.name.startswith("fer2013_10pct_face2exp_s0_")
    assert d != f2e.cell_dir(tmp_path, recipe, "face2exp", "fer2013", 0.1, 0, ov, argparse.Namespace(**{**vars(a), "epochs": 9}))
    sl = f2e.cell_argv(recipe, "sl", 0.1, 0, ov, a)
    assert not any(c.startswith("data.unlabelled") for c in sl)
    g = argparse.Namespace(epochs=3, clock="process", minutes=20.0, override=[])
    ga = grefel.cell_argv(ROOT / "configs" / "grefel_cpu.yaml", ["seed=0", "data.label_noise=0.1"], g)
    gb = grefel.cell_argv(ROOT / "configs" / "grefel_cpu.yaml", ["seed=0", "data.label_noise=0.2"], g)
    assert _cells.keyed_dir(tmp_path, "x", ga) != _cells.keyed_dir(tmp_path, "x", gb)
    assert _cells.resolved_config(cucn.cell_argv("cpu", ["seed=1"]))["seed"] == 1
    dl = _cells.resolved_config(cucn.cell_argv("dlib", ["seed=1", *cucn.row_overrides("plain_ce", "dlib")]))
    assert dl["model"]["name"] == "dlib_resnet29" and dl["method"]["class_weights"] == "none"
    assert _cells.keyed_dir(tmp_path, "c", cucn.cell_argv("dlib", ["seed=1", "data.label_noise=0.2"])) != \
        _cells.keyed_dir(tmp_path, "c", cucn.cell_argv("dlib", ["seed=1"]))


def test_the_init_weights_are_part_of_the_key(tmp_path, monkeypatch):
    """A cell started from a source model that was rebuilt (same run folder, other weights) is another cell."""
    from fairexpr.checkpoint import read_source

    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))
    weights, _ = read_source("fer", "test")
    run = tmp_path / "src_run"
    run.mkdir()
    (run / "model.json").write_bytes((weights.parent / "model.json").read_bytes())
    (run / "model.safetensors").write_bytes(weights.read_bytes())
    argv = ["adapt", "--config", str(ROOT / "configs" / "difc_mcd_mobilenet_cpu.yaml"), "--init", str(run),
            "--source", f"fer2013:{tmp_path}/f", "--target", f"ckplus:{tmp_path}/c"]
    a = _cells.keyed_dir(tmp_path, "cell", argv)
    assert _cells.keyed_dir(tmp_path, "cell", argv) == a
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-1] ^= 1  # one bit of one weight
    (run / "model.safetensors").write_bytes(bytes(data))
    assert _cells.keyed_dir(tmp_path, "cell", argv) != a


def test_write_recipe_is_atomic_skips_equal_content_and_uses_the_umask(tmp_path):
    import os

    from _cells import write_recipe

    p = write_recipe(tmp_path / "sub" / "recipe.yaml", "seed: 0\n")
    assert p.read_text() == "seed: 0\n"
    old = os.umask(0o027)
    try:
        mtime = p.stat().st_mtime_ns
        os.utime(p, ns=(mtime - 10**9, mtime - 10**9))
        write_recipe(p, "seed: 0\n")  # same content: not rewritten
        assert p.stat().st_mtime_ns == mtime - 10**9
        write_recipe(p, "seed: 1\n")
        assert p.read_text() == "seed: 1\n" and (p.stat().st_mode & 0o777) == 0o640
    finally:
        os.umask(old)
    assert [f.name for f in p.parent.iterdir()] == ["recipe.yaml"]  # no temporary file left behind


def _finished_cell(root: Path, name: str = "fer2013_norb_s0_0123456789", acc: str = "0.5") -> Path:
    d = root / name
    (d / "eval" / "test").mkdir(parents=True)
    (d / "result.json").write_text('{"best_epoch": 3}')
    (d / "model.json").write_text("{}")
    (d / "config.yaml").write_text("seed: 0\n")
    (d / "metrics.csv").write_text("epoch,loss\n1,2.0\n")
    (d / "eval" / "test" / "metrics.json").write_text('{"accuracy": %s}' % acc)
    (d / "model.safetensors").write_bytes(b"weights")
    (d / "eval" / "test" / "predictions.npz").write_bytes(b"npz")
    return d


def test_archive_keeps_the_small_files_of_a_finished_cell_and_restore_brings_them_back(tmp_path):
    run = _finished_cell(tmp_path / "runs")
    dest = _cells.archive_cell(run, tmp_path / "archive")
    assert dest == tmp_path / "archive" / run.name
    assert {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} == {
        "result.json", "model.json", "config.yaml", "metrics.csv", "eval/test/metrics.json"}
    assert _cells.archive_cell(run, tmp_path / "archive") == dest  # again: a no-op
    restored = _cells.restore_cells(tmp_path / "archive", tmp_path / "fresh")
    assert restored == [tmp_path / "fresh" / run.name]
    assert (restored[0] / "eval" / "test" / "metrics.json").read_text() == '{"accuracy": 0.5}'
    assert not (restored[0] / "model.safetensors").exists()
    mark = json.loads((restored[0] / _cells.RESTORED_MARK).read_text())
    assert mark["archive"] == str(dest) and "eval/test/metrics.json" in mark["files"]
    assert _cells.restore_cells(tmp_path / "archive", tmp_path / "fresh") == []  # finished there now: skipped
    # a restored cell archived again (another lane finishing the grid) is the same copy, without the mark
    assert _cells.archive_cell(restored[0], tmp_path / "archive") == dest
    assert not (dest / _cells.RESTORED_MARK).exists()
    assert _cells.restore_cells(tmp_path / "no_archive", tmp_path / "fresh") == []


def test_restore_gives_a_partial_local_run_the_archived_result_and_keeps_its_checkpoints(tmp_path):
    _cells.archive_cell(_finished_cell(tmp_path / "runs"), tmp_path / "archive")
    partial = tmp_path / "fresh" / "fer2013_norb_s0_0123456789"
    partial.mkdir(parents=True)
    (partial / "last.json").write_text('{"epoch": 2}')
    assert _cells.restore_cells(tmp_path / "archive", tmp_path / "fresh") == [partial]
    assert (partial / "result.json").is_file() and (partial / "last.json").is_file()


def test_an_unfinished_cell_a_clashing_copy_and_a_foreign_archive_folder_are_clear_errors(tmp_path):
    run = _finished_cell(tmp_path / "runs")
    (run / "result.json").unlink()
    with pytest.raises(ValueError, match="has no result.json; only a finished cell can be archived"):
        _cells.archive_cell(run, tmp_path / "archive")
    _cells.archive_cell(_finished_cell(tmp_path / "a"), tmp_path / "archive")
    other = _finished_cell(tmp_path / "b", acc="0.7")  # the same cell, run again elsewhere with another result
    with pytest.raises(ValueError, match=r"another copy of this cell \(eval/test/metrics.json differ\); it ran twice"):
        _cells.archive_cell(other, tmp_path / "archive")
    (tmp_path / "archive" / "stray").mkdir()
    with pytest.raises(ValueError, match="stray: an archived cell must hold result.json"):
        _cells.restore_cells(tmp_path / "archive", tmp_path / "fresh")


def test_cell_state_reads_which_files_exist_and_no_metric(tmp_path, capsys):
    done = _finished_cell(tmp_path / "runs", "a_s0_0123456789")
    partial = tmp_path / "runs" / "a_s1_0123456789"
    partial.mkdir()
    (partial / "last.json").write_text("{}")
    (partial / "metrics.csv").write_text("epoch,val_accuracy\n1,0.1\n2,0.2\n3,0.3\n")
    _cells.archive_cell(_finished_cell(tmp_path / "elsewhere", "a_s2_0123456789"), tmp_path / "archive")
    cells = [done, partial, tmp_path / "runs" / "a_s2_0123456789", tmp_path / "runs" / "a_s3_0123456789"]
    states = _cells.print_status(cells, tmp_path / "archive")
    assert states == {"a_s0_0123456789": "finished", "a_s1_0123456789": "epoch 3",
                      "a_s2_0123456789": "finished (archived)", "a_s3_0123456789": "not started"}
    out = capsys.readouterr().out
    assert _cells.cell_state(tmp_path / "runs" / "a_s2_0123456789") == "not started"  # without the archive
    restored = _cells.restore_cells(tmp_path / "archive", tmp_path / "fresh")[0]
    assert _cells.cell_state(restored) == "finished (restored)"
    assert "a_s1_0123456789: epoch 3" in out and out.rstrip().endswith("2 of 4 cells finished")


def _npz(path, **arrays):
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def test_archive_with_logits_keeps_only_logits_and_labels_and_compares_arrays(tmp_path):
    import numpy as np

    run = _finished_cell(tmp_path / "runs")
    z, y = np.arange(6, dtype=np.float32).reshape(3, 2), np.array([0, 1, -1])
    _npz(run / "eval" / "test" / "predictions.npz", logits=z, y_true=y, probs=z / 10, embeddings=np.ones((3, 4)))
    dest = _cells.archive_cell(run, tmp_path / "archive", logits=True)
    with np.load(dest / "eval" / "test" / "predictions.npz") as d:
        assert sorted(d.files) == ["logits", "y_true"]
        assert np.array_equal(d["logits"], z) and d["logits"].dtype == np.float32 and np.array_equal(d["y_true"], y)
    assert _cells.archive_cell(run, tmp_path / "archive", logits=True) == dest  # the same arrays: a no-op
    restored = _cells.restore_cells(tmp_path / "archive", tmp_path / "fresh")[0]
    with np.load(restored / "eval" / "test" / "predictions.npz") as d:
        assert np.array_equal(d["logits"], z)
    assert "only as logits and y_true" in json.loads((restored / _cells.RESTORED_MARK).read_text())["note"]
    # the restored (reduced) copy archives again as the same cell; other logits are a cell that ran twice
    assert _cells.archive_cell(restored, tmp_path / "archive", logits=True) == dest
    _npz(run / "eval" / "test" / "predictions.npz", logits=z + 1, y_true=y)
    with pytest.raises(ValueError, match=r"eval/test/predictions.npz differ\); it ran twice"):
        _cells.archive_cell(run, tmp_path / "archive", logits=True)
    # without logits (the other harnesses) nothing of the predictions is kept, as before
    plain = _cells.archive_cell(run, tmp_path / "plain")
    assert not (plain / "eval" / "test" / "predictions.npz").exists()
    assert "predictions not at all" in json.loads(
        (_cells.restore_cells(tmp_path / "plain", tmp_path / "fresh2")[0] / _cells.RESTORED_MARK).read_text())["note"]


def test_archive_with_logits_names_a_predictions_file_it_cannot_use(tmp_path):
    import numpy as np

    run = _finished_cell(tmp_path / "runs")  # its predictions.npz holds the bytes b"npz": not an npz archive
    with pytest.raises(ValueError, match=r"eval/test/predictions.npz: not a readable .npz file"):
        _cells.archive_cell(run, tmp_path / "archive", logits=True)
    _npz(run / "eval" / "test" / "predictions.npz", probs=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"predictions.npz: expected arrays logits, y_true, found probs"):
        _cells.archive_cell(run, tmp_path / "archive", logits=True)
    assert not (tmp_path / "archive").exists()  # nothing half-written
