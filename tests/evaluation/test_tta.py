"""Flip test-time augmentation: hand-computed example, every place it is offered (Predictor, `fairexpr eval`,
`fairexpr predict`; the engine's ``train.eval_tta`` in tests/engine/test_eval_tta.py), and the errors for
unknown modes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fairexpr.data.base import DataError
from fairexpr.evaluation.tta import check_tta, mean_views, num_views, tta_views
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
    with pytest.raises(ValueError, match="tta must be one of none|hflip, got 'vflip'"):
        check_tta("vflip")
    with pytest.raises(DataError, match="test: tta must be one of"):
        HalvesPredictor("five_crop")
    with pytest.raises(ValueError, match="at least one view"):
        mean_views([])


def test_cli_choices_are_the_tta_modes():
    from fairexpr.cli.common import TTA_CHOICES
    from fairexpr.evaluation.tta import TTA_MODES

    assert TTA_CHOICES == TTA_MODES

