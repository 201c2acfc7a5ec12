"""Flip and crop test-time augmentation: hand-computed examples, every place it is offered (Predictor, `fairexpr eval`,
`fairexpr predict`; the engine's ``train.eval_tta`` in tests/engine/test_eval_tta.py), and the errors for
unknown modes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fairexpr.data.base import DataError
from fairexpr.evaluation.tta import (CROP_FRACTION, check_tta, crop_box, crop_landmarks, crop_resize, mean_views,
                                     num_views, resize_matrix, tta_label, tta_views)
from fairexpr.inference.predictor import Predictor
from fairexpr.inference.preprocess import Preprocess


class HalvesPredictor(Predictor):
    """Logits ``[mean(left half), mean(right half), 0]`` of a 1x2x2 image: the mirror swaps the first two."""

    backend = "test"

    def __init__(self, tta="none", temperature=1.0):
        self.classes = ("a", "b", "c")
        self.preprocess = Preprocess.from_sidecar({"input_size": [2, 2], "in_chans": 1, "mean": [0.0], "std": [1.0]}, "t")
        self.temperature = temperature
        self._set_tta(tta, "test")

    def logits(self, batch):
        return np.stack([batch[:, 0, :, 0].mean(1), batch[:, 0, :, 1].mean(1), np.zeros(len(batch))], 1)


def test_hflip_tta_hand_computed():
    # left column 2, right column 1: z = [2, 1, 0]; mirrored z' = [1, 2, 0]
    x = np.array([[[[2.0, 1.0], [2.0, 1.0]]]], np.float32)
    plain = HalvesPredictor().predict_batch(x)
    e = np.exp([2.0, 1.0, 0.0])
    np.testing.assert_allclose(plain.probs[0], e / e.sum(), rtol=1e-6)  # [7.389, 2.718, 1] / 11.107 = [0.66524, 0.24473, 0.09003]
    tta = HalvesPredictor("hflip").predict_batch(x)
    # p = (softmax([2,1,0]) + softmax([1,2,0])) / 2 = [0.454985, 0.454985, 0.090031]; z = [1.5, 1.5, 0]
    np.testing.assert_allclose(tta.probs[0], [0.454985, 0.454985, 0.090031], atol=1e-6)
    np.testing.assert_allclose(tta.logits[0], [1.5, 1.5, 0.0])
    # temperature is applied per view before averaging: T=2 -> softmax([1, .5, 0]) and softmax([.5, 1, 0])
    t2 = HalvesPredictor("hflip", temperature=2.0).predict_batch(x)
    s = np.exp([1.0, 0.5, 0.0]) / np.exp([1.0, 0.5, 0.0]).sum()
    np.testing.assert_allclose(t2.probs[0], [(s[0] + s[1]) / 2, (s[0] + s[1]) / 2, s[2]], atol=1e-6)
    assert HalvesPredictor("hflip").describe()["tta"] == "hflip"


def test_tta_views_numpy_torch_and_landmarks():
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    (a, _), (b, _) = tta_views(x, "hflip")
    assert a is x and b.tolist() == [[[[2, 1, 0], [5, 4, 3]]]]
    t = torch.from_numpy(x)
    assert torch.equal(tta_views(t, "hflip")[1][0], torch.from_numpy(b))
    assert len(tta_views(x, "none")) == num_views("none") == 1 and num_views("hflip") == 2
    lm = torch.tensor([[[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]])
    flipped = tta_views(t, "hflip", lm)[1][1]
    # x -> 1 - x, then left/right pairs swapped so index 0 stays the image-left eye
    assert torch.allclose(flipped, torch.tensor([[[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]]))
    lm2 = torch.tensor([[[0.2, 0.1], [0.6, 0.2], [0.4, 0.5], [0.3, 0.7], [0.9, 0.8]]])
    f2 = tta_views(t, "hflip", lm2)[1][1]
    assert torch.allclose(f2, torch.tensor([[[0.4, 0.2], [0.8, 0.1], [0.6, 0.5], [0.1, 0.8], [0.7, 0.7]]]))
    assert torch.equal(lm2, torch.tensor([[[0.2, 0.1], [0.6, 0.2], [0.4, 0.5], [0.3, 0.7], [0.9, 0.8]]]))  # not in place
    np.testing.assert_allclose(tta_views(x, "hflip", lm2.numpy())[1][1], f2.numpy())


def test_unknown_modes_are_clear_errors():
    assert check_tta(None) == "none"
    with pytest.raises(ValueError, match="tta must be one of none|hflip|crops, got 'vflip'"):
        check_tta("vflip")
    with pytest.raises(DataError, match="test: tta must be one of"):
        HalvesPredictor("five_crop")
    with pytest.raises(ValueError, match="at least one view"):
        mean_views([])


def test_cli_choices_are_the_tta_modes():
    from fairexpr.cli.common import TTA_CHOICES
    from fairexpr.evaluation.tta import TTA_MODES

    assert TTA_CHOICES == TTA_MODES



def test_resize_matrix_by_hand_and_against_interpolate():
    import torch.nn.functional as F

    # 2 -> 4 samples, align_corners=False: sources (i + .5) / 2 - .5 = -.25 (clamped to 0), .25, .75, 1.25 (-> 1)
    np.testing.assert_allclose(resize_matrix(2, 4), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    assert np.allclose(resize_matrix(5, 5), np.eye(5))
    x = torch.rand(2, 3, 9, 7)
    for c_h, c_w, n_h, n_w in ((9, 7, 12, 10), (8, 6, 9, 7), (5, 5, 9, 7)):
        crop = x[..., :c_h, :c_w]
        ours = torch.tensor(resize_matrix(c_h, n_h), dtype=x.dtype) @ crop @ torch.tensor(
            resize_matrix(c_w, n_w), dtype=x.dtype).T
        ref = F.interpolate(crop, size=(n_h, n_w), mode="bilinear", align_corners=False)
        assert torch.allclose(ours, ref, atol=1e-6)
    with pytest.raises(ValueError, match="positive sizes"):
        resize_matrix(0, 4)
    assert resize_matrix(61, 64) is resize_matrix(61, 64) and not resize_matrix(61, 64).flags.writeable  # cached


def test_crop_boxes_resize_and_landmarks_by_hand():
    assert crop_box(64, 64, 0.9, "centre") == (3, 3, 58, 58)  # round(57.6) = 58, offset 6 -> centre 3
    assert crop_box(64, 64, 0.95, "bottom-right") == (3, 3, 61, 61)
    assert crop_box(10, 20, 0.5, "top-right") == (0, 10, 5, 10)
    with pytest.raises(ValueError, match="crop position must be one of centre"):
        crop_box(8, 8, 0.5, "middle")
    with pytest.raises(ValueError, match="gives a 0x0 crop of a 4x4 image"):
        crop_box(4, 4, 0.1, "centre")
    # the top-left half of a 4x4 image upsampled 2 -> 4: rows and columns weighted [1,0] [.75,.25] [.25,.75] [0,1]
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    r = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    v = crop_resize(x, 0.5, "top-left")
    assert v.dtype == np.float32 and v.shape == x.shape
    np.testing.assert_allclose(v[0, 0], r @ np.array([[0.0, 1], [4, 5]]) @ r.T)
    # NumPy (the ONNX predictor) and torch give the same pixels
    t = torch.from_numpy(x)
    assert torch.allclose(crop_resize(t, 0.5, "bottom-right"), torch.from_numpy(crop_resize(x, 0.5, "bottom-right")))
    # a point at (x, y) = (0.75, 0.25) of the image is at (0.5, 0.5) of the top-right half-size crop
    lm = np.array([[[0.75, 0.25]] * 5])
    np.testing.assert_allclose(crop_landmarks(lm, 4, 4, 0.5, "top-right"), [[[0.5, 0.5]] * 5])
    assert torch.allclose(crop_landmarks(torch.from_numpy(lm), 4, 4, 0.5, "top-right"), torch.full((1, 5, 2), 0.5,
                                                                                                 dtype=torch.float64))


def test_crops_mode_views_and_mean():
    assert CROP_FRACTION == 0.95 and num_views("crops") == 12 and tta_label("crops") == "crop TTA, 12 views"
    assert tta_label("hflip") == "flip TTA" and tta_label("none") == ""
    x = np.random.default_rng(0).random((2, 1, 20, 20)).astype(np.float32)
    lm = np.array([[[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]] * 2)
    views = tta_views(x, "crops", lm)
    assert len(views) == 12 and views[0][0] is x
    # views 1-5: the crops (centre first) of the face; 6-11: the mirrors of views 0-5, landmarks mirrored with them
    np.testing.assert_allclose(views[1][0], crop_resize(x, 0.95, "centre"))
    np.testing.assert_allclose(views[2][1], crop_landmarks(lm, 20, 20, 0.95, "top-left"))
    for k in range(6):
        np.testing.assert_allclose(views[6 + k][0], views[k][0][..., ::-1])
        np.testing.assert_allclose(views[6 + k][1], tta_views(views[k][0], "hflip", views[k][1])[1][1])
    # the predictor averages the twelve views' probabilities: a model that only sees the mean pixel value
    # ([mean of left half, mean of right half, 0] here) gives a hand-checkable mixture
    p = HalvesPredictor("crops")
    img = np.array([[[[2.0, 1.0], [2.0, 1.0]]]], np.float32)
    zs = [p.logits(v) for v, _ in tta_views(img, "crops")]
    expect = np.mean([np.exp(z[0]) / np.exp(z[0]).sum() for z in zs], axis=0)
    np.testing.assert_allclose(p.predict_batch(img).probs[0], expect, rtol=1e-6)
    assert p.describe()["tta"] == "crops"


def test_views_go_through_the_network_stacked():
    """The twelve crop-TTA views of a batch are one network call (chunked at VIEW_BATCH images), with the same result
    as predicting each view on its own."""
    calls = []

    class Counting(HalvesPredictor):
        def logits(self, batch):
            calls.append(len(batch))
            return super().logits(batch)

    x = np.random.default_rng(1).random((3, 1, 2, 2)).astype(np.float32)
    p = Counting("crops")
    got = p.predict_batch(x)
    assert calls == [36]
    zs = [HalvesPredictor().logits(v) for v, _ in tta_views(x, "crops")]
    e = [np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in zs]
    np.testing.assert_allclose(got.probs, np.mean(e, axis=0), rtol=1e-6)
    np.testing.assert_allclose(got.logits, np.mean(zs, axis=0), rtol=1e-6)
    calls.clear()
    p.VIEW_BATCH = 10  # chunks of max(10, batch 3) images: 36 = 10 + 10 + 10 + 6, the same answer
    np.testing.assert_allclose(p.predict_batch(x).probs, got.probs, rtol=1e-6)
    assert calls == [10, 10, 10, 6]
