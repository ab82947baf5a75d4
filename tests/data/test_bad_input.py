"""Bad input gets its documented error or skip record, with a message that names the problem."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.transform import rowcol, xy
from rasterio.warp import Resampling, calculate_default_transform, reproject
from shapely.geometry import box, mapping

from lssr_ray.config import REPO_ROOT, GridConfig
from lssr_ray.data.aoi import parse_aoi, read_aoi
from lssr_ray.data.catalog import open_catalog
from lssr_ray.data.cube import AuxSource, build_cube, plan_data_stage
from lssr_ray.data.grid import OutputGrid, plan_chips
from lssr_ray.data.readers import read_lowres
from lssr_ray.errors import AOIError, CoverageError, MissingDataError

ARCHIVE = REPO_ROOT / "data" / "archive" / "catalog.json"
EXAMPLES = REPO_ROOT / "examples"


def _job_main(argv):
    spec = importlib.util.spec_from_file_location("map_region", REPO_ROOT / "jobs" / "map_region.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


def _aoi_in(granule, *, margin_px=10, size_px=60):
    """A lon/lat square AOI inside the granule footprint."""
    t = Affine(*tuple(granule.transform)[:6])
    x0, y0 = t @ (margin_px, margin_px)
    x1, y1 = t @ (margin_px + size_px, margin_px + size_px)
    to_ll = Transformer.from_crs(granule.crs, "EPSG:4326", always_xy=True)
    lon0, lat1 = to_ll.transform(x0, y0)
    lon1, lat0 = to_ll.transform(x1, y1)
    return parse_aoi(mapping(box(lon0, lat0, lon1, lat1)))


def test_malformed_geojson_job_exits_with_message(tmp_path, capsys):
    p = tmp_path / "bad.geojson"
    p.write_text('{"type": "FeatureCollection", "features": [')
    assert _job_main(["--aoi", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "malformed JSON" in err and "bad.geojson" in err and "Traceback" not in err


def test_non_polygon_names_accepted_types(tmp_path, capsys):
    p = tmp_path / "pt.geojson"
    p.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [3, 50]}}))
    with pytest.raises(AOIError, match="'Point' is not an area; accepted types: Polygon, MultiPolygon"):
        read_aoi(p)
    assert _job_main(["--aoi", str(p)]) == 2
    assert "accepted types" in capsys.readouterr().err


def test_aoi_outside_catalog_coverage_names_extent():
    with pytest.warns(UserWarning, match="spans UTM zones"):  # Iowa: zones 14 and 15
        aoi = read_aoi(EXAMPLES / "iowa.geojson")
    with pytest.raises(CoverageError) as e:
        plan_data_stage(aoi, open_catalog(ARCHIVE))
    msg = str(e.value)
    assert "iowa" in msg and "the catalog covers" in msg and "lon/lat box" in msg
    assert "3.0" in msg  # the Flanders tile's longitude is listed among the covered boxes


def test_aoi_spanning_two_zones_uses_centroid_zone():
    geom = {"type": "Polygon", "coordinates": [[[5.9, 50.80], [6.3, 50.80], [6.3, 50.85], [5.9, 50.85], [5.9, 50.80]]]}
    with pytest.warns(UserWarning, match="spans UTM zones"):
        aoi = parse_aoi(geom)
    assert aoi.zones == (31, 32) and aoi.crs == "EPSG:32632"  # centroid 6.1 E is in zone 32
    plan = plan_chips(aoi, config=GridConfig(chip_size=32, overlap=4))
    assert plan.grid.crs == "EPSG:32632"
    assert box(*plan.grid.bounds).contains(aoi.utm_geometry)


def test_granule_in_other_zone_is_warped_onto_grid(l30_granule):
    # grid in zone 15N, granule in 16N: lr values are bilinear, close to the source pixels at the
    # grid centres (tests/data/test_mosaic.py checks them against rasterio's reproject)
    to15 = Transformer.from_crs(l30_granule.crs, "EPSG:32615", always_xy=True)
    t = Affine(*tuple(l30_granule.transform)[:6])
    x, y = to15.transform(*(t @ (40, 40)))
    grid = OutputGrid("EPSG:32615", Affine(30, 0, 30 * round(x / 30), 0, -30, 30 * round(y / 30)), (56, 56))
    lo = read_lowres(l30_granule, grid, window=(0, 0, 48, 48))
    with rasterio.open(l30_granule.assets["B04"]) as src:
        red = src.read(1)
    rows, cols = np.mgrid[0:48:5, 0:48:5]
    xs, ys = xy(grid.input_transform, rows.ravel(), cols.ravel())
    sx, sy = Transformer.from_crs("EPSG:32615", l30_granule.crs, always_xy=True).transform(xs, ys)
    r, c = rowcol(t, sx, sy)
    ref = red[np.asarray(r), np.asarray(c)] * np.float32(1e-4)
    got = lo.lr[0][rows.ravel(), cols.ravel()]
    ok = np.isfinite(got)
    assert ok.mean() > 0.8 and np.median(np.abs(got[ok] - ref[ok])) < 0.01


def test_missing_band_file(l30_granule, tmp_path):
    folder = tmp_path / "g"
    shutil.copytree(l30_granule.assets["B04"].rsplit("/", 1)[0], folder)
    assets = {k: str(folder / v.rsplit("/", 1)[1]) for k, v in l30_granule.assets.items()}
    (folder / assets["B06"].rsplit("/", 1)[1]).unlink()
    g = dataclasses.replace(l30_granule, assets=assets)
    grid = OutputGrid(g.crs, Affine(*tuple(g.transform)[:6]), (56, 56))
    with pytest.raises(MissingDataError) as e:
        read_lowres(g, grid, window=(0, 0, 16, 16))
    msg = str(e.value)
    assert g.id in msg and "'swir1' (B06)" in msg and "not found" in msg and "bands present" in msg


def test_fully_cloudy_chips_are_skipped_and_recorded(cloudy_granule, l30_granule, tmp_path):
    aoi = _aoi_in(cloudy_granule)
    plan = plan_chips(aoi, config=GridConfig(chip_size=32, overlap=4), anchor=(15.0, 15.0))
    res = build_cube(plan, [cloudy_granule], tmp_path / "c")
    assert len(res.records) == len(plan.chips) >= 4
    assert {r.skipped for r in res.records} == {"all_cloud"}
    assert f"{len(plan.chips)} skipped (all_cloud: {len(plan.chips)})" in res.summary()
    assert cloudy_granule.id in res.records[0].detail
    # with a clear granule available, the same chips are read from it instead
    res2 = build_cube(plan, [cloudy_granule, l30_granule], tmp_path / "c2")
    assert not res2.skipped and {r.granule_id for r in res2.records} == {l30_granule.id}


def test_corrupt_band_file_skips_chip_with_reason(l30_granule, tmp_path):
    folder = tmp_path / "g"
    shutil.copytree(l30_granule.assets["B04"].rsplit("/", 1)[0], folder)
    assets = {k: str(folder / v.rsplit("/", 1)[1]) for k, v in l30_granule.assets.items()}
    p = folder / assets["B03"].rsplit("/", 1)[1]
    p.write_bytes(b"II*\x00" + b"\x00" * 64)  # a TIFF header with nothing behind it
    g = dataclasses.replace(l30_granule, assets=assets)
    plan = plan_chips(_aoi_in(g, size_px=20), config=GridConfig(chip_size=32, overlap=4), anchor=(15.0, 15.0))
    res = build_cube(plan, [g], tmp_path / "c")
    assert {r.skipped for r in res.records} == {"corrupt_source"}
    assert "'green' (B03)" in res.records[0].detail and "corrupt" in res.records[0].detail
    assert f"corrupt_source: {len(plan.chips)}" in res.summary()


def test_aux_layer_in_other_crs_is_reprojected(tmp_path):
    st = plan_data_stage(read_aoi(EXAMPLES / "flanders_31UDS.geojson"), open_catalog(ARCHIVE),
                         config=GridConfig(chip_size=16, overlap=4), start="2018-02-01", end="2018-03-31")
    # the archive DEM re-stored in Web Mercator (EPSG:3857)
    src_path = st.aux.dem
    with rasterio.open(src_path) as s:
        tt, w, h = calculate_default_transform(s.crs, "EPSG:3857", s.width, s.height, *s.bounds, resolution=8.0)
        arr = np.full((h, w), np.nan, np.float32)
        reproject(rasterio.band(s, 1), arr, dst_transform=tt, dst_crs="EPSG:3857", resampling=Resampling.bilinear,
                  dst_nodata=np.nan)
    p = tmp_path / "dem_3857.tif"
    with rasterio.open(p, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32", crs="EPSG:3857",
                       transform=tt, nodata=np.nan) as dst:
        dst.write(arr, 1)
    a = build_cube(st.plan, st.granules, tmp_path / "a", aux=AuxSource(dem=str(p)))
    b = build_cube(st.plan, st.granules, tmp_path / "b", aux=AuxSource(dem=src_path))
    import xarray as xr

    da = xr.open_zarr(a.path, group="aux_10m")["dem"].values
    db = xr.open_zarr(b.path, group="aux_10m")["dem"].values
    both = np.isfinite(da) & np.isfinite(db)
    assert both.sum() > 0.9 * np.isfinite(db).sum() > 1000
    diff = np.abs(da[both] - db[both])
    assert diff.mean() < 0.3 and diff.max() < 2.5  # metres, on a 35..47 m DEM
    assert all(r.present[0] == 1.0 for r in a.records) and all(r.present[2] == 0.0 for r in a.records)
