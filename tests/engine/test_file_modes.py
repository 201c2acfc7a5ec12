"""Files written by the project get the user's umask (not mkstemp's 0600), and --resume removes the temp file a
kill during a checkpoint write leaves behind."""
from __future__ import annotations

import os
import stat

import pytest

from fairexpr._io import atomic_write_bytes, remove_stale_temps
from fairexpr.engine import fit


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_write_uses_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.bin") == 0o640 and (tmp_path / "a.bin").read_bytes() == b"x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_training_run_writes_files_with_the_umask_and_resume_cleans_temps(cfg_factory, tmp_path, umask_022, capsys):
    run = tmp_path / "run"
    fit(cfg_factory(train={"epochs": 1}), run)
    written = [p for p in run.rglob("*") if p.is_file() and "cache" not in p.parts]
    assert {p.suffix for p in written} >= {".safetensors", ".json", ".csv", ".yaml", ".png"}
    wrong = {str(p.relative_to(run)): oct(mode(p)) for p in written if mode(p) != 0o644}
    assert not wrong, wrong
    # a kill during a checkpoint write: the temp file stays; --resume removes it (and says so)
    (run / ".last.safetensors.abc123.tmp").write_bytes(b"\0" * 1024)
    fit(cfg_factory(train={"epochs": 2}), run, resume=True)
    assert not (run / ".last.safetensors.abc123.tmp").exists()
    assert "removed .last.safetensors.abc123.tmp" in capsys.readouterr().out
    assert remove_stale_temps(tmp_path / "missing") == []
