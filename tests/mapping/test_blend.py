"""Blending overlapping chip predictions: weights, NaN handling, an independent mosaic reference,
and the seam statistic separating blended from naively pasted mosaics."""

from __future__ import annotations

import numpy as np
import pytest

from lssr_ray.config import GridConfig
from lssr_ray.errors import ConfigError
from lssr_ray.mapping.blend import blend_chunk, blend_weights_1d, paste_chunk, seam_statistic

# chip_size 16 input px, overlap 4 -> stride 12: core 36 output px, halo 6 output px
GRID = GridConfig(chip_size=16, overlap=4)
CORE = GRID.stride * GRID.scale
HALO = GRID.overlap // 2 * GRID.scale
SIZE = CORE + 2 * HALO
NR, NC = 4, 5  # chips on the lattice


def smooth_truth(rng: np.random.Generator, bands: int = 2) -> np.ndarray:
    """A smooth reflectance-like field (bands, NR*CORE, NC*CORE) in about [0.1, 0.5]."""
    h, w = NR * CORE, NC * CORE
    yy, xx = np.mgrid[0:h, 0:w] / 40.0
    out = []
    for _ in range(bands):
        f = 0.3 + sum(
            0.05
            * np.sin(k * xx * rng.uniform(0.5, 1.5) + rng.uniform(0, 6))
            * np.cos(k * yy * rng.uniform(0.5, 1.5) + rng.uniform(0, 6))
            for k in (1, 2)
        )
        out.append(f)
    return np.stack(out).astype("float32")


def chip_predictions(truth, rng, *, bias_sd=0.02, noise_sd=0.003):
    """Each chip sees truth over core+halo (NaN off-grid) plus its own bias and noise."""
    b, h, w = truth.shape
    padded = np.full((b, h + 2 * HALO, w + 2 * HALO), np.nan, dtype="float32")
    padded[:, HALO : HALO + h, HALO : HALO + w] = truth
    preds = {}
    for r in range(NR):
        for c in range(NC):
            win = padded[:, r * CORE : r * CORE + SIZE, c * CORE : c * CORE + SIZE]
            bias = rng.normal(0, bias_sd, size=(b, 1, 1))
            preds[(r, c)] = (win + bias + rng.normal(0, noise_sd, win.shape)).astype("float32")
    return preds


def neighbourhood(preds, r, c):
    return {(dr, dc): preds.get((r + dr, c + dc)) for dr in (-1, 0, 1) for dc in (-1, 0, 1)}


def mosaic(preds, fn):
    b = next(iter(preds.values())).shape[0]
    out = np.full((b, NR * CORE, NC * CORE), np.nan, dtype="float32")
    for r in range(NR):
        for c in range(NC):
            out[:, r * CORE : (r + 1) * CORE, c * CORE : (c + 1) * CORE] = fn(r, c)
    return out


def reference_mosaic(preds):
    """Independent reference: paint every prediction onto one canvas with explicit weights."""
    b = next(iter(preds.values())).shape[0]
    h, w = NR * CORE + 2 * HALO, NC * CORE + 2 * HALO
    num = np.zeros((b, h, w))
    den = np.zeros((b, h, w))
    t = np.arange(SIZE)
    # distance-based raised cosine written from the formula, not from blend_weights_1d
    band = 2 * HALO
    ramp = np.clip(np.minimum(t + 0.5, SIZE - t - 0.5) / band, 0, 1)
    w1 = np.where(ramp < 1, np.sin(np.pi / 2 * ramp) ** 2, 1.0)
    w2 = np.outer(w1, w1)
    for (r, c), p in preds.items():
        sl = (slice(None), slice(r * CORE, r * CORE + SIZE), slice(c * CORE, c * CORE + SIZE))
        ok = np.isfinite(p)
        num[sl] += np.where(ok, p * w2, 0)
        den[sl] += np.where(ok, w2, 0)
    with np.errstate(invalid="ignore"):
        full = num / den
    return full[:, HALO:-HALO, HALO:-HALO]


def test_weights_sum_to_one_across_band_and_one_inside():
    w = blend_weights_1d(SIZE, HALO)
    band = 2 * HALO
    # the falling end of one chip meets the rising start of the next chip
    np.testing.assert_allclose(w[-band:] + w[:band], 1.0, atol=1e-12)
    assert np.all(w[band:-band] == 1.0)
    assert 0 < w[0] < 0.05 and np.all(np.diff(w[:band]) > 0)


