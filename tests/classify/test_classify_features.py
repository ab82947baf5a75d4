"""Season features and the feature sources, on the real Flanders patch."""

from __future__ import annotations

import glob
import warnings

import numpy as np
import pytest

from lssr_ray.classify.features import (
    FEATURE_BANDS,
    available_sources,
    load_patch_series,
    lowres_cells,
    ndvi,
    pixel_matrix,
    season_features,
)
from lssr_ray.config import REPO_ROOT
from lssr_ray.errors import ConfigError, MissingDataError

FLANDERS_DIR = REPO_ROOT / "data" / "samples" / "worldcereal_flanders_31UDS_2018"
TANZANIA_DIR = REPO_ROOT / "data" / "samples" / "worldcereal_tanzania_37MBS_2021"


def _netcdf4(pattern, var):
    import netCDF4

    with netCDF4.Dataset(glob.glob(str(FLANDERS_DIR / pattern))[0]) as ds:
        ds.set_auto_maskandscale(False)
        return np.asarray(ds[var][:])


def test_ndvi_hand_values():
    r = np.zeros((2, 6, 1, 2), np.float32)
    r[0, 0] = [[0.1, 0.0]]  # red
    r[0, 3] = [[0.5, 0.0]]  # nir
    r[1, 0], r[1, 3] = 0.2, 0.2
    out = ndvi(r)
    np.testing.assert_allclose(out[0, 0, 0], (0.5 - 0.1) / 0.6, rtol=1e-6)
    assert np.isnan(out[0, 0, 1])  # 0/0 is undefined, not 0
    np.testing.assert_allclose(out[1], 0.0)


def test_s2_source_values_and_cloud_mask(flanders_s2):
    r, d = flanders_s2.reflectance, flanders_s2.dates
    assert r.shape == (118, 6, 64, 64) and r.dtype == np.float32 and d.shape == (118,)
    b04 = _netcdf4("S2_L2A_10m_*.nc", "B04")
    b11 = _netcdf4("S2_L2A_20m_*.nc", "B11")
    scl = _netcdf4("S2_L2A_20m_*.nc", "SCL")
    clear = np.isin(scl, (4, 5, 6)).repeat(2, 1).repeat(2, 2)
    ok = clear & (b04 > 0) & (b04 <= 10000)  # > 1.0 is masked as invalid reflectance
    np.testing.assert_allclose(r[:, 0][ok], b04[ok] * 1e-4, rtol=1e-6)
    assert np.isnan(r[:, 0][~clear]).all()  # clouds (SCL 3/8/9/10) and others masked
    # SWIR1 from 20 m: 10 m pixel (2i+1, 2j) takes 20 m pixel (i, j)
    t = int(np.argmax(clear.mean(axis=(1, 2))))
    np.testing.assert_allclose(r[t, 4, 11, 20], b11[t, 5, 10] * 1e-4, rtol=1e-6)
    # the 2018-08-02 date is 0.99 clear (PROVENANCE)
    i = int(np.argmin(np.abs(d - np.datetime64("2018-08-02T11:00"))))
    assert np.isfinite(r[i, 0]).mean() > 0.95


def test_nearest30_mask_and_cells_roundtrip(flanders_nn):
    r = flanders_nn.reflectance
    assert r.shape == (26, 6, 64, 64)
    qa = _netcdf4("L8_SR_10m_*.nc", "pixel_qa")
    assert np.isnan(r[:, 0][qa == 480]).all()  # 480 = cloud (PROVENANCE)
    b05 = _netcdf4("L8_SR_10m_*.nc", "B05")
    ok = (qa == 322) & (b05 <= 10000)
    np.testing.assert_allclose(r[:, 3][ok], b05[ok] * 1e-4, rtol=1e-6)  # nir = Landsat B05
    cells, t30, (pr, pc) = lowres_cells(flanders_nn)
    assert (pr, pc) == (1, 2) and t30.a == 30 and t30.c == 501360 - 20 and t30.f == 5629680 + 10
    back = cells.repeat(3, 2).repeat(3, 3)[:, :, pr : pr + 64, pc : pc + 64]
    fin = np.isfinite(r)
    np.testing.assert_array_equal(back[fin], r[fin])


def test_bicubic_interpolates_through_cell_centres(flanders_nn):
    bic = load_patch_series(FLANDERS_DIR, "bicubic")
    cells, _, (pr, pc) = lowres_cells(flanders_nn)
    # the 10 m pixel at the centre of a 30 m cell samples the cubic kernel at a knot: exact value
    rows = np.arange((1 - pr) % 3, 64, 3)  # patch row 3k - pr + 1 is the centre of cell row k
    cols = np.arange((1 - pc) % 3, 64, 3)
    rows, cols = rows[(rows >= 3) & (rows < 61)], cols[(cols >= 3) & (cols < 61)]
    cr, cc = (rows + pr) // 3, (cols + pc) // 3
    c = cells[:, :, cr][:, :, :, cc]
    b = bic.reflectance[:, :, rows][:, :, :, cols]
    ok = np.isfinite(c) & np.isfinite(b)
    assert ok.mean() > 0.3
    np.testing.assert_allclose(b[ok], c[ok], atol=1e-5)
    # off-centre pixels are interpolated, not copied: they differ from nearest neighbour
    both = np.isfinite(bic.reflectance) & np.isfinite(flanders_nn.reflectance)
    diff = np.abs(bic.reflectance - flanders_nn.reflectance)[both]
    assert (diff > 1e-4).mean() > 0.3 and np.median(diff) < 0.02


