"""Landsat-like degradation of 10 m Sentinel-2 reflectance to 30 m (synthetic training pairs).

Model of the degradation (docs/PAIRS.md, "Synthetic pairs"):

1. **Band mapping.** The six output bands take the Sentinel-2 band with the same HLS common
   name (red B04, green B03, blue B02, nir B08 or B8A, swir1 B11, swir2 B12). Optionally a
   linear bandpass adjustment S2 -> Landsat-8 OLI is applied (:data:`BANDPASS`, the HLS
   MSI-to-OLI slopes/offsets published on the HLS algorithm pages); the same adjustment is then
   applied to the 10 m target, so target and input stay on one radiometric basis.
2. **Optics.** A separable Gaussian point-spread function on the 10 m grid, sigma in 10 m
   pixels. The default sigma is not a measured OLI number: it is chosen so that the whole
   degradation (Gaussian x 3x3 area average) passes ``mtf_at_nyquist`` (default 0.3) of the
   amplitude at the 30 m grid's Nyquist frequency (1/60 m^-1 = 1/6 cycle per 10 m pixel).
   0.3 is an assumption, not a measured OLI value; it is a parameter, and the sigma it
   implies is recorded in every pair.
3. **Sampling.** 3x3 area average (block mean) onto the 30 m grid whose origin is the 10 m
   chip origin (docs/ARCHITECTURE.md: every 30 m pixel covers exactly 3x3 output pixels).

Maths: a Gaussian of std sigma (pixels) has MTF ``exp(-2 pi^2 sigma^2 f^2)`` (f in cycles
per pixel); the discrete 3-pixel mean has response ``(1 + 2 cos(2 pi f)) / 3``, which is 2/3
at f = 1/6. Hence ``sigma = sqrt(-ln(m / (2/3)) / (2 pi^2 f^2))``; m = 0.3 gives about 1.21
pixels (12 m). Nodata (NaN) is handled by normalised convolution, and a 30 m cell is valid
only when all its 3x3 source pixels are.
"""

from __future__ import annotations

import math

import numpy as np

from lssr_ray.config import OUTPUT_BANDS, SCALE
from lssr_ray.errors import ConfigError

DEFAULT_MTF_AT_NYQUIST = 0.3
"""Default total response (PSF x 3x3 mean) at the 30 m Nyquist frequency (see module doc)."""

#: Output band (HLS common name) -> Sentinel-2 band id used as the 10 m source. ``nir`` is
#: chosen per pair (``"B08"`` 10 m or ``"B8A"`` 20 m); see docs/PAIRS.md.
S2_BANDS: dict[str, str] = {"red": "B04", "green": "B03", "blue": "B02", "nir": "B08",
                            "swir1": "B11", "swir2": "B12"}
#: Output band -> Landsat-8 OLI band id (Landsat numbering, as in the WorldCereal L8 files).
L8_BANDS: dict[str, str] = {"red": "B04", "green": "B03", "blue": "B02", "nir": "B05",
                            "swir1": "B06", "swir2": "B07"}

#: Linear MSI -> OLI bandpass adjustment, OLI = slope * MSI + offset, in OUTPUT_BANDS order,
#: as (slope, offset) pairs. Numbers from the HLS project's published bandpass-adjustment
#: table (hls.gsfc.nasa.gov, "Bandpass adjustment"; MSI RSR v2.0). The NIR row is for B8A;
#: applied to B08 it is an approximation (documented in docs/PAIRS.md).
BANDPASS: dict[str, tuple[tuple[float, float], ...]] = {
    "hls_s2a": ((0.9765, 0.0009), (1.0053, -0.0009), (0.9778, -0.004),
                (0.9983, -0.0001), (0.9987, -0.0011), (1.003, -0.0012)),
    "hls_s2b": ((0.9761, 0.001), (1.0075, -0.0008), (0.9778, -0.004),
                (0.9966, 0.0), (1.0, -0.0003), (0.9867, 0.0004)),
}
BANDPASS_CHOICES = ("none", *BANDPASS)


def sigma_for_mtf(mtf_at_nyquist: float = DEFAULT_MTF_AT_NYQUIST, scale: int = SCALE) -> float:
    """Gaussian sigma (in fine pixels) such that Gaussian x ``scale``-pixel mean has response
    ``mtf_at_nyquist`` at the coarse grid's Nyquist frequency ``1 / (2 * scale)`` cycles/pixel.

    Valid range: 0 < mtf < response of the block mean alone (2/3 for scale 3).
    """
    if scale < 1:
        raise ConfigError(f"scale must be >= 1, got {scale}")
    f = 1.0 / (2 * scale)
    box = float(np.mean(np.cos(2 * np.pi * f * (np.arange(scale) - (scale - 1) / 2))))
    if not 0.0 < mtf_at_nyquist < box:
        raise ConfigError(
            f"mtf_at_nyquist must be in (0, {box:.4f}) for scale {scale} (the block mean alone "
            f"gives {box:.4f}), got {mtf_at_nyquist}"
        )
    return math.sqrt(-math.log(mtf_at_nyquist / box) / (2 * math.pi**2 * f**2))


