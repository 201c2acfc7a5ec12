"""Cross-dataset label alignment in the engine: 8-class CK+-style labels into the 7-class space."""
import torch

from fairexpr.engine.data import Split, _remap
from fairexpr.labels import CANONICAL7, CANONICAL8


def test_remap_drops_absent_classes_keeps_unlabelled_and_counts():
    soft = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1.0], [0.5, 0, 0, 0, 0, 0, 0, 0.5], [1 / 8] * 8,
                         [0, 0, 0, 0, 0, 0, 1.0, 0], [0, 0, 0, 0, 0, 0, 0, 1.0]])
    sp = Split("t", "x", None, torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1), torch.tensor([7, 0, -1, 6, 7]),
               CANONICAL8, soft_labels=soft)
    out = _remap(sp, CANONICAL7)
    assert out.labels.tolist() == [0, -1, 6]
    assert out.images.flatten().tolist() == [1, 2, 3]  # the images travel with their labels
    assert out.info["dropped_absent_classes"] == {"contempt": 2}
    assert out.classes == CANONICAL7
    # soft labels lose the contempt column and are renormalised
    torch.testing.assert_close(out.soft_labels[0], torch.tensor([1.0, 0, 0, 0, 0, 0, 0]))
    torch.testing.assert_close(out.soft_labels[1], torch.full((7,), 1 / 7))
