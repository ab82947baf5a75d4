"""NaN-aware statistics along the time axis of pixel series, at array speed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["nanquantile_first_axis"]


def nanquantile_first_axis(a: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """``np.nanquantile(a, quantiles, axis=0)`` (method ``linear``), vectorised.

    numpy's nanquantile runs a Python-level quantile per pixel series (about 0.3 ms each: a
    minute for a 120 x 120 store); one sort along time (NaNs sort last) and numpy's own
    interpolation rule (``_lerp``: from the upper neighbour when the weight is >= 0.5) give
    the same values at array speed. All-NaN series give NaN.
    """
    srt = np.sort(np.asarray(a), axis=0)
    n = np.isfinite(srt).sum(axis=0)
    out = np.full((len(quantiles), *srt.shape[1:]), np.nan, np.float64)  # float64 like numpy's result
    last = np.maximum(n - 1, 0)
    for i, q in enumerate(quantiles):
        virtual = float(q) * last  # float64 virtual index into the n valid values
        lo = np.floor(virtual).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        gamma = virtual - lo
        below = np.take_along_axis(srt, lo[None], axis=0)[0]
        above = np.take_along_axis(srt, hi[None], axis=0)[0]
        diff = above - below  # in the data's dtype, as numpy's _lerp; the weighting in float64
        val = np.where(gamma >= 0.5, above - diff * (1 - gamma), below + diff * gamma)
        out[i] = np.where(n > 0, val, np.nan)
    return out
