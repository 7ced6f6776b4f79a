"""Batch augmentation on the training device: each sample its own random rotation/affine and brightness/contrast, in
one `affine_grid` + `grid_sample` call per batch. The meaning is torchvision's: rotation about the image centre,
translation in whole pixels, black fill, on [0, 1] images before normalisation (tests/test_augment.py checks this
against torchvision on fixed parameters)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config.schema import AugmentConfig


def affine_theta(
    angle: torch.Tensor, translate: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor, size: int
) -> torch.Tensor:
    """(N, 2, 3) `F.affine_grid` matrices for square `size` images, mapping an output pixel back to its input
    (the inverse of T * C * R * S * Shear * C^-1). Arguments as torchvision's `affine`: degrees (clockwise),
    `translate` (N, 2) in pixels, `scale` (N,), `shear` (N,) x-shear in degrees."""
    rot, sx = torch.deg2rad(angle), torch.deg2rad(shear)
    a = torch.cos(rot)
    b = -torch.cos(rot) * torch.tan(sx) - torch.sin(rot)
    c = torch.sin(rot)
    d = -torch.sin(rot) * torch.tan(sx) + torch.cos(rot)
    # The forward matrix [[a, b], [c, d]] has determinant 1, so its inverse is [[d, -b], [-c, a]].
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / scale[:, None, None]
    offset = -(inv @ translate.unsqueeze(-1)).squeeze(-1)  # pixels, about the centre
    # affine_grid works in [-1, 1] coordinates; for a square image the linear part is unchanged.
    return torch.cat([inv, (offset * 2 / size).unsqueeze(-1)], dim=-1)


def warp(images: torch.Tensor, theta: torch.Tensor, interpolation: str) -> torch.Tensor:
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=interpolation, padding_mode="zeros", align_corners=False)


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.rand(n, device=device) * (high - low) + low


def augment_batch(images: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Random augmentation of a (N, C, H, W) batch in [0, 1]; returns a new batch in [0, 1]."""
    if not cfg.enabled:
        return images
    n, device, size = images.shape[0], images.device, images.shape[-1]
    out = images
    if cfg.rotation or cfg.translate or cfg.scale != (1.0, 1.0) or cfg.shear:
        angle = _uniform(n, -cfg.rotation, cfg.rotation, device)
        max_shift = cfg.translate * size
        translate = _uniform(2 * n, -max_shift, max_shift, device).round().view(n, 2)  # whole pixels
        scale = _uniform(n, *cfg.scale, device)
        shear = _uniform(n, -cfg.shear, cfg.shear, device)
        out = warp(out, affine_theta(angle, translate, scale, shear, size), cfg.interpolation)
    if cfg.brightness:
        factor = _uniform(n, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, device)
        out = (out * factor.view(n, 1, 1, 1)).clamp(0, 1)
    if cfg.contrast:
        factor = _uniform(n, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, device).view(n, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out * factor + mean * (1 - factor)).clamp(0, 1)
    return out