def gaussian_kernel_1d(sigma: float, *, truncate: float = 4.0) -> np.ndarray:
    """1-D Gaussian (float64, odd length ``2 ceil(truncate * sigma) + 1``), sum = 1; ``sigma``
    in pixels of the grid it is applied on (10 m); ``sigma == 0`` gives ``[1.0]``."""
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ConfigError(f"sigma must be a finite number >= 0 (pixels), got {sigma}")
    if sigma == 0:
        return np.ones(1)
    r = math.ceil(truncate * sigma)
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def gaussian_kernel(sigma: float, *, truncate: float = 4.0) -> np.ndarray:
    """2-D Gaussian PSF (float64, odd square, radius ``ceil(truncate * sigma)``), sum = 1: the
    outer product of :func:`gaussian_kernel_1d` with itself (``sigma == 0``: the 1x1 identity)."""
    g = gaussian_kernel_1d(sigma, truncate=truncate)
    return np.outer(g, g)


def blur(img: np.ndarray, sigma: float, *, truncate: float = 4.0) -> np.ndarray:
    """Apply the Gaussian PSF to the last two axes of ``img`` (..., H, W), NaN-aware.

    NaN pixels are excluded by normalised convolution (a blurred pixel is the weighted mean of
    its valid neighbours; NaN where none is valid). Edges use mirror reflection, so a constant
    image stays constant. Returns float32.
    """
    from scipy import ndimage

    a = np.asarray(img, dtype=np.float64)
    if a.ndim < 2:
        raise ConfigError(f"img must have at least 2 dims (..., H, W), got shape {a.shape}")
    # the kernel is the outer product of one symmetric 1-D Gaussian: two 1-D passes give the
    # 2-D convolution at 2(2r+1) instead of (2r+1)^2 operations per pixel
    g = gaussian_kernel_1d(sigma, truncate=truncate)

    def conv(x: np.ndarray) -> np.ndarray:
        return ndimage.correlate1d(ndimage.correlate1d(x, g, axis=-1, mode="mirror"), g, axis=-2, mode="mirror")

    valid = np.isfinite(a)
    num = conv(np.where(valid, a, 0.0))
    den = conv(valid.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 1e-6, num / den, np.nan)
    return out.astype(np.float32)


def block_mean(img: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Area average of ``scale`` x ``scale`` blocks over the last two axes (H, W multiples of
    ``scale``); NaN if any pixel of the block is NaN. Returns float32 (..., H/scale, W/scale)."""
    a = np.asarray(img, dtype=np.float64)
    h, w = a.shape[-2:]
    if h % scale or w % scale:
        raise ConfigError(f"image height/width {h}x{w} must be multiples of scale {scale}")
    b = a.reshape(a.shape[:-2] + (h // scale, scale, w // scale, scale))
    return b.mean(axis=(-3, -1)).astype(np.float32)


def adjust_bandpass(refl: np.ndarray, band_adjust: str = "none") -> np.ndarray:
    """Apply the MSI -> OLI linear adjustment to (6, ...) reflectance in OUTPUT_BANDS order.

    ``band_adjust``: ``"none"`` (identity), ``"hls_s2a"`` or ``"hls_s2b"``. Returns float32.
    """
    a = np.asarray(refl, dtype=np.float32)
    if band_adjust not in BANDPASS_CHOICES:
        raise ConfigError(f"unknown band_adjust {band_adjust!r}; valid: {list(BANDPASS_CHOICES)}")
    if a.shape[0] != len(OUTPUT_BANDS):
        raise ConfigError(f"refl must have {len(OUTPUT_BANDS)} bands first {OUTPUT_BANDS}, got shape {a.shape}")
    if band_adjust == "none":
        return a.copy()
    c = np.asarray(BANDPASS[band_adjust], dtype=np.float32)
    shape = (len(OUTPUT_BANDS),) + (1,) * (a.ndim - 1)
    return a * c[:, 0].reshape(shape) + c[:, 1].reshape(shape)


def degrade(
    hr: np.ndarray,
    scale: int = SCALE,
    *,
    sigma: float | None = None,
    mtf_at_nyquist: float = DEFAULT_MTF_AT_NYQUIST,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Degrade 10 m reflectance (C, 3h, 3w) to a Landsat-like 30 m image (C, h, w).

    ``sigma`` (10 m pixels) overrides the value derived from ``mtf_at_nyquist``. ``valid``
    (3h, 3w) bool marks usable 10 m pixels (default: all bands finite). Returns
    ``(lr float32 with NaN where invalid, lr_valid bool (h, w), sigma used)``; a 30 m cell is
    valid when all its scale x scale source pixels are valid.
    """
    a = np.asarray(hr, dtype=np.float32)
    if a.ndim != 3:
        raise ConfigError(f"hr must be (bands, H, W), got shape {a.shape}")
    s = sigma_for_mtf(mtf_at_nyquist, scale) if sigma is None else float(sigma)
    ok = np.all(np.isfinite(a), axis=0)
    if valid is not None:
        if np.shape(valid) != a.shape[1:]:
            raise ConfigError(f"valid must have shape {a.shape[1:]}, got {np.shape(valid)}")
        ok &= np.asarray(valid, dtype=bool)
    src = np.where(ok[None], a, np.nan)
    lr = block_mean(blur(src, s), scale)
    lr_valid = block_mean(ok.astype(np.float32), scale) == 1.0
    lr[:, ~lr_valid] = np.nan
    return lr, lr_valid, s


__all__ = ["BANDPASS", "BANDPASS_CHOICES", "DEFAULT_MTF_AT_NYQUIST", "L8_BANDS", "S2_BANDS",
           "adjust_bandpass", "block_mean", "blur", "degrade", "gaussian_kernel", "sigma_for_mtf"]
