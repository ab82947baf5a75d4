"""Optional colour fix at inference: keep the *input's* low frequencies, the model's high ones.

One-step diffusion SR can shift colours (the issue-11 quicklooks showed saturated dark greens);
OSEDiff, PiSA-SR and the LSSR reference correct that after decoding. Both forms here are torch
and export to ONNX, and both take the output and the bicubic-upsampled input, (N, C, H, W):

- ``adain``: per chip and channel, rescale the output to the input's mean and standard deviation
  (adaptive instance normalisation).
- ``wavelet``: replace the output's low-frequency band by the input's. The low band is an
  "a trous" (dilated) 3 x 3 binomial blur applied ``levels`` times with dilation 1, 2, 4, ...;
  ``out - low(out) + low(input)``. With the pixel skip of :class:`~lssr_ray.model.lssr.LSSRModel`
  (output = input + detail) this removes the low-frequency part of the detail: the model may add
  texture, not shift the regional colour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lssr_ray.errors import ConfigError

COLOR_FIXES = ("none", "adain", "wavelet")
#: Wavelet levels: dilations 1..16, a low band of roughly 60 px (10 m) = 20 input pixels.
WAVELET_LEVELS = 5


def adain(out: torch.Tensor, ref: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``out`` with each chip's channel mean and std replaced by those of ``ref``."""
    mo, so = out.mean((2, 3), keepdim=True), out.std((2, 3), keepdim=True)
    mr, sr = ref.mean((2, 3), keepdim=True), ref.std((2, 3), keepdim=True)
    return (out - mo) / (so + eps) * sr + mr


def wavelet_low(x: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """Low-frequency band of ``x``: ``levels`` dilated binomial blurs, replicate-padded edges."""
    n, c, h, w = x.shape
    # one literal (1, 1, 3, 3) kernel on (N*C, 1, H, W): the ONNX exporter needs a constant-shape kernel
    kernel = torch.tensor([[[[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]]]],
                          dtype=x.dtype, device=x.device)
    low = x.reshape(n * c, 1, h, w)
    for i in range(levels):
        d = 2**i
        low = F.conv2d(F.pad(low, (d, d, d, d), mode="replicate"), kernel, dilation=d)
    return low.reshape(n, c, h, w)


def wavelet_fix(out: torch.Tensor, ref: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """``out`` with its low-frequency band replaced by that of ``ref``."""
    return out - wavelet_low(out, levels) + wavelet_low(ref, levels)


def apply_color_fix(kind: str, out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Dispatch on ``kind`` (one of :data:`COLOR_FIXES`)."""
    if kind == "none":
        return out
    if kind == "adain":
        return adain(out, ref)
    if kind == "wavelet":
        return wavelet_fix(out, ref)
    raise ConfigError(f"color_fix must be one of {COLOR_FIXES}, got {kind!r}")


__all__ = ["COLOR_FIXES", "WAVELET_LEVELS", "adain", "apply_color_fix", "wavelet_fix", "wavelet_low"]
