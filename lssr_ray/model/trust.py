"""Trust layer: per-pixel consistency and uncertainty of a 10 m output, and how far to trust them.

NumPy in, NumPy out; no mapping code. Arrays are reflectance, (B, C, H, W) at 10 m and
(B, C, h, w) at 30 m (H = 3h), NaN = no data.

- :func:`consistency`: the 10 m output degraded with the sensor PSF back to 30 m, minus the 30 m
  input: what the model changed that the sensor could have seen (0 for any output that is
  consistent with its input). The degradation is :func:`lssr_ray.data.psf.degrade`, the one
  that makes the synthetic training pairs.
- :func:`uncertainty`: per-pixel spread (standard deviation) of a predictor's output over cheap
  test-time variants: flips / 90-degree rotations of the inputs with the output turned back, and
  aux dropout (one ``present`` flag cleared).
- :func:`rank_correlation`: Spearman rho between per-pixel uncertainty and absolute error.
- :func:`correctness_fractions`: opensr-test's improvement / omission / hallucination fractions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lssr_ray.config import SCALE
from lssr_ray.errors import ConfigError

#: Spatial test-time variants: name -> (forward transform, inverse) on the last two axes.
SPATIAL_VARIANTS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "identity": (lambda a: a, lambda a: a),
    "flip_x": (lambda a: a[..., ::-1], lambda a: a[..., ::-1]),
    "flip_y": (lambda a: a[..., ::-1, :], lambda a: a[..., ::-1, :]),
    "rot90": (lambda a: np.rot90(a, 1, axes=(-2, -1)), lambda a: np.rot90(a, -1, axes=(-2, -1))),
    "rot180": (lambda a: np.rot90(a, 2, axes=(-2, -1)), lambda a: np.rot90(a, -2, axes=(-2, -1))),
    "rot270": (lambda a: np.rot90(a, 3, axes=(-2, -1)), lambda a: np.rot90(a, -3, axes=(-2, -1))),
}
#: Aux-dropout variants: name -> index of the ``present`` flag cleared (order of lssr_ray.data.pairs.AUX).
DROPOUT_VARIANTS: dict[str, int] = {"no_dem": 0, "no_landcover": 1, "no_sar": 2}
DEFAULT_VARIANTS: tuple[str, ...] = ("identity", "flip_x", "rot90", "no_sar")
"""Four forward passes: the plain one, a flip, a rotation and SAR dropout (the costliest aux)."""
#: Batch keys that are rasters (turned with the image); everything else is passed unchanged.
_RASTER_KEYS = ("lr", "lr_valid", "dem", "landcover", "sar", "hr", "hr_valid")


def consistency(sr_10m: np.ndarray, lr_30m: np.ndarray, psf: float | None = None, *, scale: int = SCALE) -> np.ndarray:
    """``degrade(sr_10m) - lr_30m`` per band at 30 m, (B, C, h, w) (or (C, h, w) unbatched).

    ``psf``: Gaussian PSF sigma in 10 m pixels (None: the project default,
    :data:`lssr_ray.data.psf.DEFAULT_MTF_AT_NYQUIST`). NaN where either side has no data.
    """
    from lssr_ray.data.psf import degrade

    sr, lr = np.asarray(sr_10m, np.float32), np.asarray(lr_30m, np.float32)
    single = sr.ndim == 3
    if single:
        sr, lr = sr[None], lr[None]
    if sr.ndim != 4 or lr.shape[:2] != sr.shape[:2] or tuple(np.multiply(lr.shape[-2:], scale)) != sr.shape[-2:]:
        raise ConfigError(f"consistency: sr {sr.shape} must be lr {lr.shape} x {scale} on the last two axes")
    out = np.stack([degrade(s, scale, sigma=psf)[0] for s in sr]) - lr
    return out[0] if single else out


def _transform_batch(batch: dict[str, Any], fwd: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
    return {k: (np.ascontiguousarray(fwd(np.asarray(v))) if k in _RASTER_KEYS else v) for k, v in batch.items()}


def uncertainty(
    predict: Callable[[dict[str, Any]], np.ndarray],
    batch: dict[str, Any],
    variants: Sequence[str] = DEFAULT_VARIANTS,
    *,
    return_outputs: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-pixel standard deviation (B, C, H, W) of ``predict`` over test-time ``variants``.

    ``predict`` maps the project's batch dict (docs/ARCHITECTURE.md; numpy, leading batch dim) to
    an output array (B, C, H, W) on the batch's own grid, e.g. ``lambda b: pipe(b)["sr"]``.
    Spatial variants (:data:`SPATIAL_VARIANTS`) turn every raster of the batch, predict, and turn
    the output back; dropout variants (:data:`DROPOUT_VARIANTS`) clear one ``present`` flag.
    Square chips only for the 90-degree rotations. ``return_outputs``: also return the aligned
    output of each variant (``identity`` is the plain prediction).
    """
    if len(variants) < 2:
        raise ConfigError(f"uncertainty needs at least 2 variants, got {list(variants)}")
    unknown = sorted(set(variants) - set(SPATIAL_VARIANTS) - set(DROPOUT_VARIANTS))
    if unknown:
        raise ConfigError(f"unknown variants {unknown}; valid: {sorted(SPATIAL_VARIANTS) + sorted(DROPOUT_VARIANTS)}")
    outs: dict[str, np.ndarray] = {}
    for name in variants:
        if name in SPATIAL_VARIANTS:
            fwd, inv = SPATIAL_VARIANTS[name]
            outs[name] = np.ascontiguousarray(inv(np.asarray(predict(_transform_batch(batch, fwd)))))
        else:
            if "present" not in batch:
                raise ConfigError(f"variant {name} needs a 'present' entry in the batch")
            b = dict(batch)
            present = np.array(batch["present"], dtype=np.float32, copy=True)
            present[:, DROPOUT_VARIANTS[name]] = 0.0
            b["present"] = present
            outs[name] = np.asarray(predict(b))
    spread = np.std(np.stack(list(outs.values())), axis=0).astype(np.float32)
    return (spread, outs) if return_outputs else spread


