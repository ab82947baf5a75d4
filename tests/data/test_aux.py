"""Aux layers on the 10 m chip grid: real Flanders DEM, land cover and Sentinel-1 values."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import xy
from rasterio.warp import Resampling, calculate_default_transform, reproject
from scipy.interpolate import RegularGridInterpolator

from lssr_ray.config import REPO_ROOT
from lssr_ray.data.aux import read_aux, warp_layer
from lssr_ray.errors import ConfigError, MissingDataError

FLANDERS = REPO_ROOT / "data" / "samples" / "worldcereal_flanders_31UDS_2018"
DEM = FLANDERS / "dem_31UDS.tif"
CRS = "EPSG:32631"


@pytest.fixture(scope="module")
def dem_src():
    with rasterio.open(DEM) as src:
        return src.read(1).astype(np.float32), src.transform


@pytest.fixture(scope="module")
def flanders_layers(tmp_path_factory):
    """Land cover (10 m, LC codes) and S1 VV/VH dB (20 m, one date) GeoTIFFs from the real patch."""
    from lssr_ray.data.worldcereal import open_patch

    d = tmp_path_factory.mktemp("flanders_aux")
    p = open_patch(FLANDERS)
    lc = p.labels["LC"].fillna(0).astype("int16")
    lc.rio.write_nodata(0).rio.to_raster(d / "lc.tif")
    s1 = p.s1
    sar = np.stack([s1["VV"][5].values, s1["VH"][5].values]).astype(np.float32)
    t = s1["VV"].rio.transform()
    with rasterio.open(d / "sar.tif", "w", driver="GTiff", width=32, height=32, count=2, dtype="float32",
                       crs=CRS, transform=t, nodata=np.nan) as dst:
        dst.write(sar)
    return {"lc": d / "lc.tif", "sar": d / "sar.tif", "lc_arr": lc.values, "sar_arr": sar}


def test_dem_known_values_at_colocated_points(dem_src):
    src, t = dem_src
    # 10 m grid whose even pixel centres fall on the 20 m DEM pixel centres
    dst_t = Affine(10, 0, t.c + 5, 0, -10, t.f - 5)
    out = warp_layer(str(DEM), CRS, transform=dst_t, shape=(62, 62), kind="dem")[0]
    i, j = np.mgrid[0:31, 0:31]
    assert xy(dst_t, 2 * i[0, 3], 2 * j[0, 3]) == xy(t, i[0, 3], j[0, 3])  # co-located centres
    np.testing.assert_allclose(out[2 * i, 2 * j], src[i, j], atol=1e-4)


def test_dem_bilinear_on_project_grid_matches_scipy(dem_src):
    src, t = dem_src
    # the project grid: origin on the 30 m lattice (501360 = 16712*30), 10 m pixels
    dst_t = Affine(10, 0, 501360.0, 0, -10, 5629680.0)
    out = warp_layer(str(DEM), CRS, transform=dst_t, shape=(64, 64), kind="dem")[0]
    cx = t.c + (np.arange(32) + 0.5) * t.a
    cy = t.f + (np.arange(32) + 0.5) * t.e
    f = RegularGridInterpolator((cy[::-1], cx), src[::-1])
    rows, cols = np.mgrid[1:63, 1:63]  # interior: inside the hull of the source centres
    xs, ys = xy(dst_t, rows.ravel(), cols.ravel())
    ref = f(np.column_stack([ys, xs])).reshape(rows.shape)
    np.testing.assert_allclose(out[1:63, 1:63], ref, atol=1e-3)
    assert np.isnan(warp_layer(str(DEM), CRS, transform=dst_t @ Affine.translation(-10, 0), shape=(4, 4), kind="dem")[0, :, 0]).all()


def test_dem_in_other_crs_is_reprojected(tmp_path):
    # the same DEM stored in lon/lat (EPSG:4326, ~5 m cells) must land on the same UTM values
    dst_crs = "EPSG:4326"
    with rasterio.open(DEM) as s:
        tt, w, h = calculate_default_transform(s.crs, dst_crs, s.width, s.height, *s.bounds, resolution=0.00005)
        arr = np.full((h, w), np.nan, np.float32)
        reproject(rasterio.band(s, 1), arr, dst_transform=tt, dst_crs=dst_crs, resampling=Resampling.nearest,
                  dst_nodata=np.nan)
    p = tmp_path / "dem_4326.tif"
    with rasterio.open(p, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32", crs=dst_crs,
                       transform=tt, nodata=np.nan) as dst:
        dst.write(arr, 1)
    dst_t = Affine(10, 0, 501360.0, 0, -10, 5629680.0)
    a = warp_layer(str(p), CRS, transform=dst_t, shape=(64, 64), kind="dem")[0]
    b = warp_layer(str(DEM), CRS, transform=dst_t, shape=(64, 64), kind="dem")[0]
    inner = (slice(4, 60), slice(4, 60))
    assert np.isfinite(a[inner]).all()
    assert np.nanmean(np.abs(a[inner] - b[inner])) < 0.5 and np.nanmax(np.abs(a[inner] - b[inner])) < 3.0
    # and the values are the DEM's (35..47 m), not a stretched or flipped copy
    assert 34 <= np.nanmin(a) and np.nanmax(a) <= 48
    assert np.corrcoef(a[inner].ravel(), b[inner].ravel())[0, 1] > 0.9


def test_landcover_nearest_and_mode(flanders_layers):
    lc = flanders_layers["lc_arr"]
    # same 10 m lattice shifted by whole pixels: exact copy (nearest), 0 outside
    dst_t = Affine(10, 0, 501360.0 - 30, 0, -10, 5629680.0)
    out = warp_layer(str(flanders_layers["lc"]), CRS, transform=dst_t, shape=(64, 64), kind="landcover")[0]
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out[:, 3:], lc[:, :61])
    assert (out[:, :3] == 0).all()
    # 30 m target (coarser): mode of each 3x3 block, never a mix of codes
    t30 = Affine(30, 0, 501360.0, 0, -30, 5629680.0)
    m = warp_layer(str(flanders_layers["lc"]), CRS, transform=t30, shape=(21, 21), kind="landcover")[0]
    assert set(np.unique(m)) <= set(np.unique(lc))
    blocks = lc[:63, :63].reshape(21, 3, 21, 3).transpose(0, 2, 1, 3).reshape(21, 21, 9)
    counts = np.stack([(blocks == v).sum(-1) for v in np.unique(lc)], -1)
    best = counts.max(-1)
    got = counts[np.arange(21)[:, None], np.arange(21)[None], np.searchsorted(np.unique(lc), m)]
    assert (got == best).mean() > 0.97  # the chosen class is a most frequent one


def test_read_aux_present_flags_and_missing(flanders_layers, tmp_path):
    t = Affine(10, 0, 501360.0, 0, -10, 5629680.0)
    a = read_aux({"dem": str(DEM), "landcover": str(flanders_layers["lc"]), "sar": str(flanders_layers["sar"])},
                 CRS, transform=t, shape=(64, 64))
    assert a.dem.shape == (1, 64, 64) and a.landcover.shape == (1, 64, 64) and a.sar.shape == (2, 64, 64)
    np.testing.assert_array_equal(a.present, [1, 1, 1])
    # SAR bilinear from 20 m: 10 m centre (2, 2) = (501385, 5629655) lies 3/4 of the way from
    # the 20 m centres (501370, 5629670) of pixel (0, 0) to (501390, 5629650) of pixel (1, 1)
    s = flanders_layers["sar_arr"]
    wts = np.outer([0.25, 0.75], [0.25, 0.75])
    np.testing.assert_allclose(a.sar[:, 2, 2], (s[:, 0:2, 0:2] * wts).sum(axis=(1, 2)), atol=1e-4)
    assert -30 < np.nanmean(a.sar[1]) < np.nanmean(a.sar[0]) < 5  # VH below VV, in dB
    b = read_aux({"dem": str(DEM), "sar": str(tmp_path / "gone.tif")}, CRS, transform=t, shape=(64, 64))
    np.testing.assert_array_equal(b.present, [1, 0, 0])
    assert np.isnan(b.sar).all() and (b.landcover == 0).all()
    with pytest.raises(MissingDataError, match="gone.tif"):
        read_aux({"sar": str(tmp_path / "gone.tif")}, CRS, transform=t, shape=(8, 8), strict=True)
    with pytest.raises(ConfigError, match="valid"):
        read_aux({"ndvi": "x.tif"}, CRS, transform=t, shape=(8, 8))
    # a layer that does not reach the chip counts as absent
    far = Affine(10, 0, 600000.0, 0, -10, 5629680.0)
    np.testing.assert_array_equal(read_aux({"dem": str(DEM)}, CRS, transform=far, shape=(8, 8)).present, [0, 0, 0])