def test_lssr_source_is_pluggable(flanders_nn):
    with pytest.raises(ConfigError, match=r"sr=.*\['s2', 'nearest30', 'bicubic'\]"):
        load_patch_series(FLANDERS_DIR, "lssr")
    nn_sr = load_patch_series(FLANDERS_DIR, "lssr", sr=lambda lr: lr.repeat(3, 2).repeat(3, 3))
    fin = np.isfinite(flanders_nn.reflectance)
    np.testing.assert_array_equal(nn_sr.reflectance[fin], flanders_nn.reflectance[fin])
    with pytest.raises(ConfigError, match="returned"):
        load_patch_series(FLANDERS_DIR, "lssr", sr=lambda lr: lr)
    assert available_sources(FLANDERS_DIR, sr=lambda lr: lr)[-1] == "lssr"


def test_unknown_or_unavailable_source():
    with pytest.raises(ConfigError, match="valid: .*'s2'"):
        load_patch_series(FLANDERS_DIR, "sentinel")
    assert available_sources(TANZANIA_DIR) == []  # S2 20 m only: no red/green/blue
    with pytest.raises(MissingDataError, match="S2_L2A_10m"):
        load_patch_series(TANZANIA_DIR, "s2")


def test_season_features_monthly_median_and_fixed_list(flanders_s2):
    r, d = flanders_s2.reflectance[:, :, :32, :32], flanders_s2.dates  # a quarter keeps it fast
    X, names = season_features(r, d, season_start="2017-12", n_months=12, quantiles=(0.5,))
    assert X.shape == (7 * 12 + 7, 32, 32) and len(names) == X.shape[0] == len(set(names))
    # m07 = July 2018: independent reference with numpy over the July dates
    july = (d >= np.datetime64("2018-07-01")) & (d < np.datetime64("2018-08-01"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels in a cloudy month
        ref = np.nanmedian(r[july, 3], axis=0)
    np.testing.assert_allclose(X[names.index("m07_nir")], ref, equal_nan=True)
    nd = ndvi(r[july])
    season = (d >= np.datetime64("2017-12-01")) & (d < np.datetime64("2018-12-01"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(X[names.index("m07_ndvi")], np.nanmedian(nd, axis=0), rtol=1e-6)
        np.testing.assert_allclose(X[names.index("q50_red")], np.nanquantile(r[season, 0], 0.5, axis=0),
                                   rtol=1e-6, equal_nan=True)
    # fewer dates -> same feature list (missing months become NaN)
    X2, names2 = season_features(r[::5], d[::5], season_start="2017-12", n_months=12, quantiles=(0.5,))
    assert names2 == names and X2.shape == X.shape
    assert np.isnan(X2).mean() > np.isnan(X).mean()
    # dates outside the season are ignored
    X3, _ = season_features(r[season], d[season], season_start="2017-12", n_months=12, quantiles=(0.5,))
    np.testing.assert_array_equal(X3, X)


def test_season_features_aux_and_bad_input(flanders_s2):
    r, d = flanders_s2.reflectance[:10], flanders_s2.dates[:10]
    dem = np.full((1, 64, 64), 40.0, np.float32)
    X, names = season_features(r, d, season_start="2017-08", n_months=3, aux=dem, aux_names=["dem"])
    assert names[-1] == "aux_dem" and np.all(X[-1] == 40.0)
    assert names[: len(FEATURE_BANDS)] == [f"m00_{b}" for b in FEATURE_BANDS]
    with pytest.raises(ConfigError, match=r"\(T, 6, H, W\)"):
        season_features(r[:, :4], d, season_start="2017-08")
    with pytest.raises(ConfigError, match="dates"):
        season_features(r, d[:3], season_start="2017-08")
    m = np.zeros((64, 64), bool)
    m[3, 5] = m[10, 1] = True
    P = pixel_matrix(X, m)
    np.testing.assert_array_equal(P[1], X[:, 10, 1])


@pytest.mark.parametrize("shape, cloud", [((5, 7, 30, 30), 0.1), ((17, 7, 12, 12), 0.6), ((1, 7, 9, 9), 0.3),
                                          ((3, 2, 8, 8), 0.0)])
def test_vectorised_nanquantile_equals_numpys_bit_for_bit(shape, cloud):
    """season_features' quantiles (the stage's hot spot: numpy's nanquantile loops in Python per
    pixel) are numpy's nanquantile values exactly, all-NaN series NaN."""
    import warnings

    from lssr_ray.classify.nanstats import nanquantile_first_axis

    rng = np.random.default_rng(shape[0])
    a = rng.normal(0.2, 0.3, shape).astype(np.float32)
    a[rng.random(shape) < cloud] = np.nan
    a[:, :, 0, 0] = np.nan  # one series with no observation
    q = (0.0, 0.1, 0.5, 0.9, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanquantile(a, q, axis=0)
    got = nanquantile_first_axis(a, q)
    assert np.isnan(got[:, :, 0, 0]).all()
    # compared as season_features keeps them (float32): numpy's own result dtype depends on
    # whether its first series is all-NaN (apply_along_axis takes the first result's dtype)
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    a[:, :, 0, 0] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanquantile(a, q, axis=0)
    assert want.dtype == np.float64  # the first series observed: numpy interpolates in float64
    np.testing.assert_array_equal(nanquantile_first_axis(a, q), want)