def rank_correlation(uncert: np.ndarray, abs_error: np.ndarray) -> float:
    """Spearman rho (scipy.stats.spearmanr) between two per-pixel maps over pixels finite in
    both; NaN when fewer than 3 such pixels or either map is constant."""
    from scipy.stats import spearmanr

    u, e = np.asarray(uncert, np.float64).ravel(), np.asarray(abs_error, np.float64).ravel()
    ok = np.isfinite(u) & np.isfinite(e)
    if ok.sum() < 3 or np.ptp(u[ok]) == 0 or np.ptp(e[ok]) == 0:
        return float("nan")
    return float(spearmanr(u[ok], e[ok]).statistic)


def correctness_fractions(
    sr: np.ndarray,
    lr_up: np.ndarray,
    hr: np.ndarray,
    *,
    im_lambda: float = 0.05,
    om_lambda: float = 0.05,
    ha_lambda: float = 0.05,
    threshold_quantile: float | None = 0.75,
) -> dict[str, float]:
    """Improvement / omission / hallucination fractions of opensr-test's correctness test.

    Definitions (Aybar et al., "A comprehensive benchmark for optical remote sensing image
    super-resolution", IEEE GRSL 2024; opensr-test docs "Metrics / correctness" and its
    ``correctness.py``), per pixel with distances d = L1 over bands (opensr-test's ``l1``
    distance, ``pixel`` aggregation):

    - d_ref = d(LR upsampled, HR), d_im = d(SR, HR) / d_ref, d_om = d(SR, LR upsampled) / d_ref;
    - H = d_im + d_om - 1; improvement = d_im + d_om (1 - exp(-im_lambda H)),
      omission = d_om + d_im (1 - exp(-om_lambda H)), hallucination = exp(-ha_lambda d_im d_om);
    - each pixel is classed as the smallest of the three (the argmax of their softmin); the
      fractions are the class counts over the pixels kept by the mask.
    - Mask: pixels where any of d_ref, d_im, d_om (before the division) exceeds the
      ``threshold_quantile`` quantile of d_ref (opensr-test's ``auto75``), so flat areas, where
      no method can add detail, do not dominate. None: every valid pixel.

    The lambdas default to opensr-test's ``Config`` values (0.05). opensr-test also harmonises
    SR to HR (spectral and spatial alignment) first; here the caller passes arrays on one grid
    (apply the radiometric normalisation of the evaluation beforehand if wanted). Arrays (C, H, W)
    or (B, C, H, W), reflectance, NaN = no data. Returns the three fractions (sum 1) and
    ``n_pixels``; NaN fractions when no pixel is kept.
    """
    sr, lr_up, hr = (np.asarray(a, np.float64) for a in (sr, lr_up, hr))
    if not sr.shape == lr_up.shape == hr.shape:
        raise ConfigError(f"sr {sr.shape}, lr_up {lr_up.shape} and hr {hr.shape} must have one shape")
    ax = -3  # the band axis
    d_ref = np.abs(lr_up - hr).mean(ax)
    d_im_abs = np.abs(sr - hr).mean(ax)
    d_om_abs = np.abs(sr - lr_up).mean(ax)
    ok = np.isfinite(d_ref) & np.isfinite(d_im_abs) & np.isfinite(d_om_abs) & (d_ref > 0)
    if threshold_quantile is not None and ok.any():
        t = float(np.quantile(d_ref[ok], threshold_quantile))
        ok &= (d_ref > t) | (d_im_abs > t) | (d_om_abs > t)
    n = int(ok.sum())
    if n == 0:
        return {"improvement": float("nan"), "omission": float("nan"), "hallucination": float("nan"), "n_pixels": 0}
    d_im, d_om = d_im_abs[ok] / d_ref[ok], d_om_abs[ok] / d_ref[ok]
    h = d_im + d_om - 1
    scores = np.stack([d_im + d_om * (1 - np.exp(-im_lambda * h)),
                       d_om + d_im * (1 - np.exp(-om_lambda * h)),
                       np.exp(-ha_lambda * d_im * d_om)])
    cls = np.argmin(scores, axis=0)
    return {"improvement": float(np.mean(cls == 0)), "omission": float(np.mean(cls == 1)),
            "hallucination": float(np.mean(cls == 2)), "n_pixels": n}


__all__ = ["DEFAULT_VARIANTS", "DROPOUT_VARIANTS", "SPATIAL_VARIANTS", "consistency", "correctness_fractions",
           "rank_correlation", "uncertainty"]
