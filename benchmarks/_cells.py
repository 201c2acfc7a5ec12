"""Rule 5 of docs/benchmarks.md, *no stale numbers*, for every benchmark that runs `fairexpr train` / `fairexpr adapt`
cells: a cell's run directory is named after a hash of the **resolved config** its command runs (recipe file,
command-line options, overrides, ``--init`` and the environment variables the recipe expands, all resolved here
exactly as the CLI resolves them; with ``model.init`` also the SHA-256 of the weights the cell starts from). A finished run is therefore reused only by a request that would run the same
config; change the recipe, an override or the budget and the cell goes to a new directory.

    argv = ["train", "--config", "configs/cucn_cpu.yaml", "seed=0", "train.epochs=8"]
    run_dir = keyed_dir(out, "fer2013_full_s0", argv)         # out/fer2013_full_s0_<10 hex>
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

#: config keys that change what a run prints, not what it computes
VOLATILE = (("train", "progress"),)


def resolved_config(argv: list[str]) -> dict[str, Any]:
    """The config ``fairexpr <argv>`` would run (``argv[0]`` = ``train`` or ``adapt``), resolved in this process by
    the CLI's own option parsing and config builders. ``--out`` may be left out."""
    from fairexpr.cli import adapt, train

    sub, rest = argv[0], list(argv[1:])
    if "--out" not in rest:
        rest += ["--out", "unused"]
    if sub == "train":
        p = train.command.make_context("train", rest).params
        return train.build_train_config(p["config_path"], p["train_spec"], p["val_spec"], p["test_spec"], p["epochs"],
                                        p["minutes"], p["no_progress"], list(p["overrides"]))
    if sub == "adapt":
        p = adapt.command.make_context("adapt", rest).params
        return adapt.build_adapt_config(p["config_path"], p["source"], p["target"], p["target_eval"], list(p["overrides"]),
                                        epochs=p["epochs"], minutes=p["minutes"], no_progress=p["no_progress"],
                                        init=p["init"])
    raise ValueError(f"resolved_config: expected a train or adapt command, got {sub!r}")


def weights_sha256(ref: str, option: str) -> str:
    """SHA-256 of the weights file of a trained model (run folder, checkpoint, packaged name or ``default``)."""
    from fairexpr.checkpoint import read_source

    weights, _ = read_source(ref, option)
    return hashlib.sha256(Path(weights).read_bytes()).hexdigest()


def config_key(cfg: dict[str, Any]) -> str:
    """10 hex digits of the SHA-256 of the config (keys sorted; :data:`VOLATILE` keys dropped)."""
    c = copy.deepcopy(cfg)
    for section, key in VOLATILE:
        (c.get(section) or {}).pop(key, None)
    if (c.get("train") or {}).get("batchnorm") == "frozen":  # what `frozen` freezes is part of what a cell computes
        from fairexpr.engine.batchnorm import FREEZE_RULE

        c["train"]["batchnorm_rule"] = FREEZE_RULE
    init = (c.get("model") or {}).get("init")
    if init:  # the model a cell starts from is part of what it computes: a rebuilt `default` is another cell
        c["model"]["init_sha256"] = weights_sha256(init, "model.init")
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:10]


def keyed_dir(base: Path, name: str, argv: list[str]) -> Path:
    """``base / f"{name}_{config_key(resolved_config(argv))}"``: the run directory of one cell."""
    return Path(base) / f"{name}_{config_key(resolved_config(argv))}"


def write_recipe(path: Path, text: str) -> Path:
    """Write a derived recipe file that parallel benchmark processes share: only when its content changes, and
    atomically (a temporary file in the same folder, then ``os.replace``), so a process hashing or reading it never
    sees a half-written file (which would key a cell by a config it does not run)."""
    import os
    import tempfile

    path = Path(path)
    if path.is_file() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------------------------ cell archive
#: the files of a finished cell that the tables read; weights, checkpoints, predictions and figures are not kept
ARCHIVE_FILES = ("result.json", "model.json", "config.yaml", "metrics.csv", "metrics.json", "eval/**/metrics.json")
#: written into a run directory restored from an archive: where it came from and that its weights are absent
RESTORED_MARK = "restored_from_archive.json"


#: with ``logits=True`` (``recipes.py``: its ECE table needs each role's raw outputs) the archive also keeps every
#: ``eval/<role>/predictions.npz``, reduced to these arrays (no probabilities, no embeddings)
LOGITS_FILE, LOGITS_KEYS = "eval/*/predictions.npz", ("logits", "y_true")


def _archived_files(run_dir: Path, logits: bool = False) -> list[Path]:
    pats = ARCHIVE_FILES + ((LOGITS_FILE,) if logits else ())
    return sorted({p for pat in pats for p in Path(run_dir).glob(pat) if p.is_file()})


