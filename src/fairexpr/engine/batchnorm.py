"""``train.batchnorm: frozen`` — BatchNorm layers that normalise with their running statistics during training and
never update them (their affine weight and bias still learn), as mmcv's ``norm_eval`` or detectron's FrozenBN.

Why: a network that starts from a converged model (``fairexpr adapt --init``) carries running statistics estimated
over its whole training set. Adaptation methods forward small source+target batches in train mode, so within ~60
steps those statistics are replaced by mixed-domain batch estimates and the network is no longer the model it
started from: measured on the shipped default model (MCD, batches of 32 FER2013 + 32 CK+48 faces, learning rate
1e-12 so that no weight moved) FER2013 PublicTest fell from 64.1 / 62.7 to 62.1 / 58.5 % accuracy / balanced and
CK+48 from 75.0 / 66.4 to 70.9 / 63.4 after two 30-step epochs; with the statistics frozen it stays the model.

The freeze is a forward pre-hook on every ``_BatchNorm`` module that switches the module to evaluation behaviour
just before it runs, so it holds whoever calls ``.train()`` on the network (the engine every epoch, methods that
restore a mode after an inner evaluation) without every such place having to know about it.
"""
from __future__ import annotations

from torch import nn


def _eval_behaviour(module: nn.Module, _args: tuple) -> None:
    module.training = False


def freeze_batchnorm(network: nn.Module) -> int:
    """Freeze the running statistics of every BatchNorm layer in ``network``; returns how many layers were frozen.
    Idempotent: a layer frozen before is not hooked twice."""
    n = 0
    for m in network.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if not getattr(m, "_fairexpr_frozen_stats", False):
                m.register_forward_pre_hook(_eval_behaviour)
                m._fairexpr_frozen_stats = True
            n += 1
    return n
