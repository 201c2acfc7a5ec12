"""Weight loaders: torchvision, MS-Celeb ResNet-18 (SCN/RUL), face.evoLVe / POSTER++ IR-50,
POSTER++ MobileFaceNet, the real MobileNetV2 file, and refusal of unsafe/wrong files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from fairexpr.models import ModelError, create_model

MOBILENET_FILE = Path("/work/shared/weights/mobilenet_v2-b0353104.pth")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _rand_like_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand_like(v) + 0.5
        else:
            out[k] = torch.randn_like(v) * 0.05
    return out


def test_torchvision_resnet18_file_matches_torchvision_outputs(tmp_path):
    tv = torchvision.models.resnet18(num_classes=1000).eval()
    tv.load_state_dict(_rand_like_state(tv.state_dict()))
    torch.save(tv.state_dict(), tmp_path / "resnet18-imagenet.pth")
    ours = create_model("resnet18", num_classes=1000, pretrained=tmp_path / "resnet18-imagenet.pth").eval()
    rep = ours.load_report
    assert not rep.missing and not rep.unexpected and not rep.mismatched
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))
    # another number of classes: fc is dropped and reported, the trunk still matches
    seven = create_model("resnet18", num_classes=7, pretrained=tmp_path / "resnet18-imagenet.pth").eval()
    assert {k for k, _, _ in seven.load_report.mismatched} == {"fc.weight", "fc.bias"}
    assert set(seven.load_report.missing) == {"fc.weight", "fc.bias"}
    trunk = torch.nn.Sequential(*list(tv.children())[:-1])
    with torch.no_grad():
        torch.testing.assert_close(seven.forward_features(x), trunk(x).flatten(1))


def test_grey_model_sums_first_conv(tmp_path):
    tv = torchvision.models.resnet18().eval()
    tv.load_state_dict(_rand_like_state(tv.state_dict()))
    torch.save(tv.state_dict(), tmp_path / "w.pth")
    grey = create_model("resnet18", in_chans=1, pretrained=tmp_path / "w.pth").eval()
    assert any("summed" in n for n in grey.load_report.notes)
    g = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # 1-channel g == RGB (g, g, g) by linearity of the summed kernel
        rgb_trunk = torch.nn.Sequential(*list(tv.children())[:-1])
        torch.testing.assert_close(grey.forward_features(g), rgb_trunk(g.repeat(1, 3, 1, 1)).flatten(1))


def test_small_input_stem_reports_mismatched_conv1(tmp_path):
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "w.pth")
    m = create_model("resnet18", small_input=True, pretrained=tmp_path / "w.pth")
    assert ("conv1.weight", (64, 3, 7, 7), (64, 3, 3, 3)) in m.load_report.mismatched
    assert m.pretrained_cfg["input_size"] == (48, 48)


def _msceleb_checkpoint(n_identities: int = 11) -> tuple[dict, dict[str, torch.Tensor]]:
    """Shaped like SCN/RUL's resnet18_msceleb.pth: {'state_dict': {'module.<torchvision key>': ...}}
    with an identity classifier ``fc`` (MS-Celeb classes, here 11 to keep it small)."""
    tv = torchvision.models.resnet18(num_classes=n_identities)
    sd = _rand_like_state(tv.state_dict())
    return {"epoch": 30, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, sd


def test_cbam_resnet18_loads_msceleb_with_cbam_reported_fresh(tmp_path):
    ckpt, sd = _msceleb_checkpoint()
    torch.save(ckpt, tmp_path / "resnet18_msceleb.pth")
    m = create_model("cbam_resnet18", num_classes=7, pretrained=tmp_path / "resnet18_msceleb.pth")
    rep = m.load_report
    cbam_keys = [k for k in m.state_dict() if ".cbam." in k and not k.endswith("num_batches_tracked")]
    assert len(cbam_keys) == 8 * 9  # 8 blocks x (fc1 w,b; fc2 w,b; spatial conv w; bn w,b,mean,var)
    assert sorted(rep.fresh) == sorted(cbam_keys)
    assert set(rep.missing) - set(rep.fresh) == {"fc.weight", "fc.bias"}
    assert not rep.unexpected
    torch.testing.assert_close(m.state_dict()["layer3.1.conv2.weight"], sd["layer3.1.conv2.weight"])
    assert "freshly initialised 72" in rep.summary()


def test_resnet18_loads_scn_sequential_trunk(tmp_path):
    _, sd = _msceleb_checkpoint()
    idx = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}
    scn = {}
    for k, v in sd.items():
        top, rest = k.split(".", 1)
        scn[f"module.features.{idx[top]}.{rest}" if top in idx else f"module.{k}"] = v
    torch.save({"state_dict": scn}, tmp_path / "scn.pth")
    m = create_model("resnet18", pretrained=tmp_path / "scn.pth")
    assert set(m.load_report.missing) == {"fc.weight", "fc.bias"}
    assert any("Sequential-trunk" in n for n in m.load_report.notes)
    torch.testing.assert_close(m.state_dict()["layer2.0.downsample.0.weight"], sd["layer2.0.downsample.0.weight"])


# ---------------------------------------------------------------- IR-50
def _evolve_ir50_state(stage_names: str = "global", stages: int = 4, output_layer: bool = True) -> dict[str, torch.Tensor]:
    """Keys/shapes of face.evoLVe ``Backbone(50, 'ir')`` written out from the reference definition
    (bottleneck_IR: shortcut MaxPool or Conv1x1+BN; res_layer BN, Conv3x3, PReLU, Conv3x3, BN)."""
    sd: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        sd.update({f"{prefix}.weight": torch.rand(c) + 0.5, f"{prefix}.bias": torch.randn(c) * 0.1,
                   f"{prefix}.running_mean": torch.randn(c) * 0.1, f"{prefix}.running_var": torch.rand(c) + 0.5,
                   f"{prefix}.num_batches_tracked": torch.tensor(100)})

    sd["input_layer.0.weight"] = torch.randn(64, 3, 3, 3) * 0.1
    bn("input_layer.1", 64)
    sd["input_layer.2.weight"] = torch.full((64,), 0.25)
    g, in_c = 0, 64
    for s, (units, depth) in enumerate(zip((3, 4, 14, 3), (64, 128, 256, 512))):
        if s >= stages:
            break
        for j in range(units):
            p = f"body.{g}" if stage_names == "global" else f"body{s + 1}.{j}"
            if in_c != depth:
                sd[f"{p}.shortcut_layer.0.weight"] = torch.randn(depth, in_c, 1, 1) * 0.05
                bn(f"{p}.shortcut_layer.1", depth)
            bn(f"{p}.res_layer.0", in_c)
            sd[f"{p}.res_layer.1.weight"] = torch.randn(depth, in_c, 3, 3) * 0.02
            sd[f"{p}.res_layer.2.weight"] = torch.full((depth,), 0.25)
            sd[f"{p}.res_layer.3.weight"] = torch.randn(depth, depth, 3, 3) * 0.02
            bn(f"{p}.res_layer.4", depth)
            in_c, g = depth, g + 1
    if output_layer:
        bn("output_layer.0", 512)
        sd["output_layer.3.weight"] = torch.randn(512, 512 * 7 * 7) * 0.001
        sd["output_layer.3.bias"] = torch.zeros(512)
        bn("output_layer.4", 512)
    return sd


def test_ir50_loads_face_evolve_ms1m_checkpoint(tmp_path):
    sd = _evolve_ir50_state()
    torch.save(sd, tmp_path / "backbone_ir50_ms1m_epoch120.pth")
    m = create_model("ir50", pretrained=tmp_path / "backbone_ir50_ms1m_epoch120.pth")
    rep = m.load_report
    assert set(rep.missing) == {"fc.weight", "fc.bias"}
    assert rep.unexpected and all(k.startswith("output_layer.") for k in rep.unexpected)  # pool='avg'
    torch.testing.assert_close(m.state_dict()["body.23.res_layer.3.weight"], sd["body.23.res_layer.3.weight"])
    full = create_model("ir50", pool="output_layer", pretrained=tmp_path / "backbone_ir50_ms1m_epoch120.pth").eval()
    assert set(full.load_report.missing) == {"fc.weight", "fc.bias"} and not full.load_report.unexpected
    with torch.no_grad():
        assert full.forward_features(torch.randn(1, 3, 112, 112)).shape == (1, 512)
    with pytest.raises(ModelError, match="112x112"):
        full.forward_features(torch.randn(1, 3, 64, 64))


def test_ir50_loads_poster_ir50_pth_and_gives_multiscale_maps(tmp_path):
    sd = _evolve_ir50_state(stage_names="poster", stages=3, output_layer=False)
    assert "body2.0.shortcut_layer.0.weight" in sd and "body3.13.res_layer.4.running_var" in sd
    torch.save(sd, tmp_path / "ir50.pth")
    m = create_model("ir50", stages=3, pretrained=tmp_path / "ir50.pth").eval()
    assert set(m.load_report.missing) == {"fc.weight", "fc.bias"} and not m.load_report.unexpected
    torch.testing.assert_close(m.state_dict()["body.3.res_layer.1.weight"], sd["body2.0.res_layer.1.weight"])
    torch.testing.assert_close(m.state_dict()["body.20.res_layer.4.bias"], sd["body3.13.res_layer.4.bias"])
    with torch.no_grad():
        maps = m.forward_features_multiscale(torch.randn(1, 3, 112, 112))
    assert [tuple(t.shape[1:]) for t in maps] == [(64, 56, 56), (128, 28, 28), (256, 14, 14)]
    assert m.num_features == 256
    four = create_model("ir50", pretrained=tmp_path / "ir50.pth")  # stage 4 absent from the file: reported
    assert any(k.startswith("body.21.") for k in four.load_report.missing)


# ---------------------------------------------------------------- MobileFaceNet
def test_mobilefacenet_loads_poster_checkpoint_layout(tmp_path):
    ref = create_model("mobilefacenet")
    sd = _rand_like_state(ref.state_dict())
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}  # POSTER++ file has no FER classifier
    expected_shapes = {  # from POSTER++ models/mobilefacenet.py
        "conv1.conv.weight": (64, 3, 3, 3), "conv2_dw.conv.weight": (64, 1, 3, 3),
        "conv_23.conv.conv.weight": (128, 64, 1, 1), "conv_23.conv_dw.conv.weight": (128, 1, 3, 3),
        "conv_3.model.3.project.bn.running_var": (64,), "conv_4.model.5.conv.prelu.weight": (256,),
        "conv_45.conv.conv.weight": (512, 128, 1, 1), "conv_6_sep.conv.weight": (512, 128, 1, 1),
        "output_layer.conv_6_dw.conv.weight": (512, 1, 7, 7), "output_layer.linear.weight": (136, 512),
        "output_layer.bn.running_mean": (136,),
    }
    for k, shape in expected_shapes.items():
        assert tuple(sd[k].shape) == shape, k
    ckpt = {"epoch": 150, "best_nme": 0.031, "state_dict": {f"module.{k}": v for k, v in sd.items()}}
    torch.save(ckpt, tmp_path / "mobilefacenet_model_best.pth.tar")
    m = create_model("mobilefacenet", pretrained=tmp_path / "mobilefacenet_model_best.pth.tar").eval()
    assert set(m.load_report.missing) == {"fc.weight", "fc.bias"} and not m.load_report.unexpected
    with torch.no_grad():
        maps = m.forward_features_multiscale(torch.randn(2, 3, 112, 112))
    assert [tuple(t.shape[1:]) for t in maps] == [(64, 28, 28), (128, 14, 14), (512, 7, 7)]
    with pytest.raises(ModelError, match="112x112"):
        m(torch.randn(1, 3, 96, 96))


# ---------------------------------------------------------------- real file, refusals
@pytest.mark.skipif(not MOBILENET_FILE.is_file(), reason=f"{MOBILENET_FILE} not present")
@pytest.mark.parametrize("kw", [{}, {"small_input": True, "in_chans": 1}])
def test_mobilenet_v2_real_imagenet_file(kw):
    m = create_model("mobilenet_v2", num_classes=7, pretrained=MOBILENET_FILE, **kw)
    rep = m.load_report
    backbone = [k for k in m.state_dict() if k.startswith("features.") and not k.endswith("num_batches_tracked")]
    assert len(backbone) == 260 and set(backbone) <= set(rep.loaded)  # every backbone tensor matched
    assert set(rep.missing) == {"classifier.1.weight", "classifier.1.bias"} and not rep.unexpected
    file_sd = torch.load(MOBILENET_FILE, weights_only=True)
    torch.testing.assert_close(m.state_dict()["features.17.conv.2.weight"], file_sd["features.17.conv.2.weight"])
    m.eval()
    x = torch.randn(2, m.pretrained_cfg["in_chans"], 48, 48)
    with torch.no_grad():
        assert m(x).shape == (2, 7) and torch.isfinite(m(x)).all()
        assert create_model("mobilenet_v2", small_input=True).eval()(torch.randn(1, 3, 112, 112)).shape == (1, 7)


def test_unsafe_pickle_is_refused(tmp_path):
    torch.save({"state_dict": torchvision.models.resnet18().state_dict(), "args": _Opaque()}, tmp_path / "pickled.pth")
    with pytest.raises(ModelError, match="weights_only"):
        create_model("resnet18", pretrained=tmp_path / "pickled.pth")


def test_wrong_file_is_an_error_not_a_silent_load(tmp_path):
    torch.save({"totally.other.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match="no tensor in this file matches"):
        create_model("ir50", pretrained=tmp_path / "other.pth")


class _Opaque:
    pass