def _logits_arrays(f: Path) -> dict[str, Any]:
    """The :data:`LOGITS_KEYS` arrays of one ``predictions.npz``; a file without them is a one-line error naming it."""
    import numpy as np

    try:
        with np.load(f) as d:
            found = sorted(d.files)
            arrays = {k: d[k] for k in LOGITS_KEYS if k in d.files}
    except (OSError, EOFError, ValueError) as e:  # not an npz archive, or a truncated one
        raise ValueError(f"{f}: not a readable .npz file ({e})") from None
    if len(arrays) < len(LOGITS_KEYS):
        raise ValueError(f"{f}: expected arrays {', '.join(LOGITS_KEYS)}, found {', '.join(found) or 'none'}")
    return arrays


def _npz_bytes(arrays: dict[str, Any]) -> bytes:
    import io

    import numpy as np

    b = io.BytesIO()
    np.savez_compressed(b, **arrays)
    return b.getvalue()


def archive_cell(run_dir: str | Path, archive: str | Path, logits: bool = False) -> Path:
    """Copy the small files of a **finished** cell (:data:`ARCHIVE_FILES`) to ``archive / <run_dir name>``, so that
    a grid spanning several machines or fresh checkouts keeps its finished cells in the repository (a few tens of
    kB per cell) and never reruns them. The directory name carries the config hash, so an archived cell is only
    ever reused by a request for the same config. Copying the same cell again is a no-op; an archive that already
    holds a *different* copy of the cell is an error (the cell ran twice: keep the first result). With ``logits``
    each role's ``predictions.npz`` is kept too, reduced to :data:`LOGITS_KEYS` and compressed (compared by its
    arrays, not its bytes: a zip records when it was written)."""
    import numpy as np

    from fairexpr._io import atomic_write_bytes

    src = Path(run_dir)
    if not (src / "result.json").is_file():
        raise ValueError(f"{src}: has no result.json; only a finished cell can be archived")
    dest = Path(archive) / src.name
    files = [p for p in _archived_files(src) if p.name != RESTORED_MARK]
    preds = {p: _logits_arrays(p) for p in sorted(src.glob(LOGITS_FILE)) if p.is_file()} if logits else {}
    clashes = [str(p.relative_to(src)) for p in files
               if (dest / p.relative_to(src)).is_file() and (dest / p.relative_to(src)).read_bytes() != p.read_bytes()]
    for p, arrays in preds.items():
        kept = dest / p.relative_to(src)
        if kept.is_file():
            old = _logits_arrays(kept)
            if any(old[k].shape != arrays[k].shape or not np.array_equal(old[k], arrays[k]) for k in LOGITS_KEYS):
                clashes.append(str(p.relative_to(src)))
    if clashes:
        raise ValueError(f"{dest}: the archive already holds another copy of this cell ({', '.join(clashes)} differ); "
                         f"it ran twice. Keep the archived result (delete {src} to restore it) or delete {dest}")
    for p in files:
        target = dest / p.relative_to(src)
        if not target.is_file():
            atomic_write_bytes(target, p.read_bytes())
    for p, arrays in preds.items():
        target = dest / p.relative_to(src)
        if not target.is_file():
            atomic_write_bytes(target, _npz_bytes(arrays))
    return dest


def restore_cells(archive: str | Path, out: str | Path) -> list[Path]:
    """Copy every archived cell of ``archive`` that ``out`` has not finished into ``out / <cell name>`` (so a
    harness skips it and ``--collect`` reads it) and mark it with :data:`RESTORED_MARK`; returns the restored run
    directories. A partial local run of the same cell (checkpoints, no result.json) gets the archived result; its
    checkpoints stay. An archive folder that is not a finished cell is an error naming it."""
    from fairexpr._io import atomic_write_bytes, atomic_write_text

    archive, out = Path(archive), Path(out)
    if not archive.is_dir():
        return []
    restored = []
    for cell in sorted(p for p in archive.iterdir() if p.is_dir()):
        if not (cell / "result.json").is_file():
            raise ValueError(f"{cell}: an archived cell must hold result.json (expected a folder written by archive_cell)")
        dest = out / cell.name
        if (dest / "result.json").is_file():
            continue
        files = _archived_files(cell, logits=True)  # an archive written without logits holds no predictions.npz
        for p in files:
            atomic_write_bytes(dest / p.relative_to(cell), p.read_bytes())
        atomic_write_text(dest / RESTORED_MARK, json.dumps(
            {"archive": str(cell), "files": [str(p.relative_to(cell)) for p in files],
             "note": "restored from a cell archive: its weights and checkpoints were not kept, and its predictions "
                     + ("only as logits and y_true" if any(p.match(LOGITS_FILE) for p in files) else "not at all")},
            indent=2))
        restored.append(dest)
    return restored


