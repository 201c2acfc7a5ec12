"""The ``grefel`` method: options, training steps on random data, predict, checkpoint rebuild."""
from __future__ import annotations

import pytest
import torch

from fairexpr.config import ConfigError
from fairexpr.checkpoint import load_model, save_model
from fairexpr.methods.base import DataInfo, StepContext, get_method

CLASSES = ("anger", "disgust", "fear", "happiness")


def _info(in_chans: int = 1, size: int = 32) -> DataInfo:
    return DataInfo(classes=CLASSES, class_counts=[10, 5, 3, 20], in_chans=in_chans, image_size=size)


def _ctx(step: int = 0) -> StepContext:
    return StepContext(epoch=0, step=step, max_epochs=1, max_steps=None, backward=lambda l: l.backward(),
                       step_optimizer=lambda o: o.step())


def _cfg(name: str = "resnet18", kwargs: dict | None = None, **method) -> dict:
    # plain ResNet-18 stem on 32x32 input (1x1 final map): cheap enough for a few CPU steps
    return {"model": {"name": name, "pretrained": None, "kwargs": kwargs if kwargs is not None else {}},
            "method": {"name": "grefel", **method}}


def test_registered_and_options_validated():
    cls = get_method("grefel")
    assert set(cls.option_defaults) >= {"num_anchors", "use_anchors", "use_mhsa", "lambda_cls", "lambda_anchor",
                                        "lambda_center", "delta", "label_smoothing"}
    with pytest.raises(ConfigError, match="method.bogus"):
        cls(_cfg(bogus=1), _info())
    with pytest.raises(ConfigError, match="method.num_anchors"):
        cls(_cfg(num_anchors=0), _info())
    with pytest.raises(ConfigError, match="method.delta"):
        cls(_cfg(delta=-1.0), _info())
    for bad in (0, -2.0, "wide", True):
        with pytest.raises(ConfigError, match="method.anchor_margin: expected null or a number > 0"):
            cls(_cfg(anchor_margin=bad), _info())
    assert cls(_cfg(anchor_margin=4), _info()).criterion.spread.margin == 4.0
    assert cls(_cfg(), _info()).criterion.spread.margin is None
    with pytest.raises(ConfigError, match="model.kwargs.num_anchors: set it as method.num_anchors"):
        cls(_cfg(kwargs={"num_anchors": 3}), _info())
    # on a plain backbone, head options in model.kwargs go to the reliability head, the rest to the backbone
    m = cls(_cfg(kwargs={"anchor_init": "zeros", "dropout": 0.2}), _info())
    assert m.model_spec["kwargs"]["anchor_init"] == "zeros" and m.model_spec["kwargs"]["backbone_kwargs"] == {"in_chans": 1}
    assert m.model.rb_head.anchors.anchors.abs().sum() == 0


def _train(steps: int, **method) -> list[dict[str, float]]:
    torch.manual_seed(0)
    m = get_method("grefel")(_cfg(num_anchors=3, **method), _info())
    assert m.model_spec["name"] == "reliability_balanced" and m.model_spec["kwargs"]["backbone"] == "resnet18"
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    batch = {"image": torch.randn(8, 1, 32, 32), "label": torch.arange(8) % 4, "index": torch.arange(8)}
    m.train()
    hist = []
    for i in range(steps):
        out = m.training_step(batch, _ctx(i))
        assert set(out) >= {"loss", "l_cls", "l_anchor", "l_center"}
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        hist.append({k: float(v.detach()) for k, v in out.items()})
    return hist


def test_training_steps_decrease_the_loss_on_random_data():
    hist = _train(5)  # Eq. 23 with all lambdas = 1: the center term dominates at first and falls fast
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]
    assert hist[-1]["l_center"] < hist[0]["l_center"]
    assert hist[-1]["l_anchor"] < hist[0]["l_anchor"]  # anchors spread out
    cls_only = _train(8, lambda_anchor=0.0, lambda_center=0.0)  # the classifier memorises the batch
    assert cls_only[-1]["l_cls"] + cls_only[-2]["l_cls"] < 0.5 * (cls_only[0]["l_cls"] + cls_only[1]["l_cls"])
    assert cls_only[-1]["l_anchor"] == 0.0 or cls_only[-1]["loss"] == pytest.approx(cls_only[-1]["l_cls"])


