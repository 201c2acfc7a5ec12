"""Batch augmentation on in-memory tensors: one vectorised op per batch instead of per-image PIL work.

Every sample gets its own random parameters (drawn from an explicit ``torch.Generator`` so runs are
reproducible and resumable), but the whole batch is warped with a single ``affine_grid`` +
``grid_sample`` call. The affine matrix composes random-resized-crop (scale/aspect/translation),
rotation and horizontal flip — the usual FER training recipe (torchvision reference presets do the
same operations per image). Colour jitter (brightness/contrast) and random erasing are vectorised too.

``strong=True`` gives a RandAugment-strength variant (larger rotation/crop/jitter, erasing always on)
used for consistency losses (Meta-Face2Exp) — documented in ``docs/methods.md``.
"""
from __future__ import annotations

from typing import Any

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    hflip: bool = True
    crop_scale: tuple[float, float] | None = (0.8, 1.0)
    crop_padding: int = 0
    rotation: float = 10.0
    color_jitter: float = 0.2
    random_erasing: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        cs = d.get("crop_scale")
        return cls(hflip=bool(d.get("hflip", True)), crop_scale=tuple(cs) if cs else None,  # type: ignore[arg-type]
                   crop_padding=int(d.get("crop_padding", 0) or 0), rotation=float(d.get("rotation", 0) or 0),
                   color_jitter=float(d.get("color_jitter", 0) or 0), random_erasing=float(d.get("random_erasing", 0) or 0))

    def strong(self) -> "AugmentConfig":
        return AugmentConfig(hflip=True, crop_scale=(0.5, 1.0), crop_padding=0, rotation=max(30.0, self.rotation),
                             color_jitter=max(0.5, self.color_jitter), random_erasing=1.0)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float().div_(255.0)


def normalize(x: torch.Tensor, mean: list[float] | tuple[float, ...], std: list[float] | tuple[float, ...]) -> torch.Tensor:
    c = x.shape[1]
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    if m.numel() != c:  # e.g. ImageNet stats for a 1-channel model: use their mean
        m, s = m.mean().expand(c), s.mean().expand(c)
    return (x - m.view(1, c, 1, 1)) / s.view(1, c, 1, 1)