def test_matches_independent_mosaic_reference():
    rng = np.random.default_rng(0)
    preds = chip_predictions(smooth_truth(rng), rng)
    got = mosaic(preds, lambda r, c: blend_chunk(neighbourhood(preds, r, c), core=CORE, halo=HALO))
    ref = reference_mosaic(preds)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_constant_predictions_and_exact_interior():
    preds = {
        (r, c): np.full((1, SIZE, SIZE), 0.25 + 0.01 * (r * NC + c), "float32")
        for r in range(NR)
        for c in range(NC)
    }
    out = blend_chunk(neighbourhood(preds, 1, 1), core=CORE, halo=HALO)
    own = preds[(1, 1)][0, 0, 0]
    # interior (farther than halo from the border): exactly the chip's own value
    assert np.all(out[:, HALO:-HALO, HALO:-HALO] == own)
    # the border pixel: own weight at local index HALO+CORE-1, the right neighbour's at HALO-1
    w = blend_weights_1d(SIZE, HALO)
    right = preds[(1, 2)][0, 0, 0]
    mid = CORE // 2
    assert w[HALO + CORE - 1] + w[HALO - 1] == pytest.approx(1.0, abs=1e-12)
    expected = own * w[HALO + CORE - 1] + right * w[HALO - 1]
    assert out[0, mid, -1] == pytest.approx(expected, abs=1e-6)
    assert out[0, mid, -1] != own
    # all-equal predictions give that value everywhere (weights sum to 1)
    same = {k: np.full((1, SIZE, SIZE), 0.3, "float32") for k in preds}
    np.testing.assert_allclose(
        blend_chunk(neighbourhood(same, 2, 2), core=CORE, halo=HALO), 0.3, atol=1e-7
    )


def test_nan_aware():
    a = np.full((1, SIZE, SIZE), 0.2, "float32")
    b = np.full((1, SIZE, SIZE), 0.4, "float32")
    b[:, :, : 2 * HALO] = np.nan  # the right neighbour's halo over our chunk is nodata
    out = blend_chunk({(0, 0): a, (0, 1): b}, core=CORE, halo=HALO)
    assert np.all(out == np.float32(0.2))  # NaN contributes no weight; renormalised
    a2 = a.copy()
    a2[:, HALO : HALO + 5, HALO : HALO + 5] = np.nan  # interior hole nobody else covers
    out2 = blend_chunk({(0, 0): a2, (0, 1): b, (-1, 0): None}, core=CORE, halo=HALO)
    assert np.isnan(out2[:, :5, :5]).all() and np.isfinite(out2[:, 5:, 5:]).all()


def test_seam_statistic_blended_below_bound_pasted_above():
    rng = np.random.default_rng(1)
    truth = smooth_truth(rng)
    preds = chip_predictions(truth, rng)
    blended = mosaic(
        preds, lambda r, c: blend_chunk(neighbourhood(preds, r, c), core=CORE, halo=HALO)
    )
    pasted = mosaic(preds, lambda r, c: paste_chunk(preds[(r, c)], core=CORE, halo=HALO))
    s_truth = seam_statistic(truth, CORE)
    s_blend = seam_statistic(blended, CORE)
    s_paste = seam_statistic(pasted, CORE)
    print(f"seam statistic: truth {s_truth:.3f} blended {s_blend:.3f} pasted {s_paste:.3f}")
    assert abs(s_truth - 1) < 0.1
    assert s_blend < 1.2
    assert s_paste > 2.0


def test_bad_geometry_rejected():
    with pytest.raises(ConfigError, match="expected"):
        blend_chunk({(0, 0): np.zeros((6, SIZE - 1, SIZE - 1))}, core=CORE, halo=HALO)
    with pytest.raises(ConfigError, match="chip_size >= 2\\*overlap"):
        blend_chunk({(0, 0): np.zeros((6, 30, 30))}, core=10, halo=10)
    with pytest.raises(ConfigError, match="more than one chunk"):
        seam_statistic(np.zeros((10, 10)), 36)
