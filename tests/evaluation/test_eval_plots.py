"""Every figure renders to a real PNG, atomically, and rejects malformed input."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairexpr.evaluation import plots
from fairexpr.evaluation.calibration import reliability_diagram, softmax

CL = ["anger", "disgust", "fear"]


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    assert not list(path.parent.glob(".*.tmp"))  # no temp files left behind


def test_all_plots_render(tmp_path):
    rng = np.random.default_rng(0)
    _png(plots.plot_confusion_matrix([[5, 1, 0], [2, 3, 1], [0, 0, 0]], CL, tmp_path / "cm.png"))
    runs = {"a": [0.5, None, 0.9], "b": [0.7, 0.2, 0.8]}
    _png(plots.plot_per_class_bars(runs, CL, tmp_path / "bars.png"))
    _png(plots.plot_per_class_lines(runs, CL, tmp_path / "lines.png"))
    _png(plots.plot_imbalance([100, 10, 0], CL, tmp_path / "imb.png"))
    z = rng.normal(0, 3, (200, 3))
    y = rng.integers(0, 3, 200)
    before = reliability_diagram(softmax(z), y)
    after = reliability_diagram(softmax(z / 3), y)
    _png(plots.plot_reliability(before, tmp_path / "rel.png", after=after))
    _png(plots.plot_reliability(before, tmp_path / "rel1.png"))
    e = rng.normal(0, 1, (60, 5)) + np.eye(3, 5)[y[:60]] * 4
    _png(plots.plot_tsne(e, y[:60], CL, tmp_path / "tsne.png", max_iter=250))
    df = pd.DataFrame({"epoch": [0, 1, 1, 2], "train_loss": [1.0, 0.9, 0.8, 0.5], "val_accuracy": [0.3, 0.4, 0.45, 0.5]})
    _png(plots.plot_training_curves(df, tmp_path / "curves.png"))
    csv = tmp_path / "metrics.csv"
    df.to_csv(csv, index=False)
    _png(plots.plot_training_curves(csv, tmp_path / "curves2.png"))


def test_tsne_subsamples(tmp_path, monkeypatch):
    seen = {}
    from sklearn import manifold

    real = manifold.TSNE.fit_transform

    def spy(self, x, *a, **k):
        seen["n"] = x.shape[0]
        return real(self, x, *a, **k)

    monkeypatch.setattr(manifold.TSNE, "fit_transform", spy)
    rng = np.random.default_rng(0)
    plots.plot_tsne(rng.normal(size=(300, 4)), rng.integers(0, 3, 300), CL, tmp_path / "t.png", max_points=50, max_iter=250)
    assert seen["n"] == 50


def test_plot_errors(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        plots.plot_confusion_matrix(np.zeros((2, 2)), CL, tmp_path / "x.png")
    with pytest.raises(ValueError, match="'b' has 2 values"):
        plots.plot_per_class_bars({"b": [0.1, 0.2]}, CL, tmp_path / "x.png")
    with pytest.raises(ValueError, match="'epoch' column"):
        plots.plot_training_curves(pd.DataFrame({"loss": [1.0]}), tmp_path / "x.png")
    bad = tmp_path / "bad.csv"
    bad.write_text("")
    with pytest.raises(ValueError, match="bad.csv"):
        plots.plot_training_curves(bad, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least 5 points"):
        plots.plot_tsne(np.zeros((3, 2)), [0, 1, 2], CL, tmp_path / "x.png")
    with pytest.raises(ValueError, match="positive total"):
        plots.plot_imbalance([0, 0, 0], CL, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_curve_columns_of_an_engine_log():
    """The engine's metrics.csv: train_acc is an accuracy, loss_reweighted (0/1 DRW flag) is not a loss."""
    df = pd.DataFrame({"epoch": [1, 2, 3], "lr": [0.1, 0.05, 0.0], "train_loss": [2.0, 1.5, 1.2],
                       "train_acc": [0.4, 0.5, 0.6], "loss_reweighted": [0, 0, 1], "val_accuracy": [0.4, 0.45, 0.5],
                       "val_balanced_accuracy": [0.3, 0.35, 0.4], "val_loss": [1.9, 1.7, 1.6]})
    loss, acc = plots.curve_columns(df)
    assert loss == ["train_loss", "val_loss"]
    assert acc == ["train_acc", "val_accuracy", "val_balanced_accuracy"]
    # a loss that happens to be integer but not 0/1 stays a loss
    assert plots.curve_columns(pd.DataFrame({"epoch": [1, 2], "loss": [3, 2]}))[0] == ["loss"]
