"""AGRA/DIFC global+local landmark head and the landmarks it needs: crop arithmetic (hand-computed and against
the authors' per-sample loop), shapes and gradients, landmark CSV reading and its errors, landmarks following
the augmentation (flip swap, affine), and adaptation end to end with landmarks from CSV sidecars."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fairexpr.data.augment import AugmentConfig, apply_params, sample_params
from fairexpr.data.base import DataError
from fairexpr.data.landmarks import augment_landmarks, flip_order, landmarks_for, read_landmark_file
from fairexpr.models import ModelError, create_model
from fairexpr.models.agra import ARCFACE_TEMPLATE, crop_windows


def loop_crop(fmap: torch.Tensor, locs: torch.Tensor, size: int) -> torch.Tensor:
    """The authors' integer crop: a zero grid, filled sample by sample from the map around each location."""
    b, c, h, w = fmap.shape
    r = size // 2
    out = torch.zeros(b, locs.shape[1], c, size, size)
    for j in range(b):
        for i in range(locs.shape[1]):
            cx, cy = int(locs[j, i, 0]), int(locs[j, i, 1])
            for dy in range(size):
                for dx in range(size):
                    y, x = cy - r + dy, cx - r + dx
                    if 0 <= y < h and 0 <= x < w:
                        out[j, i, :, dy, dx] = fmap[j, :, y, x]
    return out


def test_crop_windows_hand_computed_corner():
    fmap = torch.arange(16.0).view(1, 1, 4, 4)
    win = crop_windows(fmap, torch.tensor([[[0.0, 0.0], [0.99, 0.6]]]), size=3)
    # landmark (0, 0) -> cell (0, 0): the 3x3 window's top row and left column fall outside the map (zeros)
    assert win[0, 0, 0].tolist() == [[0, 0, 0], [0, 0, 1], [0, 4, 5]]
    # (0.99, 0.6) -> x cell floor(3.96) = 3, y cell floor(2.4) = 2
    assert win[0, 1, 0].tolist() == [[6, 7, 0], [10, 11, 0], [14, 15, 0]]


def test_crop_windows_equal_the_authors_loop():
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(3, 5, 28, 28, generator=g)
    lm = torch.rand(3, 5, 2, generator=g)
    lm[0, 0] = torch.tensor([0.0, 1.0])  # on the border
    locs = (lm * 28).floor().clamp(0, 27)
    assert torch.equal(crop_windows(fmap, lm, 7), loop_crop(fmap, locs, 7))


@pytest.mark.parametrize("mode,dim", [("data", 384), ("template", 384), ("none", 64)])
def test_agra_net_shapes_and_gradients(mode, dim):
    torch.manual_seed(0)
    net = create_model("agra_net", num_classes=7, backbone="resnet18", backbone_kwargs={"small_input": True},
                       in_chans=1, landmarks=mode, crop_width=16)
    x = torch.randn(2, 1, 32, 32)
    lm = torch.rand(2, 5, 2)
    f = net.forward_features(x, landmarks=lm)
    assert f.shape == (2, dim) and net.num_features == dim
    out = net.forward_head(f)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert net.backbone.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert net.global_head[0].weight.grad.abs().sum() > 0
    if mode != "none":
        assert all(n[0].res_layer[1].weight.grad.abs().sum() > 0 for n in net.crop_nets)
    assert net.uses_landmarks is (mode == "data")


def test_agra_net_landmarks_matter_only_in_data_mode():
    torch.manual_seed(0)
    kw = dict(num_classes=7, backbone="resnet18", backbone_kwargs={"small_input": True}, in_chans=1, crop_width=8)
    x = torch.randn(2, 1, 32, 32)
    a, b = torch.full((2, 5, 2), 0.1), torch.full((2, 5, 2), 0.9)
    data_net = create_model("agra_net", landmarks="data", **kw).eval()
    assert not torch.allclose(data_net.forward_features(x, a), data_net.forward_features(x, b))
    tmpl = torch.tensor(ARCFACE_TEMPLATE).expand(2, 5, 2)
    # no landmarks = the template
    assert torch.allclose(data_net.forward_features(x), data_net.forward_features(x, tmpl))
    tmpl_net = create_model("agra_net", landmarks="template", **kw).eval()
    assert torch.allclose(tmpl_net.forward_features(x, a), tmpl_net.forward_features(x, b))
    with pytest.raises(ModelError, match="landmarks must be"):
        create_model("agra_net", landmarks="dlib", **kw)
    with pytest.raises(ModelError, match=r"\[B, 5, 2\]"):
        data_net.forward_features(x, torch.rand(2, 4, 2))
    with pytest.raises(ModelError, match="four ResNet/IR stages"):
        create_model("agra_net", num_classes=7, backbone="mobilenet_v2", in_chans=1)


