"""``train.batchnorm: frozen`` — BatchNorm layers that normalise with their running statistics during training and
never update them (their affine weight and bias still learn), as mmcv's ``norm_eval`` or detectron's FrozenBN.

Why: a network that starts from a converged model (``fairexpr adapt --init``) carries running statistics estimated
over its whole training set. Adaptation methods forward small source+target batches in train mode, so within ~60
steps those statistics are replaced by mixed-domain batch estimates and the network is no longer the model it
started from: measured on the shipped default model (MCD, batches of 32 FER2013 + 32 CK+48 faces, learning rate
1e-12 so that no weight moved) FER2013 PublicTest fell from 64.1 / 62.7 to 62.1 / 58.5 % accuracy / balanced and
CK+48 from 75.0 / 66.4 to 70.9 / 63.4 after two 30-step epochs; with the statistics frozen it stays the model.

Only layers whose statistics came from somewhere are frozen: a layer still at its initial statistics (running mean
0, variance 1, e.g. the fresh BatchNorm of a DANN domain discriminator or of SAFN's AFN bottleneck next to a loaded
backbone) has nothing to keep, and frozen at (0, 1) it would not normalise at all, so it keeps training-mode
behaviour. (Until 2026-12-04 every layer was frozen: the DANN-from-default cells of that day ran with their
discriminator's two BatchNorm layers frozen at (0, 1); :data:`FREEZE_RULE` is part of a benchmark cell's key.)

The freeze is a forward pre-hook on every such ``_BatchNorm`` module that switches the module to evaluation
behaviour just before it runs, so it holds whoever calls ``.train()`` on the network (the engine every epoch, methods
that restore a mode after an inner evaluation) without every such place having to know about it.
"""
from __future__ import annotations

import torch
from torch import nn

#: what ``train.batchnorm: frozen`` freezes (benchmark cells are keyed by it: a changed rule is another cell)
FREEZE_RULE = "loaded-statistics-only"


def _eval_behaviour(module: nn.Module, _args: tuple) -> None:
    module.training = False


def has_initial_statistics(m: nn.modules.batchnorm._BatchNorm) -> bool:
    """True for a layer whose running statistics are still PyTorch's initial ones (mean 0, variance 1) or that
    tracks none: there is nothing to keep."""
    if m.running_mean is None or m.running_var is None:
        return True
    return bool(torch.all(m.running_mean == 0)) and bool(torch.all(m.running_var == 1))


def freeze_batchnorm(network: nn.Module) -> tuple[int, int]:
    """Freeze the running statistics of every BatchNorm layer in ``network`` that carries loaded statistics; returns
    ``(frozen, left_training)``, the latter the layers still at their initial statistics (see the module docstring).
    Idempotent: a layer frozen before is not hooked twice."""
    frozen = fresh = 0
    for m in network.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if getattr(m, "_fairexpr_frozen_stats", False):
                frozen += 1
            elif has_initial_statistics(m):
                fresh += 1
            else:
                m.register_forward_pre_hook(_eval_behaviour)
                m._fairexpr_frozen_stats = True
                frozen += 1
    return frozen, fresh
