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