def test_agra_net_on_ir50_paper_geometry():
    net = create_model("agra_net", num_classes=7, backbone="ir50", in_chans=3, crop_width=8).eval()
    with torch.no_grad():
        s2 = net.backbone.body[:7](net.backbone.input_layer(torch.zeros(1, 3, 112, 112)))
        assert s2.shape[1:] == (128, 28, 28)  # the authors' stage-2 map the crops come from
        assert net(torch.randn(1, 3, 112, 112)).shape == (1, 7)


# ------------------------------------------------------------------ landmark files
def write_csv(path: Path, rows: list[list], header: str = "path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5") -> Path:
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def test_read_landmark_file_and_lookup(tmp_path):
    f = write_csv(tmp_path / "lm.csv", [["a/1.png", *[0.1 * i for i in range(1, 11)]], ["b/2.png", *[0.5] * 10]])
    table = read_landmark_file(f)
    assert table["a/1.png"].shape == (5, 2)
    assert table["a/1.png"][1].tolist() == pytest.approx([0.3, 0.4])
    got = landmarks_for([str(tmp_path / "b" / "2.png"), str(tmp_path / "a" / "1.png")], table, tmp_path, "x")
    assert np.allclose(got[0], 0.5) and got[1][0].tolist() == pytest.approx([0.1, 0.2])
    with pytest.raises(DataError, match=r"no row for 1 of 2 images.*c/3.png"):
        landmarks_for([str(tmp_path / "a" / "1.png"), str(tmp_path / "c" / "3.png")], table, tmp_path, "data.train")


@pytest.mark.parametrize("rows,header,match", [
    ([["a.png", *[0.5] * 10]], "path,x1,y1", "header lacks x2"),
    ([["a.png", *[0.5] * 9, 12]], None, "fractions of the image width/height"),
    ([["a.png", *[0.5] * 9, "nan"]], None, "fractions"),
    ([["a.png", *[0.5] * 9, "left"]], None, "must be numbers"),
    ([["a.png", *[0.5] * 10], ["a.png", *[0.4] * 10]], None, "lm.csv:3: duplicate row"),
])
def test_landmark_file_errors(tmp_path, rows, header, match):
    f = write_csv(tmp_path / "lm.csv", rows, *( [header] if header else []))
    with pytest.raises(DataError, match=match):
        read_landmark_file(f)
    with pytest.raises(DataError, match="does not exist"):
        read_landmark_file(tmp_path / "none.csv")


# ------------------------------------------------------------------ landmarks under augmentation
PTS = torch.tensor([[[0.2, 0.3], [0.6, 0.35], [0.45, 0.55], [0.3, 0.8], [0.7, 0.75]]])


def test_flip_mirrors_and_swaps_left_right():
    cfg = AugmentConfig(hflip=True, crop_scale=None, rotation=0.0, color_jitter=0.0)
    p = sample_params(1, cfg, torch.Generator().manual_seed(0))
    p["flip"] = torch.tensor([True])
    out = augment_landmarks(PTS, p, cfg, 48, 48)
    # x -> 1 - x, then the image-left / image-right pairs swap: eyes (0.4, 0.35), (0.8, 0.3); mouth (0.3, 0.75), (0.7, 0.8)
    want = torch.tensor([[0.4, 0.35], [0.8, 0.3], [0.55, 0.55], [0.3, 0.75], [0.7, 0.8]])
    assert torch.allclose(out[0], want, atol=1e-6), out
    p["flip"] = torch.tensor([False])
    assert torch.allclose(augment_landmarks(PTS, p, cfg, 48, 48), PTS, atol=1e-6)
    assert flip_order(PTS, torch.tensor([True]))[0, 0].tolist() == pytest.approx([0.6, 0.35])


