"""Fabricated evaluation run directories in the engine's output layout."""
import json
from pathlib import Path

import numpy as np
import pytest

from fairexpr.evaluation import evaluate
from fairexpr.labels import CANONICAL7
from fairexpr.evaluation.calibration import calibration_summary, fit_temperature, softmax

CLASSES7 = list(CANONICAL7)


def _make_run(root: Path, name: str, *, skill: float, seed: int = 0, n: int = 140, splits=("test",),
             embeddings: bool = True, curves: bool = True, sidecar: bool = True, calibrate: bool = False) -> Path:
    """A run dir whose predictions are right with probability ~``skill``."""
    rng = np.random.default_rng(seed)
    run = root / name
    run.mkdir(parents=True)
    k = len(CLASSES7)
    for split in splits:
        y = rng.integers(0, k, n)
        logits = rng.normal(0, 1, (n, k))
        hit = rng.random(n) < skill
        logits[np.arange(n)[hit], y[hit]] += 4.0
        probs = softmax(logits)
        emb = rng.normal(0, 1, (n, 8)) + np.eye(k, 8)[y] * 3
        m = evaluate(y, probs, CLASSES7, embeddings=emb if embeddings else None)
        m.update(split=split, dataset=f"synthetic:{root}", label_protocol="canonical7", checkpoint=str(run))
        if calibrate:
            m["calibration"] = calibration_summary(logits, y, fit_temperature(logits, y))
        d = run / "eval" / split
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(m))
        arrays = {"y_true": y, "probs": probs}
        if embeddings:
            arrays["embeddings"] = emb.astype(np.float32)
        np.savez(d / "predictions.npz", **arrays)
    if curves:
        lines = ["epoch,train_loss,val_accuracy,val_balanced_accuracy,lr"]
        lines += [f"{e},{2.0 / (e + 1):.4f},{0.3 + 0.05 * e:.4f},{0.25 + 0.05 * e:.4f},0.001" for e in range(5)]
        (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    if sidecar:
        (run / "model.json").write_text(json.dumps({
            "format": "fairexpr-checkpoint", "model": {"name": "resnet18_cbam", "num_classes": 7},
            "classes": CLASSES7, "config": {"method": {"name": "ce"}},
            "class_counts": [400, 40, 100, 900, 300, 250, 600]}))
    return run


@pytest.fixture
def make_run():
    """Factory ``make_run(root, name, skill=..., ...) -> run dir`` (see :func:`_make_run`)."""
    return _make_run


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    return [_make_run(tmp_path / "runs", "baseline", skill=0.5, seed=0),
            _make_run(tmp_path / "runs", "cucn", skill=0.8, seed=1, calibrate=True)]


@pytest.fixture(autouse=True)
def _single_threaded_blas():
    """OpenMP/BLAS pools spin badly on this shared 2-core machine (t-SNE: 0.15 s -> 6 s)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
