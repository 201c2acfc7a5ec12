"""Memory format and mixed precision for training: where they apply and how losses stay in fp32.

``train.memory_format``: ``auto`` (default) trains a network that has 2-D convolutions in ``channels_last``
(NHWC), which lets PyTorch's oneDNN kernels run without layout conversions; ``channels_last`` forces it,
``contiguous`` keeps NCHW. The weights are only *stored* differently: state dicts, checkpoints (made
contiguous when written), resume and ONNX export see the same values, and a checkpoint trained in one format
loads in the other.

``train.precision: bf16-mixed`` runs the networks' forward passes under ``torch.autocast`` in bfloat16
(convolutions and matrix products in bf16); :func:`keep_losses_fp32` makes every network's output float32
before a method computes its losses and runs every loss module with autocast switched off on float32
inputs, so the loss equations are evaluated in full precision. Evaluation (validation, DIFC's target
predictions, the final evaluation) always runs in fp32, so a run's figures equal ``fairexpr eval`` of its
checkpoint.

Where each pays, measured on the 2-core AVX-512 (avx512_bf16) Xeon of ``benchmarks/results/engine_speed.json``
(compute-only ceiling, one thread): MobileNetV2 at 64 px is fastest in fp32 NHWC (1.5x fp32 NCHW; bf16 is
slower there: depthwise convolutions have no bf16 gain); every ResNet-family network is fastest in bf16 NHWC
(ResNet-18 standard stem at 48 px 1.3x its best fp32 format, small-input stem 2.9x, CBAM-ResNet-18 1.4x,
dlib ResNet-29 at 64 px 1.16x), while in fp32 NHWC is *slower* than NCHW for the standard-stem ResNets at
48 px (their 12x12 to 2x2 maps). Hence ``auto`` = NHWC and the ResNet-family recipes set ``bf16-mixed``
(test accuracy unchanged: ``benchmarks/results/precision_parity.md``); a ResNet trained in fp32 at 48 px
is faster with ``memory_format: contiguous``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import MEMORY_FORMATS, ConfigError


def has_conv2d(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def resolve_memory_format(value: str, module: nn.Module) -> torch.memory_format:
    """``auto`` -> channels_last for a network with 2-D convolutions, else contiguous."""
    if value not in MEMORY_FORMATS:
        raise ConfigError(f"train.memory_format must be {'|'.join(MEMORY_FORMATS)}, got {value!r}")
    if value == "channels_last" or (value == "auto" and has_conv2d(module)):
        return torch.channels_last
    return torch.contiguous_format


def is_loss_module(m: nn.Module) -> bool:
    """A loss module: defined in ``fairexpr.losses`` or a torch loss (``nn.modules.loss._Loss``)."""
    return type(m).__module__.startswith("fairexpr.losses") or isinstance(m, nn.modules.loss._Loss)


def _to_fp32(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    if isinstance(x, dict):
        return {k: _to_fp32(v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a namedtuple
        return type(x)(*(_to_fp32(v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_to_fp32(v) for v in x)
    return x


class FP32Losses:
    """Hooks for mixed precision (:func:`keep_losses_fp32`). A counter tracks how deep the current call is in the
    method's networks: only the outermost network call (``model(x)``, ``model.backbone(x)`` called from a
    method's ``forward_features``...) casts its output to float32, so inside a network activations stay in bf16
    and nothing is cast twice."""

    def __init__(self, method: nn.Module, device_type: str) -> None:
        self.device_type = device_type
        self.depth = 0
        self.handles: list[Any] = []
        self._loss_ctx: list[Any] = []  # autocast-off contexts of the loss calls in progress (a loss may call another)
        losses = [m for m in method.modules() if is_loss_module(m)]
        inside_loss = {id(x) for m in losses for x in m.modules()}
        for m in losses:
            self.handles.append(m.register_forward_pre_hook(self._loss_pre, with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._loss_post))
        for m in method.modules():
            if m is not method and id(m) not in inside_loss:
                self.handles.append(m.register_forward_pre_hook(self._net_pre))
                self.handles.append(m.register_forward_hook(self._net_post))

    def reset(self) -> None:
        """Forget a call that raised half-way (the engine calls this before every step)."""
        self.depth = 0
        while self._loss_ctx:
            self._loss_ctx.pop().__exit__(None, None, None)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _net_pre(self, _m: nn.Module, _args: Any) -> None:
        self.depth += 1

    def _net_post(self, _m: nn.Module, _inp: Any, out: Any) -> Any:
        self.depth -= 1
        return _to_fp32(out) if self.depth <= 0 else None

    def _loss_pre(self, _m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        ctx = torch.autocast(self.device_type, enabled=False)
        ctx.__enter__()
        self._loss_ctx.append(ctx)
        return _to_fp32(args), _to_fp32(kwargs)

    def _loss_post(self, _m: nn.Module, _inp: Any, _out: Any) -> None:
        self._loss_ctx.pop().__exit__(None, None, None)


def keep_losses_fp32(method: nn.Module, device_type: str) -> FP32Losses:
    """Mixed precision with the loss equations in fp32: every network output that reaches the method's code comes
    out as float32, and every loss module runs with autocast off on float32 inputs. Functional losses in a method
    (MCD's discrepancy, DANN's domain loss) therefore see fp32 tensors too; only matrix products and convolutions
    that a method itself calls would be re-cast to bf16 by autocast."""
    return FP32Losses(method, device_type)
