"""The numpy batch contract: what flows between readers, engines and the store (no torch).

A *batch* (docs/ARCHITECTURE.md, "The batch contract") is a dict of numpy arrays with leading
dimension B: ``lr`` (B, 6, h, w) float32 30 m reflectance in :data:`~lssr_ray.config.OUTPUT_BANDS`
order (NaN = nodata/cloud), ``dem`` (B, 1, H, W) metres, ``landcover`` (B, 1, H, W) class index,
``sar`` (B, 2, H, W) VV/VH dB on the 10 m chip grid (H = scale * h), ``month`` (B,) 1..12 and
``present`` (B, 3) flags for :data:`PRESENT_KEYS`; other keys (``chip_id``, ...) ride along.

Around the network (torch, onnxruntime or TensorRT alike, :mod:`lssr_ray.infer`):

1. :func:`preprocess`: batch -> *network inputs* (:data:`MODEL_INPUTS` of :data:`INPUT_DTYPES`,
   reflectance as images in [-1, 1] per band group, :mod:`lssr_ray.data.normalize`) plus
   ``valid`` (B, h, w), the 30 m pixels whose six bands were all finite.
2. the network: network inputs -> image (B, 6, H, W) float32 within
   :func:`~lssr_ray.data.normalize.valid_image_range`.
3. :func:`postprocess`: image -> reflectance (B, 6, H, W) float32, NaN on the scale x scale
   children of every invalid 30 m pixel (nodata in -> nodata out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lssr_ray.config import OUTPUT_BANDS, SCALE
from lssr_ray.data.normalize import (
    image_to_reflectance,
    normalize_dem,
    normalize_sar,
    reflectance_to_image,
)
from lssr_ray.errors import BatchError

PRESENT_KEYS = ("dem", "landcover", "sar")
"""The optional layers, in the column order of ``present``."""
MODEL_INPUTS: tuple[str, ...] = ("lr", "dem", "landcover", "sar", "month", "present")
"""Network inputs (keys of :func:`preprocess`'s output fed to every engine)."""
INPUT_DTYPES: dict[str, str] = {
    "lr": "float32",
    "dem": "float32",
    "landcover": "int64",
    "sar": "float32",
    "month": "int64",
    "present": "float32",
}
"""dtype of each network input."""


def _check(batch: Mapping[str, Any], key: str, ndim: int, b: int | None = None) -> np.ndarray:
    if key not in batch:
        raise BatchError(f"batch lacks {key!r}; keys present: {sorted(batch)}")
    a = np.asarray(batch[key])
    if a.ndim != ndim or (b is not None and a.shape[0] != b):
        raise BatchError(f"batch[{key!r}] has shape {a.shape}; expected {ndim} dims with B={b} first")
    return a


def preprocess(batch: Mapping[str, Any], *, scale: int = SCALE) -> dict[str, np.ndarray]:
    """Batch dict -> network inputs (numpy) + the 30 m validity mask.

    NaN-fills the 30 m reflectance (per chip and band mean), scales it to [-1, 1] per band group,
    normalises DEM / SAR, and ANDs the given ``present`` flags with "the layer has any finite
    value". Returns ``lr`` (B, 6, h, w) float32 in [-1, 1], ``dem`` (B, 2, H, W) float32,
    ``landcover`` (B, 1, H, W) int64, ``month`` (B,) int64, ``present`` (B, 3) float32, ``sar``
    (B, 2, H, W) float32 and ``valid`` (B, h, w) bool (all six bands finite). Missing optional
    keys (``dem``, ``landcover``, ``sar``, ``present``) give zeros with present 0.
    """
    lr = _check(batch, "lr", 4).astype(np.float32)
    b, c, h, w = lr.shape
    if c != len(OUTPUT_BANDS):
        raise BatchError(f"batch['lr'] has {c} bands; expected 6 in order {OUTPUT_BANDS}")
    H, W = h * scale, w * scale
    valid = np.isfinite(lr).all(axis=1)
    with np.errstate(invalid="ignore"):
        fin = np.isfinite(lr)
        cnt = fin.sum(axis=(2, 3), keepdims=True)
        mean = np.where(fin, lr, 0.0).sum(axis=(2, 3), keepdims=True) / np.maximum(cnt, 1)
    lo_fill = image_to_reflectance(np.zeros((1, 6, 1, 1), np.float32))  # mid-range if all NaN
    mean = np.where(cnt > 0, mean, lo_fill)
    lr_img = reflectance_to_image(np.where(fin, lr, mean)).astype(np.float32)

    month = _check(batch, "month", 1, b).astype(np.int64)
    if ((month < 1) | (month > 12)).any():
        raise BatchError(f"batch['month'] must be 1..12, got {sorted(set(month.tolist()))}")
    present = (
        _check(batch, "present", 2, b).astype(np.float32).copy()
        if "present" in batch
        else np.ones((b, 3), np.float32)
    )
    if present.shape != (b, 3):
        raise BatchError(f"batch['present'] has shape {present.shape}; expected ({b}, 3) for {PRESENT_KEYS}")

    def raster(key: str, ch: int) -> np.ndarray | None:
        if key not in batch or batch[key] is None:
            return None
        a = _check(batch, key, 4, b)
        if a.shape[1:] != (ch, H, W):
            raise BatchError(f"batch[{key!r}] has shape {a.shape}; expected ({b}, {ch}, {H}, {W})")
        return a

    dem = raster("dem", 1)
    if dem is None:
        present[:, 0] = 0
        dem_n = np.zeros((b, 2, H, W), np.float32)
    else:
        present[:, 0] *= np.isfinite(dem).any(axis=(1, 2, 3))
        dem_n = normalize_dem(dem)
    lc = raster("landcover", 1)
    if lc is None:
        present[:, 1] = 0
        lc = np.zeros((b, 1, H, W), np.int64)
    else:
        lc = lc.astype(np.int64)
        present[:, 1] *= (lc > 0).any(axis=(1, 2, 3))
    sar = raster("sar", 2)
    if sar is None:
        present[:, 2] = 0
        sar_n = np.zeros((b, 2, H, W), np.float32)
    else:
        present[:, 2] *= np.isfinite(sar).any(axis=(1, 2, 3))
        sar_n = normalize_sar(sar)
    return {
        "lr": lr_img,
        "dem": dem_n,
        "landcover": lc,
        "month": month,
        "present": present.astype(np.float32),
        "sar": sar_n,
        "valid": valid,
    }


def postprocess(image: np.ndarray, valid: np.ndarray, *, scale: int = SCALE) -> np.ndarray:
    """Network output (B, 6, H, W) (within :func:`~lssr_ray.data.normalize.valid_image_range`)
    -> reflectance float32, NaN on the scale x scale children of invalid 30 m pixels (``valid``
    (B, h, w) from :func:`preprocess`)."""
    refl = image_to_reflectance(np.asarray(image, np.float32)).astype(np.float32)
    fine = valid.repeat(scale, axis=1).repeat(scale, axis=2)[:, None]
    return np.where(fine, refl, np.float32(np.nan)).astype(np.float32)


def model_inputs(inputs: Mapping[str, Any], names: tuple[str, ...] = MODEL_INPUTS) -> dict[str, np.ndarray]:
    """The network inputs ``names`` of ``inputs`` (:func:`preprocess` output) as contiguous
    arrays of :data:`INPUT_DTYPES`; other keys (``valid``, ``chip_id``) are left out.

    Raises :class:`BatchError` naming missing keys or an inconsistent batch size.
    """
    missing = [k for k in names if k not in inputs]
    if missing:
        raise BatchError(f"batch lacks model inputs {missing}; an engine needs {list(names)}")
    out = {k: np.ascontiguousarray(inputs[k], dtype=INPUT_DTYPES.get(k, None)) for k in names}
    sizes = {k: v.shape[0] if v.ndim else -1 for k, v in out.items()}
    if len(set(sizes.values())) != 1:
        raise BatchError(f"batch arrays disagree on the leading (batch) dimension: {sizes}")
    return out


__all__ = [
    "INPUT_DTYPES",
    "MODEL_INPUTS",
    "PRESENT_KEYS",
    "model_inputs",
    "postprocess",
    "preprocess",
]
