"""Raster reads: windowed/aligned, warped, HLS scaling + Fmask, block-read-then-cut, errors."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import rowcol, xy

from lssr_ray.config import OUTPUT_BANDS, REPO_ROOT, GridConfig
from lssr_ray.data import hls
from lssr_ray.data.grid import OutputGrid
from lssr_ray.data.readers import read_lowres, read_raster
from lssr_ray.errors import CRSMismatchError, MissingDataError

ALABAMA = REPO_ROOT / "data" / "samples" / "landsat8_l1t_alabama_2015"

B4 = ALABAMA / "l8_B4.tif"


@pytest.fixture(scope="module")
def b4():
    with rasterio.open(B4) as src:
        return src.read(1), src.transform, src.crs


def test_aligned_window_is_exact_and_boundless(b4):
    arr, t, crs = b4
    # a window that starts 5 px left/above the raster: off-raster pixels get the fill value
    dst_t = t @ Affine.translation(-5, -5)
    out = read_raster(str(B4), str(crs), transform=dst_t, shape=(40, 50), fill=0)
    assert out.shape == (1, 40, 50)
    np.testing.assert_array_equal(out[0, 5:, 5:], arr[:35, :45])
    assert (out[0, :5] == 0).all() and (out[0, :, :5] == 0).all()


def test_warp_to_10m_and_other_zone_matches_point_sampling(b4):
    arr, t, crs = b4
    # 10 m grid in the neighbouring zone 17N: every target centre must take the value of the
    # source pixel containing it (nearest), found here with pyproj + rasterio.transform.rowcol
    to17 = Transformer.from_crs(crs, "EPSG:32617", always_xy=True)
    x0, y0 = to17.transform(t.c + 3000, t.f - 3000)
    dst_t = Affine(10, 0, round(x0), 0, -10, round(y0))
    out = read_raster(str(B4), "EPSG:32617", transform=dst_t, shape=(60, 60), resampling="nearest")[0]
    rows, cols = np.mgrid[0:60:7, 0:60:7]
    xs, ys = xy(dst_t, rows.ravel(), cols.ravel())
    back = Transformer.from_crs("EPSG:32617", crs, always_xy=True)
    sx, sy = back.transform(xs, ys)
    r, c = rowcol(t, sx, sy)
    ref = arr[np.asarray(r), np.asarray(c)]
    got = out[rows.ravel(), cols.ravel()]
    assert (got == ref).mean() > 0.95  # ties on pixel edges may fall either way
    assert np.abs(got.astype(int) - ref.astype(int)).max() < 4000


def _grid_for(granule, *, shape=(150, 150)):
    return OutputGrid(crs=granule.crs, input_transform=granule.transform, input_shape=shape,
                      scale=GridConfig().scale)


def test_read_lowres_scaling_band_order_mask_month(l30_granule):
    g = l30_granule
    grid = _grid_for(g)
    lo = read_lowres(g, grid, window=(10, 20, 64, 64))
    assert lo.lr.shape == (6, 64, 64) and lo.lr.dtype == np.float32 and lo.month == 8
    with rasterio.open(g.assets["Fmask"]) as src:
        fm = src.read(1)[10:74, 20:84]
    for i, name in enumerate(OUTPUT_BANDS):
        with rasterio.open(g.assets[hls.band_id("L30", name)]) as src:
            dn = src.read(1)[10:74, 20:84]
        ref = dn.astype(np.float32) * np.float32(1e-4)
        clear = ((fm & 0b1110) == 0) & (fm != 255) & (dn != -9999) & ((fm & 0b10000) == 0)
        np.testing.assert_array_equal(lo.lr[i][clear], ref[clear])
        assert np.isnan(lo.lr[i][~clear]).all()
    assert 0.5 < lo.clear_fraction <= 1.0
    # reflectance in a plausible range for a vegetated scene
    assert 0.0 < np.nanmedian(lo.lr[3]) < 0.6


def test_block_read_once_cut_many_equals_direct_reads(l30_granule):
    grid = _grid_for(l30_granule)
    block = read_lowres(l30_granule, grid, window=(-4, -4, 100, 100))
    for win in [(-4, -4, 32, 32), (20, 60, 32, 32), (64, 64, 32, 32)]:
        a = block.cut(win)
        b = read_lowres(l30_granule, grid, window=win)
        np.testing.assert_array_equal(a.lr, b.lr)
        np.testing.assert_array_equal(a.clear, b.clear)
    # the off-granule halo is nodata, not clear
    assert not block.cut((-4, -4, 32, 32)).clear[:4].any()
    with pytest.raises(ValueError, match="not inside"):
        block.cut((90, 90, 32, 32))


def test_missing_band_names_granule_band_and_present(l30_granule):
    assets = {k: v for k, v in l30_granule.assets.items() if k != "B05"}
    g = dataclasses.replace(l30_granule, assets=assets)
    with pytest.raises(MissingDataError) as e:
        read_lowres(g, _grid_for(g), window=(0, 0, 8, 8))
    msg = str(e.value)
    assert g.id in msg and "'nir' (B05)" in msg and "B04" in msg and "Fmask" in msg


def test_missing_and_corrupt_files(tmp_path, l30_granule):
    with pytest.raises(MissingDataError, match="not found"):
        read_raster(str(tmp_path / "nope.tif"), "EPSG:32616", transform=Affine(30, 0, 0, 0, -30, 0), shape=(2, 2))
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(B4.read_bytes()[:2000])  # a truncated GeoTIFF
    with pytest.raises(MissingDataError, match="corrupt"):
        read_raster(str(bad), "EPSG:32616", transform=Affine(30, 0, 452475, 0, -30, 3408645), shape=(64, 64))


def test_no_crs_is_crs_mismatch(tmp_path):
    p = tmp_path / "nocrs.tif"
    with warnings.catch_warnings():  # rasterio warns about the missing geotransform; expected here
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(p, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as dst:
            dst.write(np.ones((1, 4, 4), np.uint8))
        with pytest.raises(CRSMismatchError, match="no CRS"):
            read_raster(str(p), "EPSG:32616", transform=Affine(30, 0, 0, 0, -30, 0), shape=(2, 2))
