"""Training losses (torch): pixel MSE, Fourier amplitude L1, NDVI L1, optional perceptual term.

Tensors are (B, 6, H, W), OUTPUT_BANDS order (red, green, blue, nir, swir1, swir2).
Pixel and Fourier terms work on images in [-1, 1] (the band-group scaling of
:mod:`lssr_ray.model.normalize`), the NDVI term on reflectance. ``valid`` (B, H, W) bool marks
pixels with a usable target; invalid pixels are zeroed in both images before the FFT (so they add
no spatial error) and left out of the pixel and NDVI means.

Total (the LSSR recipe): ``mse + fft + 20 * ndvi_l1 (+ perceptual_weight * perceptual)``.
The reference design also uses LPIPS and a classifier-score-distillation term; both need
pretrained networks, so here a perceptual network is used only when given as a local TorchScript
file (``perceptual_model=path``; called as ``net(pred, target) -> (N,) or scalar``, on 3-channel
images in [-1, 1], once per band group). CSD is not implemented (it needs the full SD text stack).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lssr_ray.errors import MissingDataError
from lssr_ray.model.normalize import image_to_reflectance, reflectance_to_image

#: Added to NIR + red in the NDVI denominator (reflectance units).
NDVI_EPS = 1e-6
RED, NIR = 0, 3
GROUP_SLICES = {"rgb": slice(0, 3), "ir": slice(3, 6)}


def _mask(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if valid is None:
        return torch.ones(like.shape[0], 1, *like.shape[-2:], dtype=like.dtype, device=like.device)
    return valid.to(like.dtype).unsqueeze(1)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over valid pixels and all channels."""
    m = _mask(valid, pred)
    se = ((pred - target) ** 2 * m).sum()
    return se / (m.sum() * pred.shape[1]).clamp_min(1.0)


def fourier_amplitude_l1(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean |(|FFT2(pred)| - |FFT2(target)|)| per channel, orthonormal FFT (``norm="ortho"``),
    invalid pixels set to 0 in both images first."""
    m = _mask(valid, pred)
    fp = torch.fft.fft2(pred * m, norm="ortho").abs()
    ft = torch.fft.fft2(target * m, norm="ortho").abs()
    return (fp - ft).abs().mean()


def ndvi(refl: torch.Tensor, *, eps: float = NDVI_EPS) -> torch.Tensor:
    """NDVI (B, H, W) = (nir - red) / (nir + red + eps) from reflectance (B, 6, H, W)."""
    red, nir = refl[:, RED], refl[:, NIR]
    return (nir - red) / (nir + red + eps)


def ndvi_l1(pred_refl: torch.Tensor, target_refl: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |NDVI(pred) - NDVI(target)| over valid pixels (reflectance inputs)."""
    m = _mask(valid, pred_refl)[:, 0]
    d = (ndvi(pred_refl) - ndvi(target_refl)).abs() * m
    return d.sum() / m.sum().clamp_min(1.0)


class LSSRLoss(nn.Module):
    """Combined LSSR loss. ``forward(pred_img, target_refl, valid=None) -> (total, terms)``.

    ``pred_img``: model output (B, 6, H, W) in [-1, 1]. ``target_refl``: 10 m reference
    reflectance (B, 6, H, W), NaN = no target (merged into ``valid``). ``terms`` holds detached
    floats: ``mse``, ``fft`` (and ``fft_rgb``/``fft_ir``), ``ndvi``, ``perceptual``, ``total``.
    """

    def __init__(
        self,
        *,
        mse_weight: float = 1.0,
        fft_weight: float = 1.0,
        ndvi_weight: float = 20.0,
        perceptual_weight: float = 0.0,
        perceptual_model: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.w = {"mse": mse_weight, "fft": fft_weight, "ndvi": ndvi_weight, "perceptual": perceptual_weight}
        self.perceptual = None
        if perceptual_model is not None:
            p = Path(perceptual_model)
            if not p.is_file():
                raise MissingDataError(f"perceptual model file not found: {p} (a local TorchScript file)")
            self.perceptual = torch.jit.load(str(p), map_location="cpu").eval()
            for prm in self.perceptual.parameters():
                prm.requires_grad_(False)
        elif perceptual_weight:
            raise MissingDataError("perceptual_weight > 0 needs perceptual_model= a local TorchScript file")

    def forward(self, pred_img: torch.Tensor, target_refl: torch.Tensor, valid: torch.Tensor | None = None):
        fin = torch.isfinite(target_refl).all(1)
        valid = fin if valid is None else (valid.bool() & fin)
        target_img = reflectance_to_image(torch.nan_to_num(target_refl, nan=0.0))
        mse = masked_mse(pred_img, target_img, valid)
        ffts = {g: fourier_amplitude_l1(pred_img[:, s], target_img[:, s], valid) for g, s in GROUP_SLICES.items()}
        fft = sum(ffts.values()) / len(ffts)
        nd = ndvi_l1(image_to_reflectance(pred_img), torch.nan_to_num(target_refl, nan=0.0), valid)
        total = self.w["mse"] * mse + self.w["fft"] * fft + self.w["ndvi"] * nd
        perc = torch.zeros((), dtype=pred_img.dtype)
        if self.perceptual is not None:
            m = valid.to(pred_img.dtype).unsqueeze(1)
            perc = sum(
                self.perceptual(pred_img[:, s] * m, target_img[:, s] * m).mean() for s in GROUP_SLICES.values()
            ) / len(GROUP_SLICES)
            total = total + self.w["perceptual"] * perc
        f = lambda t: float(t.detach())
        terms = {
            "mse": f(mse),
            "fft": f(fft),
            **{f"fft_{g}": f(v) for g, v in ffts.items()},
            "ndvi": f(nd),
            "perceptual": f(perc),
            "total": f(total),
        }
        return total, terms


__all__ = ["NDVI_EPS", "LSSRLoss", "fourier_amplitude_l1", "masked_mse", "ndvi", "ndvi_l1"]
