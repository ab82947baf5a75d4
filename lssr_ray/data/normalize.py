"""Fixed, documented scalings between physical units and network inputs.

Every scaling here is a fixed affine map (plus a clip), never a per-tile statistic, so the same
reflectance always gives the same network input (the reference design scaled SAR by each tile's
maximum and clamped DEM to 0-300 m; both are replaced here).

Arrays are numpy or torch; shapes are (B, C, H, W) unless stated.

Reflectance -> image in [-1, 1], per band group (``lssr_ray.config.BAND_GROUPS``); the model's
*output* may leave [-1, 1] up to the image values of HLS's valid reflectance range
(:func:`valid_image_range`: -0.01 .. 1.6), so a slightly negative or bright prediction keeps its
value instead of saturating at reflectance 0 or at the group's upper end:

====== ======================= ============================================
group  reflectance range        why
====== ======================= ============================================
rgb    0.0 .. 0.4              vegetated/urban/soil surface reflectance in
                               red/green/blue stays below 0.4; brighter
                               (cloud, snow) saturates at +1
ir     0.0 .. 0.8              NIR of dense canopy reaches ~0.6, SWIR ~0.5
====== ======================= ============================================

DEM (metres) -> 2 channels: ``(dem - chip median) / 50 m`` (local relief, what the 10 m detail
depends on; robust to the absolute height, Iowa 150-510 m or Flanders 35 m alike) and
``dem / 1000 m`` (absolute height, kept coarse); both clipped to [-4, 4].

SAR sigma0 (dB) -> [-1, 1] on fixed ranges: VV -25..+5 dB, VH -32..-2 dB (typical land
backscatter; beyond is clipped).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

#: Reflectance range (low, high) mapped to image [-1, 1] per band group.
REFLECTANCE_RANGE: dict[str, tuple[float, float]] = {"rgb": (0.0, 0.4), "ir": (0.0, 0.8)}
#: SAR dB range (low, high) per channel (VV, VH) mapped to [-1, 1].
SAR_DB_RANGE: tuple[tuple[float, float], tuple[float, float]] = ((-25.0, 5.0), (-32.0, -2.0))
#: DEM scales in metres: local relief and absolute height.
DEM_RELIEF_SCALE_M = 50.0
DEM_ABS_SCALE_M = 1000.0
DEM_CLIP = 4.0
#: Per-band (low, high) in OUTPUT_BANDS order (red, green, blue, nir, swir1, swir2).
BAND_RANGES: tuple[tuple[float, float], ...] = (REFLECTANCE_RANGE["rgb"],) * 3 + (
    REFLECTANCE_RANGE["ir"],
) * 3


def _lib(x: Any):
    # a tensor exists only if torch is already imported: numpy callers (the batch contract,
    # ONNX/TensorRT actors) must not import torch just to be told they hold numpy
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else np


def _band_lohi(x: Any, channel_axis: int = 1):
    lo = np.array([r[0] for r in BAND_RANGES], dtype=np.float32)
    hi = np.array([r[1] for r in BAND_RANGES], dtype=np.float32)
    shape = [1] * x.ndim
    shape[channel_axis] = 6
    if _lib(x) is np:
        return lo.reshape(shape), hi.reshape(shape)
    import torch

    return (
        torch.as_tensor(lo, device=x.device, dtype=x.dtype).reshape(shape),
        torch.as_tensor(hi, device=x.device, dtype=x.dtype).reshape(shape),
    )


def reflectance_to_image(refl: Any, *, clip: bool = True) -> Any:
    """Map 6-band reflectance (B, 6, H, W), OUTPUT_BANDS order, to images in [-1, 1].

    NaN stays NaN. With ``clip`` values outside the group range saturate at -1/+1.
    """
    lo, hi = _band_lohi(refl)
    img = 2.0 * (refl - lo) / (hi - lo) - 1.0
    if clip:
        img = img.clip(-1.0, 1.0)
    return img


def valid_image_range() -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float32 (6,): image values of HLS v2.0's valid reflectance range
    (:data:`lssr_ray.data.hls.VALID_RANGE` x scale) per band, OUTPUT_BANDS order.

    The model clamps its output here, not at [-1, 1]: image -1 is reflectance 0, so a clamp at -1
    turned every slightly negative prediction into an exact 0.
    """
    from lssr_ray.data.hls import SCALE, VALID_RANGE

    lo, hi = (np.full((1, 6, 1, 1), v * SCALE, np.float32) for v in VALID_RANGE)
    return (reflectance_to_image(lo, clip=False).reshape(6).astype(np.float32),
            reflectance_to_image(hi, clip=False).reshape(6).astype(np.float32))


def image_to_reflectance(img: Any) -> Any:
    """Inverse of :func:`reflectance_to_image` (no clipping): (B, 6, H, W) [-1, 1] -> reflectance."""
    lo, hi = _band_lohi(img)
    return (img + 1.0) * 0.5 * (hi - lo) + lo


def normalize_dem(dem: np.ndarray) -> np.ndarray:
    """DEM metres (B, 1, H, W), NaN missing -> (B, 2, H, W) float32 [relief, absolute], NaN -> 0.

    Relief is relative to each chip's NaN-median height, so it does not depend on the region's
    absolute elevation; the absolute channel keeps the height at 1 km resolution of scale.
    """
    dem = np.asarray(dem, dtype=np.float32)
    out = np.zeros((dem.shape[0], 2) + dem.shape[2:], dtype=np.float32)
    for i in range(dem.shape[0]):
        d = dem[i, 0]
        ok = np.isfinite(d)
        if not ok.any():
            continue
        med = float(np.median(d[ok]))
        out[i, 0] = np.where(ok, (d - med) / DEM_RELIEF_SCALE_M, 0.0)
        out[i, 1] = np.where(ok, d / DEM_ABS_SCALE_M, 0.0)
    return np.clip(out, -DEM_CLIP, DEM_CLIP)


def normalize_sar(sar_db: np.ndarray) -> np.ndarray:
    """SAR VV, VH in dB (B, 2, H, W), NaN missing -> [-1, 1] float32 on fixed ranges, NaN -> 0."""
    sar_db = np.asarray(sar_db, dtype=np.float32)
    out = np.empty_like(sar_db)
    for c, (lo, hi) in enumerate(SAR_DB_RANGE):
        out[:, c] = 2.0 * (sar_db[:, c] - lo) / (hi - lo) - 1.0
    out = np.clip(out, -1.0, 1.0)
    return np.where(np.isfinite(out), out, 0.0).astype(np.float32)


__all__ = [
    "BAND_RANGES",
    "DEM_ABS_SCALE_M",
    "DEM_RELIEF_SCALE_M",
    "REFLECTANCE_RANGE",
    "SAR_DB_RANGE",
    "image_to_reflectance",
    "normalize_dem",
    "normalize_sar",
    "reflectance_to_image",
    "valid_image_range",
]