def test_landmarks_follow_the_pixels():
    """A bright dot drawn at each landmark ends up where the transformed landmark says (crop, rotation, flip)."""
    cfg = AugmentConfig(hflip=True, crop_scale=(0.7, 1.0), rotation=15.0, color_jitter=0.0)
    g = torch.Generator().manual_seed(3)
    size = 96
    for trial in range(6):
        p = sample_params(1, cfg, g)
        moved = augment_landmarks(PTS, p, cfg, size, size)[0]
        flipped = bool(p["flip"][0])
        for k in range(5):
            img = torch.zeros(1, 1, size, size)
            x, y = (PTS[0, k] * size).long().tolist()
            img[0, 0, y - 1:y + 2, x - 1:x + 2] = 1.0
            out = apply_params(img, p, cfg)[0, 0]
            yy, xx = divmod(int(out.argmax()), size)
            j = [1, 0, 2, 4, 3][k] if flipped else k  # the dot of point k is listed at j after a flip
            px, py = (moved[j] * size).tolist()
            assert abs(xx + 0.5 - px) <= 2.0 and abs(yy + 0.5 - py) <= 2.0, (trial, k, (xx, yy), (px, py))


# ------------------------------------------------------------------ end to end
def _domain_with_landmarks(root: Path, domain: str, seed: int, with_csv: bool = True) -> str:
    from fairexpr.data.synthetic import generate
    from fairexpr.labels import CANONICAL7

    imgs, labels = generate([4, 3, 4, 5, 4, 4, 4], size=32, channels=1, seed=seed, domain=domain, split="train")
    rows = []
    rng = np.random.default_rng(seed)
    for i, (im, y) in enumerate(zip(imgs, labels)):
        d = root / CANONICAL7[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i:04d}.png")
        pts = np.clip(np.array(ARCFACE_TEMPLATE) + rng.uniform(-0.03, 0.03, size=(5, 2)), 0, 1)
        pts[2, 1] = 0.6 + 0.01 * int(y)  # the nose's y encodes the label: lets tests check row alignment
        rows.append([f"{CANONICAL7[int(y)]}/{i:04d}.png", *pts.ravel()])
    if with_csv:
        write_csv(root / "landmarks.csv", rows)
    return f"folder:{root}"


@pytest.mark.parametrize("method", ["mcd", "dann"])
def test_adapt_with_landmark_head_end_to_end(tmp_path, method, monkeypatch, capsys):
    from fairexpr.cli import main
    from fairexpr import checkpoint as ck
    from fairexpr.models.agra import AGRANet

    seen: list = []  # landmarks the network got in training mode (None = template fallback)
    real_ff = AGRANet.forward_features

    def spy(self, x, landmarks=None):
        if self.training:
            seen.append(None if landmarks is None else tuple(landmarks.shape))
        return real_ff(self, x, landmarks)

    monkeypatch.setattr(AGRANet, "forward_features", spy)

    src = _domain_with_landmarks(tmp_path / "lab", "lab", 0)
    tgt = _domain_with_landmarks(tmp_path / "wild", "wild", 1)
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))
    lm = lambda d: "{landmarks: " + str(tmp_path / d / "landmarks.csv") + "}"  # noqa: E731
    out = tmp_path / f"run_{method}"
    common = ["method.cls_loss=difc", "method.t1_epochs=1", "train.epochs=2", "train.batch_size=8",
              "train.iters_per_epoch=2", "train.eval_batch_size=64", "train.progress=false", "train.max_minutes=null",
              "model.name=agra_net", "model.pretrained=null",
              "model.kwargs={backbone: resnet18, crop_width: 8}",  # small_input: true from the CPU config
              "data.image_size=32", "data.channels=1", "data.val=null", "data.train_split=null",
              "data.target_split=null", "data.target_eval_split=null", "schedule.name=constant", "optim.lr=0.01",
              "method.num_k=1" if method == "mcd" else "method.disc_hidden=16"]
    rc = main(["adapt", "--config", f"configs/difc_{method}_cpu.yaml", "--source", src, "--target", tgt,
               "--target-eval", tgt, "--out", str(out), "--json", *common, f"data.train_options={lm('lab')}",
               f"data.target_options={lm('wild')}", f"data.target_eval_options={lm('wild')}"])
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    assert [h["difc_phase"] for h in result["history"]] == [1, 2]
    assert result["eval"]["target_eval"]["n"] == 28
    # every training forward got the batch's landmarks (source + target for the joint passes)
    assert seen and None not in seen and all(sh[1:] == (5, 2) for sh in seen), seen[:5]
    model, side = ck.load_model(out)  # the saved network rebuilds; without landmarks it uses the template
    assert side["model"]["kwargs"].get("backbone") == "agra_net" or side["model"]["name"] == "agra_net"
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    capsys.readouterr()
    # without landmark files the landmarks=data head is refused with the fix spelled out
    rc = main(["adapt", "--config", f"configs/difc_{method}_cpu.yaml", "--source", src, "--target", tgt,
               "--out", str(tmp_path / "bad"), *common])
    assert rc != 0
    err = capsys.readouterr().err
    assert "landmarks=data" in err and "data.<role>_options.landmarks" in err, err