def sample_params(n: int, cfg: AugmentConfig, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw per-sample augmentation parameters (on CPU, from ``g``) — separate from applying them so a
    distributed run can draw for the global batch and slice its share."""
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    p: dict[str, torch.Tensor] = {}
    if cfg.crop_scale:
        lo, hi = cfg.crop_scale
        area = lo + (hi - lo) * u(n)
        log_r = (u(n) - 0.5) * 2 * math.log(4 / 3)
        ratio = torch.exp(log_r)
        sx = torch.sqrt(area * ratio).clamp(max=1.0)
        sy = torch.sqrt(area / ratio).clamp(max=1.0)
    else:
        sx = sy = torch.ones(n)
    p["sx"], p["sy"] = sx, sy
    # translation keeps the crop inside the image; padding adds a few pixels of shift (CIFAR style)
    p["tx"] = (u(n) * 2 - 1) * (1 - sx)
    p["ty"] = (u(n) * 2 - 1) * (1 - sy)
    p["pad"] = (u(n, 2) * 2 - 1)
    p["angle"] = (u(n) * 2 - 1) * cfg.rotation * math.pi / 180
    p["flip"] = (u(n) < 0.5) if cfg.hflip else torch.zeros(n, dtype=torch.bool)
    p["bright"] = 1 + (u(n) * 2 - 1) * cfg.color_jitter
    p["contrast"] = 1 + (u(n) * 2 - 1) * cfg.color_jitter
    p["erase"] = u(n) < cfg.random_erasing
    p["erase_box"] = u(n, 4)
    return p


def slice_params(p: dict[str, torch.Tensor], idx: slice | torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in p.items()}


def affine_theta(p: dict[str, torch.Tensor], cfg: AugmentConfig, h: int, w: int, device: Any = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, 2, 3]`` affine of the drawn geometry: output -> input normalized coordinates (``affine_grid``,
    ``align_corners=False``): scale (crop), rotate, flip horizontally, translate."""
    sx, sy = p["sx"].to(device, dtype), p["sy"].to(device, dtype)
    b = sx.shape[0]
    cos, sin = torch.cos(p["angle"]).to(device, dtype), torch.sin(p["angle"]).to(device, dtype)
    flip = torch.where(p["flip"].to(device), -1.0, 1.0).to(dtype)
    tx = p["tx"].to(device, dtype) + p["pad"][:, 0].to(device, dtype) * (2 * cfg.crop_padding / w)
    ty = p["ty"].to(device, dtype) + p["pad"][:, 1].to(device, dtype) * (2 * cfg.crop_padding / h)
    theta = torch.zeros(b, 2, 3, device=device, dtype=dtype)
    theta[:, 0, 0] = cos * sx * flip
    theta[:, 0, 1] = -sin * sy
    theta[:, 1, 0] = sin * sx * flip
    theta[:, 1, 1] = cos * sy
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    return theta


def apply_params(x: torch.Tensor, p: dict[str, torch.Tensor], cfg: AugmentConfig) -> torch.Tensor:
    """Apply drawn parameters to a float batch ``x`` in [0, 1] of shape [B, C, H, W]."""
    b, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    theta = affine_theta(p, cfg, h, w, dev, dt)
    needs_warp = cfg.crop_scale or cfg.rotation or cfg.hflip or cfg.crop_padding
    if needs_warp:
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.color_jitter:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * p["contrast"].to(dev, dt).view(b, 1, 1, 1) + mean
        x = (x * p["bright"].to(dev, dt).view(b, 1, 1, 1)).clamp_(0, 1)
    if cfg.random_erasing and bool(p["erase"].any()):
        box = p["erase_box"].to(dev, dt)
        # erase 2-20 % of the area, aspect in [0.3, 3.3] approximated by independent side fractions
        ew = (0.15 + 0.3 * box[:, 0]) * w
        eh = (0.15 + 0.3 * box[:, 1]) * h
        x0 = box[:, 2] * (w - ew)
        y0 = box[:, 3] * (h - eh)
        xs = torch.arange(w, device=dev, dtype=dt).view(1, 1, w)
        ys = torch.arange(h, device=dev, dtype=dt).view(1, h, 1)
        m = ((xs >= x0.view(b, 1, 1)) & (xs < (x0 + ew).view(b, 1, 1)) &
             (ys >= y0.view(b, 1, 1)) & (ys < (y0 + eh).view(b, 1, 1)) & p["erase"].to(dev).view(b, 1, 1))
        x = x.masked_fill(m.unsqueeze(1), 0.5)
    return x


def apply_params_points(points: torch.Tensor, p: dict[str, torch.Tensor], cfg: AugmentConfig, h: int,
                        w: int) -> torch.Tensor:
    """Where points ``[B, K, 2]`` (x, y as fractions of width/height) land in the image ``apply_params``
    makes from the same parameters: ``o = A⁻¹ (i − t)`` in normalized coordinates (``i = 2q − 1``).
    Order is not changed here (a horizontal flip mirrors the points; ``fairexpr.data.landmarks`` re-orders)."""
    if not (cfg.crop_scale or cfg.rotation or cfg.hflip or cfg.crop_padding):
        return points
    theta = affine_theta(p, cfg, h, w, points.device, torch.float32)
    a, t = theta[:, :, :2], theta[:, :, 2]
    i = points.float() * 2 - 1  # [B, K, 2]
    o = torch.linalg.solve(a.unsqueeze(1), (i - t.unsqueeze(1)).unsqueeze(-1)).squeeze(-1)
    return (o + 1) / 2


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    return apply_params(x, sample_params(x.shape[0], cfg, g), cfg)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