# the harnesses' --archive option, one implementation for all of them
ARCHIVE_HELP = ("cell archive (e.g. benchmarks/results/cells/<tag>): its finished cells are restored into --out first "
                "(never rerun; --collect reads them), and every finished cell is copied into it (the small files the "
                "tables read, no weights), so a grid can span fresh checkouts")


def add_archive_argument(parser) -> None:
    parser.add_argument("--archive", type=Path, default=None, metavar="DIR", help=ARCHIVE_HELP)


def restore_archive(parser, archive: Path | None, out: Path, void: str | None = None) -> list[Path]:
    """``--archive``: restore its cells into ``out`` (a bad archive is one ``parser.error`` line) and say how many.
    ``void`` names the option that makes the cells' numbers meaningless (a smoke run): then an archive inside
    ``benchmarks/results`` is refused."""
    if archive is None:
        return []
    results = Path(__file__).resolve().parent / "results"
    if void and Path(archive).resolve().is_relative_to(results):
        parser.error(f"{void} cells are meaningless: pass --archive to a scratch folder, not into {results}")
    if Path(archive).exists() and not Path(archive).is_dir():
        parser.error(f"--archive {archive}: expected a folder of archived cells, found a file")
    try:
        restored = restore_cells(archive, out)
    except ValueError as e:
        parser.error(f"--archive: {e}")
    print(f"restored {len(restored)} finished cell(s) from {archive}", flush=True)
    return restored


def keep_finished(parser, archive: Path | None, run_dirs, logits: bool = False) -> None:
    """``--archive``: copy each finished cell of ``run_dirs`` into it (unfinished ones are left alone); ``logits``
    as in :func:`archive_cell`."""
    if archive is None:
        return
    for d in run_dirs:
        if (Path(d) / "result.json").is_file():
            try:
                archive_cell(d, archive, logits=logits)
            except ValueError as e:
                parser.error(f"--archive: {e}")


def run_cli_cell(run_dir: Path, argv: list[str]) -> dict[str, Any]:
    """Run one cell, ``fairexpr <argv> --out run_dir``, in a child process, unless it has finished (``result.json``);
    a cell a killed process left behind (``last.json``) resumes from its last epoch checkpoint. Returns
    ``{"run", "status"[, "wall_s"]}`` with status ``done before``, ``trained`` or ``failed (exit N)``."""
    import os
    import subprocess
    import sys
    import time

    run_dir = Path(run_dir)
    if (run_dir / "result.json").exists():
        return {"run": str(run_dir), "status": "done before"}
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "fairexpr.cli", *argv, "--out", str(run_dir)]
    if (run_dir / "last.json").exists():
        cmd.append("--resume")
    print("+", " ".join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=root, env={**os.environ, "PYTHONPATH": str(root / "src")})
    status = "trained" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    if proc.returncode != 0:
        print(f"run {status} after {time.time() - t0:.0f}s: {run_dir}", flush=True)
    return {"run": str(run_dir), "status": status, "wall_s": time.time() - t0}


# ------------------------------------------------------------------------------------------------ --status
STATUS_HELP = ("train nothing, read no metric, write no result: list each requested cell as finished (here or in "
               "--archive), at epoch k (a checkpoint to resume) or not started; for a planned grid that must not be "
               "read before it is complete")


def cell_state(run_dir: str | Path, archive: str | Path | None = None) -> str:
    """Where one cell stands, from which files exist (no metric is read): ``finished``, ``finished (archived)``,
    ``finished (restored)``, ``epoch k`` (k = epochs in its ``metrics.csv``; it resumes from there) or
    ``not started``."""
    d = Path(run_dir)
    if (d / "result.json").is_file():
        return "finished (restored)" if (d / RESTORED_MARK).is_file() else "finished"
    if archive is not None and (Path(archive) / d.name / "result.json").is_file():
        return "finished (archived)"
    if (d / "last.json").is_file():
        log = d / "metrics.csv"
        rows = sum(1 for line in log.read_text().splitlines()[1:] if line.strip()) if log.is_file() else 0
        return f"epoch {rows}"
    return "not started"


def print_status(run_dirs, archive: str | Path | None = None) -> dict[str, str]:
    """Print ``<cell>: <state>`` per cell and ``k of n cells finished``; returns ``{cell name: state}``."""
    states = {Path(d).name: cell_state(d, archive) for d in run_dirs}
    for name, state in states.items():
        print(f"{name}: {state}")
    done = sum(s.startswith("finished") for s in states.values())
    print(f"{done} of {len(states)} cells finished", flush=True)
    return states
