"""End to end through the engine and the CLI on tiny synthetic two-domain data ('lab' -> 'wild'):
the adapt command runs, DIFC switches phase, resume mid-phase restores phase and margins, and target
labels never influence training (shuffled target labels give the identical model)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from difc_helpers import TINY
from fairexpr.data.synthetic import generate
from fairexpr import checkpoint as ck
from fairexpr.labels import CANONICAL7

N_PER_CLASS = [6, 3, 5, 10, 6, 5, 7]  # imbalanced, every class present


def write_domain(root: Path, domain: str, seed: int) -> str:
    imgs, labels = generate(N_PER_CLASS, size=16, channels=1, seed=seed, domain=domain, split="train")
    for i, (im, y) in enumerate(zip(imgs, labels)):
        d = root / CANONICAL7[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i:04d}.png")
    return f"folder:{root}"


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> tuple[str, str]:
    base = tmp_path_factory.mktemp("difc_data")
    return write_domain(base / "lab", "lab", 0), write_domain(base / "wild", "wild", 1)


def tiny_overrides(method: str = "mcd", epochs: int = 2) -> list[str]:
    return [f"method.name={method}", "method.cls_loss=difc", "method.t1_epochs=1", f"train.epochs={epochs}",
            "train.batch_size=16", "train.eval_batch_size=64", "train.progress=false", "train.max_minutes=null",
            f"model.name={TINY}", "data.image_size=16", "data.channels=1", "data.val=null",
            "data.train_split=null", "data.target_split=null", "data.target_eval_split=null",
            "schedule.name=constant", "optim.lr=0.01"]


def cfg_for(src: str, tgt: str, method: str = "mcd", epochs: int = 2, extra: list[str] = ()) -> dict:
    from fairexpr.cli.adapt import build_adapt_config

    cfg_file = Path(__file__).resolve().parents[2] / "configs" / f"difc_{method}_cpu.yaml"
    return build_adapt_config(str(cfg_file), src, tgt, None, tiny_overrides(method, epochs) + list(extra))


def test_cli_adapt_end_to_end(domains, tmp_path, monkeypatch):
    from fairexpr.cli import main

    src, tgt = domains
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))  # the CPU config names ${FAIREXPR_DATA} paths
    out = tmp_path / "run"
    rc = main(["adapt", "--config", "configs/difc_mcd_cpu.yaml", "--source", src, "--target", tgt,
               "--target-eval", tgt, "--out", str(out), "--json", *tiny_overrides("mcd", 2), "method.num_k=1"])
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    hist = result["history"]
    assert [h["difc_phase"] for h in hist] == [1, 2]
    order = json.loads(hist[1]["difc_order"])
    assert sorted(order) == list(range(7))
    assert json.loads(hist[1]["margins"]) != json.loads(hist[0]["margins"])
    assert result["eval"]["target_eval"]["n"] == sum(N_PER_CLASS)
    model, side = ck.load_model(out)
    assert side["model"]["name"] == "mcd_net"
    p = model(torch.randn(3, 1, 16, 16)).softmax(-1)
    assert torch.allclose(p.sum(1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("method", ["dann", "safn"])
def test_engine_runs_dann_and_safn(domains, tmp_path, method):
    from fairexpr.engine import fit

    src, tgt = domains
    res = fit(cfg_for(src, tgt, method, 2), tmp_path / method)
    assert res["epochs_run"] == 2 and [h["difc_phase"] for h in res["history"]] == [1, 2]


def test_resume_mid_phase_restores_phase_and_margins(domains, tmp_path):
    """Phase 2 from the start (t1 = 0), margins recomputed every 2 epochs: a run killed after epoch 1 and
    resumed must take epoch 2's margins from the checkpoint (no recomputation there) and end identical
    to the uninterrupted run."""
    from fairexpr.engine import fit

    src, tgt = domains
    extra = ["method.num_k=1", "method.t1_epochs=0", "method.confusion_interval=2"]
    full = fit(cfg_for(src, tgt, "mcd", 2, extra), tmp_path / "full")
    fit(cfg_for(src, tgt, "mcd", 1, extra), tmp_path / "part")  # "killed" after epoch 1, inside phase 2
    state = json.loads((tmp_path / "part" / "last.json").read_text())["method_extra"]
    assert state["phase"] == 2 and len(state["margins"]) == 7 and sorted(state["confusion_order"]) == list(range(7))
    resumed = fit(cfg_for(src, tgt, "mcd", 2, extra), tmp_path / "part", resume=True)
    assert resumed["epochs_run"] == 2 and "difc_updated" not in resumed["history"][-1]
    assert resumed["history"][-1]["margins"] == full["history"][-1]["margins"]
    a, b = ck.load_tensors(tmp_path / "full" / "last.safetensors"), ck.load_tensors(tmp_path / "part" / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_target_labels_never_influence_training(domains, tmp_path):
    """Even when the target split handed to the engine carries its true labels, training with shuffled
    labels gives the identical model (the engine also strips target labels when it loads data)."""
    from fairexpr.engine import fit
    from fairexpr.engine.data import Split, build_splits

    src, tgt = domains
    cfg = cfg_for(src, tgt, "mcd", 2, ["method.num_k=1", f"data.target_eval={tgt}"])
    splits = build_splits(cfg, progress=False)
    assert (splits["target"].labels == -1).all()  # the engine's own guarantee
    t, true = splits["target"], splits.pop("target_eval").labels
    g = torch.Generator().manual_seed(0)

    def with_labels(lab: torch.Tensor) -> Split:
        return Split(t.name, t.spec, t.split, t.images, lab, t.classes, t.soft_labels, dict(t.info))

    shuffled = true[torch.randperm(len(true), generator=g)]
    assert (true >= 0).all() and not torch.equal(shuffled, true)
    cfg["data"]["target_eval"] = None
    fit(cfg, tmp_path / "a", splits={**splits, "target": with_labels(true)})
    fit(cfg, tmp_path / "b", splits={**splits, "target": with_labels(shuffled)})
    wa, wb = ck.load_tensors(tmp_path / "a" / "model.safetensors"), ck.load_tensors(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
