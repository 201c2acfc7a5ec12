"""dlib_resnet29: the .dat reader (hand-decoded integers/floats), the network's shapes and gradients, exact parity
with dlib's own descriptor (dlib-bin), and a face-verification sanity check on real CK+ faces."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fairexpr.models import create_model
from fairexpr.models import dlib_resnet as DR
from fairexpr.models.registry import ModelError


def have_dat() -> bool:
    try:
        DR.dlib_model_file()
        return True
    except ModelError:
        return False


needs_dat = pytest.mark.skipif(not have_dat(), reason="face_recognition_models not installed (pip install 'fairexpr[faces]')")


# ------------------------------------------------------------------------------------------- serialization
def test_dlib_integer_float_and_string_encoding_by_hand():
    s = DR._Stream(b"\x01\x05" b"\x81\x04" b"\x02\x80\x12" b"\x00" b"\x01\x10\x81\x04" b"\x01\x03abc" b"1", "x")
    assert s.int() == 5 and s.int() == -4 and s.int() == 0x1280 == 4736 and s.int() == 0
    assert s.float() == 16 * 2.0 ** -4 == 1.0
    assert s.peek_name() == "abc" and s.str() == "abc" and s.bool() is True
    t = DR._Stream(b"\x01\x02" + b"\x01\x02\x01\x01\x01\x01\x01\x01" + np.array([1.5, -2.0], "<f4").tobytes(), "t")
    assert t.tensor().tolist() == [[[[1.5]]], [[[-2.0]]]]
    with pytest.raises(ModelError, match="bad integer control byte"):
        DR._Stream(b"\x7f", "x").int()


def test_add_padded_zero_pads_channels_rows_and_cols_at_the_end():
    a = torch.ones(1, 1, 2, 2)
    b = torch.full((1, 2, 3, 3), 2.0)
    out = DR.add_padded(a, b)
    assert out.shape == (1, 2, 3, 3)
    assert out[0, 0, :2, :2].eq(3).all() and out[0, 0, 2].eq(2).all() and out[0, 0, :, 2].eq(2).all()
    assert out[0, 1].eq(2).all()


def test_a_file_that_is_not_dlibs_is_refused(tmp_path):
    f = tmp_path / "x.dat"
    f.write_bytes(b"\x01\x01\x01\x05hello")
    with pytest.raises(ModelError, match="not a dlib face-recognition model file"):
        DR.read_dlib_dat(f)
    with pytest.raises(ModelError, match="does not exist"):
        DR.read_dlib_dat(tmp_path / "missing.dat")


# ------------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("size, chans, stage, feat", [(150, 3, 4, 256), (112, 1, 4, 256), (64, 1, 3, 256), (48, 1, 2, 128)])
def test_shapes_and_gradients(size, chans, stage, feat):
    m = create_model("dlib_resnet29", num_classes=7, in_chans=chans, feature_stage=stage)
    x = torch.randn(2, chans, size, size, requires_grad=True)
    f = m.forward_features(x)
    assert f.shape == (2, feat) and m.num_features == feat
    out = m(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert m.conv1.weight.grad is not None and m.conv1.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    if size >= DR.MIN_SIDE[4]:
        assert m.descriptor(x.detach()).shape == (2, 128)
    else:
        with pytest.raises(ModelError, match="too small for stage 4"):
            m.descriptor(x.detach())
    n = sum(p.numel() for n_, p in m.named_parameters() if not n_.startswith("head"))
    assert 5.5e6 < n < 5.7e6  # 5.6 M parameters (29 convolutions + affine + the 128-d fc)


def test_bad_options():
    with pytest.raises(ModelError, match="feature_stage must be 2, 3 or 4"):
        create_model("dlib_resnet29", feature_stage=1)
    with pytest.raises(ModelError, match=r"too small for stage 4 \(needs >= 103 px"):
        create_model("dlib_resnet29")(torch.zeros(1, 3, 64, 64))


@needs_dat
def test_reader_finds_the_whole_network():
    t = DR.read_dlib_dat(DR.dlib_model_file())
    assert len(t["conv"]) == 29 and len(t["affine"]) == 29 and t["fc"].shape == (128, 256)
    assert [c[0].shape for c in t["conv"][:2]] == [(32, 3, 7, 7), (32, 32, 3, 3)]
    assert [(c[2], c[3]) for c in t["conv"]].count((2, 0)) == 5  # the stem + four stride-2 down convolutions


# ------------------------------------------------------------------------------------------- parity with dlib
@needs_dat
def test_descriptor_equals_dlibs_on_a_real_face_chip(utk_face):
    dlib = pytest.importorskip("dlib", reason="dlib-bin not installed: the parity test needs dlib's own descriptor")
    models = DR.dlib_model_file().parent
    img = utk_face
    r = dlib.get_frontal_face_detector()(img, 1)[0]
    chip = dlib.get_face_chip(img, dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))(img, r), 150, 0.25)
    rec = dlib.face_recognition_model_v1(str(DR.dlib_model_file()))
    for chans in (3, 1):
        m = create_model("dlib_resnet29", in_chans=chans, pretrained="dlib").eval()
        src = chip if chans == 3 else np.asarray(__import__("PIL.Image").Image.fromarray(chip).convert("L"))
        ref = np.array(rec.compute_face_descriptor(np.ascontiguousarray(src if chans == 3 else np.repeat(src[..., None], 3, 2))))
        x = torch.from_numpy(src.astype(np.float32) / 255)
        x = x.permute(2, 0, 1)[None] if chans == 3 else x[None, None]
        cfg = m.pretrained_cfg
        x = (x - torch.tensor(cfg["mean"]).view(1, -1, 1, 1)) / torch.tensor(cfg["std"]).view(1, -1, 1, 1)
        with torch.no_grad():
            ours = m.descriptor(x)[0].double().numpy()
        assert np.abs(ours - ref).max() <= 1e-5, (chans, np.abs(ours - ref).max())


@pytest.fixture(scope="module")
def utk_face(real_data):
    from PIL import Image

    files = sorted((real_data / "utkface" / "crop_part1").glob("*.jpg"))
    if not files:
        pytest.skip("UTKFace crops missing")
    return np.asarray(Image.open(files[5]).convert("RGB"))


@needs_dat
def test_ckplus_same_subject_pairs_are_closer(real_data):
    """One frame per CK+ sequence (327), descriptors of the grey 48x48 crops upscaled to 150: pairs of the same
    subject (different expressions) are closer than pairs of different subjects (ROC AUC; measured 0.988)."""
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    root = real_data / "ckplus" / "CK+48"
    seqs: dict[tuple[str, str], Path] = {}
    for f in sorted(root.glob("*/*.png")):
        s = re.match(r"(S\d+)_(\d+)_", f.name)
        seqs.setdefault((s.group(1), s.group(2)), f)
    m = create_model("dlib_resnet29", in_chans=1, pretrained="dlib").eval()
    mean, std = m.pretrained_cfg["mean"][0], m.pretrained_cfg["std"][0]
    x = np.stack([(np.asarray(Image.open(f).convert("L").resize((150, 150), Image.BICUBIC), np.float32) / 255 - mean) / std
                  for f in seqs.values()])
    with torch.no_grad():
        e = torch.cat([m.descriptor(torch.from_numpy(x[i:i + 64])[:, None]) for i in range(0, len(x), 64)]).numpy()
    subj = [k[0] for k in seqs]
    iu = np.triu_indices(len(e), 1)
    dist = np.linalg.norm(e[iu[0]] - e[iu[1]], axis=1)
    same = np.array([subj[i] == subj[j] for i, j in zip(*iu)])
    assert same.sum() > 100 and roc_auc_score(same, -dist) >= 0.9


@needs_dat
def test_cbam_variant_loads_the_face_weights_and_trains_its_attention():
    plain = create_model("dlib_resnet29", in_chans=1, pretrained="dlib")
    cb = create_model("cbam_dlib_resnet29", in_chans=1, pretrained="dlib")
    for (n, p) in plain.named_parameters():
        if not n.startswith("head"):
            assert torch.equal(p, dict(cb.named_parameters())[n]), n
    assert cb.load_report["fresh"] and all(".cbam." in n for n in cb.load_report["fresh"])
    x = torch.randn(2, 1, 112, 112)
    cb(x).sum().backward()
    cbam_grads = [p.grad for n, p in cb.named_parameters() if ".cbam." in n]
    # the attention of every block trains (a few spatial-attention tensors of the 1x1-map last stage get no gradient)
    assert cbam_grads and sum(g is not None and bool(g.abs().sum() > 0) for g in cbam_grads) >= 0.8 * len(cbam_grads)
    with pytest.raises(ModelError, match="cbam_reduction must be a positive int"):
        create_model("cbam_dlib_resnet29", cbam_reduction=0)


@needs_dat
def test_cbam_identity_init_starts_as_dlibs_network():
    plain = create_model("dlib_resnet29", in_chans=1, pretrained="dlib", feature_stage=3).eval()
    ident = create_model("cbam_dlib_resnet29", in_chans=1, pretrained="dlib", feature_stage=3, cbam_init="identity").eval()
    paper = create_model("cbam_dlib_resnet29", in_chans=1, pretrained="dlib", feature_stage=3).eval()
    assert ident.load_report["cbam_init"] == "identity" and paper.load_report["cbam_init"] == "paper"
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        f = plain.forward_features(x)
        torch.testing.assert_close(ident.forward_features(x), f, rtol=0, atol=0)
        # the paper's fresh gates (~0.5 each) scale every residual branch by ~1/4: far from the pretrained features
        assert (paper.forward_features(x) - f).abs().mean() > 0.1 * f.abs().mean()
    with pytest.raises(ModelError, match="cbam_init='identity' given to a network without CBAM"):
        create_model("dlib_resnet29", cbam_init="identity")
    with pytest.raises(ModelError, match="cbam_init must be one of paper, identity"):
        create_model("cbam_dlib_resnet29", cbam_init="ones")


@needs_dat
@pytest.mark.parametrize("recipe", ["ldam_drw_dlib_cpu", "face2exp_dlib_cpu", "cucn_dlib_cpu", "grefel_dlib_cpu"])
def test_the_dlib_recipes_optimiser_keeps_the_unnormalised_network_stable(recipe, real_data):
    """dlib's network has no BatchNorm (it was folded into the affine layers), so fine-tuning is stable only at a
    small step size: SGD at 1e-2 (the SGD recipes' first value) or 1e-3 drove the pooled feature norm to inf/NaN
    within 10 steps and the model to constant outputs. 40 steps of each dlib recipe's optimizer (its LDAM loss where
    it has one, else CE on a linear head) on real FER2013 faces must keep the features finite and within 5x their
    starting norm."""
    from fairexpr.config import load_config
    from fairexpr.data import FERDataset
    from fairexpr.losses import build_loss

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{recipe}.yaml")
    o = cfg["optim"]
    ds = FERDataset.from_spec(f"fer2013:{real_data / 'fer2013'}", "train")
    idx = np.random.default_rng(0).choice(len(ds), 256, replace=False)
    x = torch.stack([torch.from_numpy(np.asarray(ds.load_image(int(i)).resize((64, 64)))).float() / 255 for i in idx])[:, None]
    y = torch.tensor([ds.samples[int(i)].label for i in idx])
    torch.manual_seed(0)
    ldam = cfg["loss"]["name"] == "ldam" and cfg["method"]["name"] == "supervised"
    m = create_model("dlib_resnet29", num_classes=7, pretrained="dlib", in_chans=1, feature_stage=3,
                     head="normed" if ldam else "linear")
    c = m.pretrained_cfg
    x = (x - c["mean"][0]) / c["std"][0]
    crit = build_loss(cfg["loss"] if ldam else "ce", class_counts=np.bincount(y.numpy(), minlength=7).clip(min=1).tolist())
    if o["name"] == "sgd":
        opt = torch.optim.SGD(m.parameters(), lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"],
                              weight_decay=o["weight_decay"])
    else:
        assert o["name"] == "adam"
        opt = torch.optim.Adam(m.parameters(), lr=o["lr"], weight_decay=o["weight_decay"])
    m.train()
    norms = []
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        b = torch.randint(0, len(x), (32,), generator=g)
        f = m.forward_features(x[b])
        loss = crit(m.forward_head(f), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        norms.append(float(f.detach().norm(dim=1).mean()))
    assert all(np.isfinite(norms)) and max(norms) < 5 * norms[0], norms


@needs_dat
@pytest.mark.parametrize("wrapper", ["mcd_net", "afn_net"])
def test_uda_wrappers_take_the_packaged_dlib_weights_by_name(wrapper):
    """`pretrained: dlib` is a name the backbone resolves itself; the MCD/SAFN wrappers hand it on (they used to try to
    read a file called 'dlib')."""
    from fairexpr.models import create_model

    net = create_model(wrapper, 7, pretrained="dlib", backbone="dlib_resnet29", backbone_kwargs={"feature_stage": 3},
                       in_chans=1)
    ref = create_model("dlib_resnet29", 7, pretrained="dlib", feature_stage=3, in_chans=1)
    key = next(k for k, v in ref.state_dict().items() if v.dim() == 4)
    assert torch.equal(net.backbone.state_dict()[key], ref.state_dict()[key])