def test_splits_carry_row_aligned_landmarks(tmp_path):
    from fairexpr.config import load_config
    from fairexpr.engine.data import build_splits

    src = _domain_with_landmarks(tmp_path / "lab", "lab", 0)
    cfg = load_config(None, [f"data.train={src}", "data.train_split=null", "data.val=holdout:0.25",
                             "data.image_size=32", "data.channels=1",
                             "data.train_options={landmarks: " + str(tmp_path / "lab" / "landmarks.csv") + "}"])
    splits = build_splits(cfg, progress=False)
    tr, va = splits["train"], splits["val"]
    assert tr.landmarks is not None and tr.landmarks.shape == (len(tr), 5, 2)
    assert va.landmarks is not None and len(va.landmarks) == len(va)
    # each image keeps its own row through the holdout: the nose's y encodes the image's label
    for sp in (tr, va):
        assert torch.allclose(sp.landmarks[:, 2, 1], 0.6 + 0.01 * sp.labels.float(), atol=1e-6)


def test_supervised_passes_landmarks_and_other_methods_are_refused(tmp_path, monkeypatch):
    from fairexpr.config import ConfigError, load_config
    from fairexpr.engine import fit
    from fairexpr.methods.supervised import Supervised
    from fairexpr.models.agra import AGRANet

    src = _domain_with_landmarks(tmp_path / "lab", "lab", 0)
    over = [f"data.train={src}", "data.train_split=null", "data.val=null", "data.test=null", "data.image_size=32",
            "data.channels=1", "data.train_options={landmarks: " + str(tmp_path / "lab" / "landmarks.csv") + "}",
            "model.name=agra_net", "model.kwargs={backbone: resnet18, small_input: true, crop_width: 8}",
            "train.epochs=1", "train.batch_size=8", "train.iters_per_epoch=2", "train.progress=false"]
    seen: list = []
    real_ff = AGRANet.forward_features
    monkeypatch.setattr(AGRANet, "forward_features",
                        lambda self, x, landmarks=None: (seen.append(landmarks is not None), real_ff(self, x, landmarks))[1])
    fit(load_config(None, over), tmp_path / "sup")
    assert seen and all(seen)
    monkeypatch.setattr(Supervised, "accepts_landmarks", False)
    with pytest.raises(ConfigError, match="does not pass them"):
        fit(load_config(None, over), tmp_path / "refused")


def test_agra_net_exports_to_onnx_with_template_landmarks():
    import io

    ort = pytest.importorskip("onnxruntime")
    net = create_model("agra_net", num_classes=7, backbone="resnet18", backbone_kwargs={"small_input": True},
                       in_chans=1, crop_width=8).eval()
    buf = io.BytesIO()
    torch.onnx.export(net, torch.randn(1, 1, 48, 48), buf, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}}, opset_version=17, dynamo=False)
    x = np.random.default_rng(0).standard_normal((3, 1, 48, 48)).astype("float32")
    got = ort.InferenceSession(buf.getvalue()).run(None, {"input": x})[0]
    with torch.no_grad():
        assert np.abs(got - net(torch.from_numpy(x)).numpy()).max() < 1e-4
