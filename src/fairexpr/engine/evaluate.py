"""Evaluation of a checkpoint on a dataset: predictions -> metrics (``fairexpr.evaluation``) -> files.

``eval/<name>/`` gets ``metrics.json`` (every metric + split/dataset/protocol/checkpoint),
``predictions.npz`` (y_true, probs, logits, embeddings) and the plots ``fairexpr report`` gathers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import checkpoint as ck


def evaluate_and_write(out_dir: str | Path, preds: dict[str, np.ndarray], classes: tuple[str, ...] | list[str], *,
                       dataset: str, split: str | None, label_protocol: str = "hard", checkpoint: str = "",
                       temperature: float = 1.0, plots: bool = True, tta: str = "none") -> dict[str, Any]:
    from ..evaluation.metrics import evaluate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y = np.asarray(preds["labels"])
    keep = y >= 0
    if not keep.any():
        raise ck.CheckpointError(f"cannot evaluate on {dataset!r}: it has no labelled images")
    probs = np.asarray(preds["probs"])[keep]
    emb = preds.get("embedding")
    emb = None if emb is None else np.asarray(emb)[keep]
    m = evaluate(y[keep], probs, list(classes), embeddings=emb if emb is not None and len(emb) <= 20000 else None)
    m.update({"dataset": dataset, "split": split, "label_protocol": label_protocol, "checkpoint": checkpoint,
              "temperature": temperature, "tta": tta})
    ck.atomic_write_json(out / "metrics.json", m)
    buf = {"y_true": y[keep], "probs": probs.astype(np.float32), "logits": np.asarray(preds["logits"])[keep].astype(np.float32)}
    if emb is not None:
        buf["embeddings"] = emb.astype(np.float32)
    import io

    b = io.BytesIO()
    np.savez_compressed(b, **buf)
    ck.atomic_write_bytes(out / "predictions.npz", b.getvalue())
    if plots:
        from ..evaluation import plots as P

        P.plot_confusion_matrix(np.asarray(m["confusion_matrix"]), list(classes), out / "confusion_matrix.png",
                                title=f"{dataset} [{split}]")
        P.plot_per_class_bars({Path(checkpoint).name or "model": [m["per_class_accuracy"][c] for c in classes]},
                              list(classes), out / "per_class_accuracy.png")
    return m


def evaluate_checkpoint(checkpoint: str | Path, spec: str, split: str | None = None, *, options: dict[str, Any] | None = None,
                        out_dir: str | Path | None = None, name: str | None = None, batch_size: int = 512,
                        on_bad_file: str = "error", progress: bool = True, use_temperature: bool = True,
                        tta: str = "none") -> dict[str, Any]:
    """Evaluate a saved model on ``FORMAT:PATH`` (split) with the checkpoint's own preprocessing.

    ``tta="hflip"`` averages the probabilities of each face and its mirror (:mod:`fairexpr.evaluation.tta`);
    ``"auto"`` is the mode the checkpoint's sidecar recommends (``none`` when it names none).
    """
    from ..errors import ConfigError
    from ..data.augment import normalize, to_float
    from ..evaluation.tta import check_requested, mean_views, resolve_tta, tta_views
    from .data import _remap, load_split

    try:  # a bad mode is refused before the model and the data are loaded
        check_requested(tta, "eval")
    except ValueError as e:
        raise ConfigError(str(e)) from None

    if split is None:
        from ..data.base import FERDataset

        present = sorted({str(smp.split) for smp in FERDataset.from_spec(spec, None, on_bad_file=on_bad_file,
                                                                          **(options or {})).samples if smp.split})
        if len(present) > 1:
            raise ConfigError(f"{spec}: has splits {', '.join(present)}; give one (--split NAME): evaluating them pooled "
                              "would mix training and test images")
    model, side = ck.load_model(checkpoint)
    try:
        tta = resolve_tta(tta, side, f"checkpoint {checkpoint}")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    pre = side["preprocess"]
    data_cfg = {"image_size": int(pre["input_size"][0]), "channels": int(pre["in_chans"]), "on_bad_file": on_bad_file,
                "cache_dir": None}
    sp = load_split("eval", spec, split, options or {}, data_cfg, progress)
    classes = tuple(side["classes"])
    sp = _remap(sp, classes)
    temp = float(side.get("temperature", 1.0)) if use_temperature else 1.0
    probs, logits, embs = [], [], []
    with torch.inference_mode():
        for s in range(0, len(sp), batch_size):
            x = normalize(to_float(sp.images[s:s + batch_size]), pre["mean"], pre["std"])
            fs = [model.forward_features(v) for v, _ in tta_views(x, tta)]
            zs = [model.forward_head(f) for f in fs]
            logits.append(mean_views(zs))
            probs.append(mean_views([(z / temp).softmax(-1) for z in zs]))
            embs.append(mean_views(fs))
    preds = {"labels": sp.labels.numpy(), "probs": torch.cat(probs).numpy(), "logits": torch.cat(logits).numpy(),
             "embedding": torch.cat(embs).numpy()}
    run = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
    tag = name or (f"{spec.split(':', 1)[0]}_{split}" if split else spec.split(":", 1)[0])
    if out_dir:
        out = Path(out_dir)
    else:
        from ..zoo import is_packaged

        # a packaged model's folder is read-only package data: its evaluations go to ./fairexpr_eval/<model>/<tag>
        out = Path("fairexpr_eval") / run.name / tag if is_packaged(run) else run / "eval" / tag
    m = evaluate_and_write(out, preds, classes, dataset=spec, split=split,
                           label_protocol=str((options or {}).get("protocol", "hard")), checkpoint=str(checkpoint),
                           temperature=temp, tta=tta)
    m["out_dir"] = str(out)
    m["dropped_absent_classes"] = sp.info.get("dropped_absent_classes", {})
    m["exclusions"] = write_exclusions(out, sp.info.get("excluded", []), m["dropped_absent_classes"],
                                       int((sp.labels < 0).sum()))
    ck.atomic_write_json(out / "metrics.json", {k: v for k, v in m.items() if k != "out_dir"})
    return m


def exclusion_summary(excluded: list[tuple[str, str]], absent: dict[str, int], unlabelled: int) -> dict[str, Any]:
    """``{"total", "by_reason"}`` of the images of a split left out: the adapter's (path, reason) exclusions,
    classes the model does not have, images without a label."""
    from collections import Counter

    by_reason = dict(Counter(r for _, r in excluded))
    for c, n in absent.items():
        by_reason[f"class {c!r} is not one of the model's classes"] = int(n)
    if unlabelled:
        by_reason["no label"] = int(unlabelled)
    return {"total": int(sum(by_reason.values())), "by_reason": by_reason}


def write_exclusions(out: Path, excluded: list[tuple[str, str]], absent: dict[str, int], unlabelled: int) -> dict[str, Any]:
    """Every image of the requested split that is not in the evaluation, by reason: the adapter's protocol
    exclusions and skipped files (each listed in ``out/excluded.csv``), classes the model does not have, and
    images without a label. Returns the summary stored in ``metrics.json``."""
    import csv
    import io

    summary = exclusion_summary(excluded, absent, unlabelled)
    if excluded:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "reason"])
        w.writerows(excluded)
        ck.atomic_write_bytes(out / "excluded.csv", buf.getvalue().encode())
        summary["files"] = str(out / "excluded.csv")
    return summary