def test_predict_and_checkpoint_rebuild(tmp_path):
    torch.manual_seed(0)
    method = get_method("grefel")(_cfg(num_anchors=2, use_mhsa=False), _info()).eval()
    x = torch.randn(3, 1, 32, 32)
    pred = method.predict(x)
    assert pred["logits"].shape == pred["probs"].shape == (3, 4)
    torch.testing.assert_close(pred["probs"].sum(-1), torch.ones(3))
    torch.testing.assert_close(pred["logits"].softmax(-1), pred["probs"])
    with torch.no_grad():
        torch.testing.assert_close(method.model(x), pred["logits"])  # the deployable network = log L_final
    m = method.model
    save_model(tmp_path, m, {"model": {"name": m.registry_name, "num_classes": 4, "kwargs": m.build_kwargs},
                             "classes": list(CLASSES), "preprocess": {}})
    rebuilt, _ = load_model(tmp_path)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), method.model(x))


def test_grefel_small_one_step_and_ablation_switches():
    torch.manual_seed(0)
    method = get_method("grefel")(_cfg("grefel_small", {}, num_anchors=4, use_mhsa=False), _info(in_chans=3, size=112))
    assert method.model_spec == {"name": "grefel_small",
                                 "kwargs": {"num_anchors": 4, "use_anchors": True, "use_mhsa": False, "delta": 1.0}}
    assert method.model.rb_head.attention is None and method.model.rb_head.anchors.anchors.shape == (4, 4, 192)
    batch = {"image": torch.randn(2, 3, 112, 112), "label": torch.tensor([0, 3]), "index": torch.arange(2)}
    out = method.training_step(batch, _ctx())
    out["loss"].backward()
    assert method.model.rb_head.anchors.anchors.grad.abs().sum() > 0
    pred = method.predict(batch["image"])
    assert pred["embedding"].shape == (2, 192)


def test_head_lr_mult_puts_the_reliability_head_in_its_own_group():
    cls = get_method("grefel")
    assert cls.uses_head_lr_mult  # the engine refuses head_lr_mult != 1 for methods that ignore it
    one = cls(_cfg(num_anchors=2), _info())
    (g,) = one.parameter_groups(1e-3)
    assert g["lr"] == 1e-3 and len(g["params"]) == len([p for p in one.parameters() if p.requires_grad])
    m = cls({**_cfg(num_anchors=2), "optim": {"head_lr_mult": 5.0}}, _info())
    slow, fast = m.parameter_groups(1e-4)
    assert (slow["name"], fast["name"]) == ("backbone", "rb_head")
    assert slow["lr"] == pytest.approx(1e-4) and fast["lr"] == pytest.approx(5e-4)
    head_ids = {id(p) for p in m.model.rb_head.parameters()}
    assert {id(p) for p in fast["params"]} == head_ids  # anchors, MHSA branches and the primary classifier
    assert any(p is m.model.rb_head.anchors.anchors for p in fast["params"])
    assert not head_ids & {id(p) for p in slow["params"]}
    assert len(slow["params"]) + len(fast["params"]) == len([p for p in m.parameters() if p.requires_grad])
    assert all(id(p) not in head_ids for p in m.model.backbone.parameters())



def test_data_anchor_init_sets_anchors_from_the_first_batch_and_survives_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    method = get_method("grefel")(_cfg(kwargs={"anchor_init": "data", "anchor_init_std": 1e-6}, num_anchors=2,
                                       lambda_center=0.01), _info())
    anchors = method.model.rb_head.anchors
    assert method.model_spec["kwargs"]["anchor_init"] == "data" and anchors.needs_init
    batch = {"image": torch.randn(8, 1, 32, 32), "label": torch.arange(8) % 4, "index": torch.arange(8)}
    method.train()
    out = method.training_step(batch, _ctx())
    assert not anchors.needs_init
    # BatchNorm in train mode: the features of this batch are what the anchors were set from
    feats = method.model.forward_features(batch["image"]).detach()
    means = torch.stack([feats[batch["label"] == c].mean(0) for c in range(4)])
    torch.testing.assert_close(anchors.anchors.data, means.unsqueeze(1).expand(4, 2, -1), atol=1e-4, rtol=1e-4)
    # every embedding now sits near its own class's anchors: the centre loss starts small, not at ‖e‖² / √D
    assert float(out["l_center"]) < 0.5 * float(feats.pow(2).sum(1).mean() / feats.shape[1] ** 0.5)
    out["loss"].backward()
    assert anchors.anchors.grad.abs().sum() > 0
    m = method.model
    save_model(tmp_path, m, {"model": {"name": m.registry_name, "num_classes": 4, "kwargs": m.build_kwargs},
                             "classes": list(CLASSES), "preprocess": {}})
    rebuilt, _ = load_model(tmp_path)
    assert not rebuilt.rb_head.anchors.needs_init
    assert torch.equal(rebuilt.rb_head.anchors.anchors, anchors.anchors)
