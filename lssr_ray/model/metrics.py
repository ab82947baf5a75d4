"""Evaluation metrics on reflectance (torch, batched; cross-checked against scikit-image in tests).

Inputs are reflectance tensors (B, 6, H, W), OUTPUT_BANDS order, NaN = no data.

Data range: PSNR and SSIM of a band group use ``data_range`` = the width of that group's
normalisation range (``lssr_ray.data.normalize.REFLECTANCE_RANGE``: rgb 0.4, ir 0.8
reflectance), i.e. the same as computing them on the [0, 1]-scaled images the network sees.
Pass ``data_range=`` to override (e.g. 1.0 for raw reflectance).

- PSNR: 10 log10(R^2 / MSE) per chip over the group's 3 bands and valid pixels.
- SSIM: scikit-image's default definition (7 x 7 uniform window, K1 0.01, K2 0.03, sample
  covariance), averaged per band and over windows lying fully on valid pixels.
- NDVI MSE: mean squared NDVI difference over valid pixels (eps of :data:`losses.NDVI_EPS`).
- Spectral angle (SAM): mean angle in degrees between the 6-band vectors per valid pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lssr_ray.data.normalize import REFLECTANCE_RANGE
from lssr_ray.model.losses import GROUP_SLICES, ndvi


def _valid(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(pred).all(1) & torch.isfinite(target).all(1)


def psnr(pred: torch.Tensor, target: torch.Tensor, *, data_range: float) -> torch.Tensor:
    """PSNR in dB per chip (B,) over all channels of ``pred``/``target`` (B, C, H, W) and the
    pixels finite in both."""
    v = _valid(pred, target).unsqueeze(1).to(pred.dtype)
    d = torch.nan_to_num(pred - target) ** 2 * v
    mse = d.sum((1, 2, 3)) / (v.sum((1, 2, 3)) * pred.shape[1]).clamp_min(1)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(pred: torch.Tensor, target: torch.Tensor, *, data_range: float, win_size: int = 7) -> torch.Tensor:
    """SSIM per chip (B,), mean over channels and over windows fully on valid pixels."""
    v = _valid(pred, target).unsqueeze(1).to(pred.dtype)
    x, y = torch.nan_to_num(pred) * v, torch.nan_to_num(target) * v
    _b, _c, _h, _w = x.shape
    pool = lambda t: F.avg_pool2d(t, win_size, stride=1)
    ux, uy = pool(x), pool(y)
    np_ = win_size * win_size
    cov_norm = np_ / (np_ - 1)
    vx = cov_norm * (pool(x * x) - ux * ux)
    vy = cov_norm * (pool(y * y) - uy * uy)
    vxy = cov_norm * (pool(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    full = (pool(v) > 1 - 1e-6).to(s.dtype)
    return (s * full).sum((2, 3)).div(full.sum((2, 3)).clamp_min(1)).mean(1)


def ndvi_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """NDVI MSE per chip (B,) over valid pixels (reflectance (B, 6, H, W))."""
    v = _valid(pred, target).to(pred.dtype)
    d = torch.nan_to_num(ndvi(pred) - ndvi(target)) ** 2 * v
    return d.sum((1, 2)) / v.sum((1, 2)).clamp_min(1)


def spectral_angle(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean spectral angle in degrees per chip (B,) over valid pixels (all bands)."""
    v = _valid(pred, target).to(pred.dtype)
    p, t = torch.nan_to_num(pred), torch.nan_to_num(target)
    cos = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1)).clamp_min(1e-12)
    ang = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))
    return (ang * v).sum((1, 2)) / v.sum((1, 2)).clamp_min(1)


def evaluate(pred: torch.Tensor, target: torch.Tensor, *, psnr_only: bool = False) -> dict[str, float]:
    """Batch means of every metric: psnr_rgb, psnr_ir, ssim_rgb, ssim_ir, ndvi_mse, sam_deg
    (``psnr_only``: the two PSNRs alone)."""
    pred, target = torch.as_tensor(pred).double(), torch.as_tensor(target).double()
    out: dict[str, float] = {}
    for g, s in GROUP_SLICES.items():
        r = REFLECTANCE_RANGE[g][1] - REFLECTANCE_RANGE[g][0]
        out[f"psnr_{g}"] = float(psnr(pred[:, s], target[:, s], data_range=r).mean())
        if not psnr_only:
            out[f"ssim_{g}"] = float(ssim(pred[:, s], target[:, s], data_range=r).mean())
    if psnr_only:
        return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
    out["ndvi_mse"] = float(ndvi_mse(pred, target).mean())
    out["sam_deg"] = float(spectral_angle(pred, target).mean())
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}


__all__ = ["evaluate", "ndvi_mse", "psnr", "spectral_angle", "ssim"]
