"""Stage 2: blend overlapping chip predictions into one output chunk, and measure seams.

Geometry (output pixels): chip ``(r, c)`` has a *core* of ``core`` px (one output Zarr chunk,
``stride * scale``) at ``(r * core, c * core)`` and a *halo* of ``halo`` px
(``overlap / 2 * scale``) on every side, so its prediction covers ``core + 2 * halo`` px
starting at ``(r * core - halo, c * core - halo)``. Neighbouring predictions overlap in a band
``2 * halo`` px wide centred on the chunk border.

Each prediction is weighted by a separable raised-cosine ramp: across the ``2 * halo`` overlap
band it rises from ~0 to ~1 as the neighbour's falls, so the two sum to exactly 1; it is
exactly 1 in the chip interior (where no neighbour reaches). Blending is NaN-aware: a NaN
prediction contributes no weight, and the result is renormalised by the weights present
(a missing/skipped neighbour or a grid edge); where no prediction is valid the result is NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lssr_ray.errors import ConfigError


def blend_weights_1d(size: int, halo: int) -> np.ndarray:
    """Weights (size,) float64 along one axis of a ``size``-px prediction with ``halo``-px halos.

    The first and last ``2 * halo`` px follow ``0.5 - 0.5 cos(pi (i + 0.5) / (2 halo))`` (and its
    mirror); the rest is exactly 1. ``w[i] + w[2 halo - 1 - i] == 1`` over the band.
    """
    band = 2 * int(halo)
    if halo < 0 or size < 1:
        raise ConfigError(f"halo must be >= 0 and size >= 1, got halo={halo}, size={size}")
    w = np.ones(int(size), dtype="float64")
    if band == 0:
        return w
    if size < 2 * band:
        raise ConfigError(
            f"prediction of {size} px is too small for halo {halo}: the core must be at least "
            f"2*halo px (chip_size >= 2*overlap)"
        )
    up = 0.5 - 0.5 * np.cos(np.pi * (np.arange(band) + 0.5) / band)
    w[:band] = up
    w[-band:] = up[::-1]
    return w


def _check(core: int, halo: int) -> None:
    if core < 1 or halo < 0 or 2 * halo > core:
        raise ConfigError(
            f"need core >= 1 and 0 <= 2*halo <= core (chip_size >= 2*overlap), "
            f"got core={core}, halo={halo}"
        )


def blend_chunk(
    predictions: Mapping[tuple[int, int], np.ndarray | None],
    *,
    core: int,
    halo: int,
) -> np.ndarray:
    """Blend the predictions of a chip and its neighbours into the chip's core chunk.

    Args:
        predictions: ``{(dr, dc): sr}`` for offsets in ``{-1, 0, 1}²`` relative to the chunk's
            chip; ``sr`` is (bands, core + 2 halo, core + 2 halo) reflectance with NaN nodata,
            or None (missing, skipped or off-grid). Other offsets cannot reach the core.
        core: chunk edge in output pixels.
        halo: halo width in output pixels.

    Returns:
        float32 (bands, core, core), NaN where no prediction is valid. With no predictions at
        all (every entry None) it raises :class:`ConfigError`: leave that chunk unwritten
        (it reads as NaN / valid 0).
    """
    _check(core, halo)
    size = core + 2 * halo
    w1 = blend_weights_1d(size, halo)
    num = den = None
    for (dr, dc), pred in predictions.items():
        if pred is None:
            continue
        if max(abs(dr), abs(dc)) > 1:
            raise ConfigError(
                f"neighbour offset {(dr, dc)} out of range; valid offsets are -1, 0, 1"
            )
        p = np.asarray(pred)
        if p.ndim != 3 or p.shape[1:] != (size, size):
            raise ConfigError(
                f"prediction {(dr, dc)} has shape {p.shape}; expected (bands, {size}, {size}) "
                f"= core {core} + 2 * halo {halo}"
            )
        if num is None:
            num = np.zeros((p.shape[0], core, core), dtype="float64")
            den = np.zeros_like(num)
        oy, ox = dr * core - halo, dc * core - halo  # prediction origin in chunk pixels
        y0, y1 = max(0, oy), min(core, oy + size)
        x0, x1 = max(0, ox), min(core, ox + size)
        if y0 >= y1 or x0 >= x1:
            continue
        sub = p[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        w = w1[y0 - oy : y1 - oy, None] * w1[None, x0 - ox : x1 - ox]
        ok = np.isfinite(sub)
        wk = np.where(ok, w, 0.0)
        num[:, y0:y1, x0:x1] += wk * np.where(ok, sub, 0.0)
        den[:, y0:y1, x0:x1] += wk
    if num is None:
        raise ConfigError("blend_chunk: no predictions given (all None); the chunk has no data")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out.astype("float32")


def paste_chunk(pred: np.ndarray, *, core: int, halo: int) -> np.ndarray:
    """The naive alternative to :func:`blend_chunk`: the chip's own core, halo discarded."""
    _check(core, halo)
    return np.asarray(pred, dtype="float32")[:, halo : halo + core, halo : halo + core]


def seam_statistic(image: np.ndarray, chunk: int) -> float:
    """Mean |gradient| across chunk borders / mean |gradient| inside chunks.

    ``image`` is (..., y, x) with chunks of ``chunk`` px starting at pixel 0. A gradient is the
    difference of two adjacent pixels; it crosses a border when the pair straddles a multiple of
    ``chunk``. NaNs are ignored. About 1 for seamless mosaics; per-chip offsets make it larger.
    """
    a = np.asarray(image, dtype="float64")
    if a.ndim < 2 or chunk < 2 or (a.shape[-1] <= chunk and a.shape[-2] <= chunk):
        raise ConfigError(
            f"seam_statistic needs a (..., y, x) image spanning more than one chunk of {chunk} px "
            f"(chunk >= 2), got shape {a.shape}"
        )
    gx = np.abs(np.diff(a, axis=-1))
    gy = np.abs(np.diff(a, axis=-2))
    bx = (np.arange(gx.shape[-1]) + 1) % chunk == 0
    by = (np.arange(gy.shape[-2]) + 1) % chunk == 0
    border = np.concatenate([gx[..., bx].ravel(), gy[..., by, :].ravel()])
    inner = np.concatenate([gx[..., ~bx].ravel(), gy[..., ~by, :].ravel()])
    return float(np.nanmean(border) / np.nanmean(inner))


__all__ = ["blend_chunk", "blend_weights_1d", "paste_chunk", "seam_statistic"]
