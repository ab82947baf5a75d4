"""Per-pixel mosaic of one solar day: two overlapping HLS-format granules (one in the
neighbouring UTM zone), each cloudy where the other is clear, an S30 granule of the same day,
and solar-day grouping across UTC midnight."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from pyproj import Transformer
from rasterio.warp import Resampling, reproject
from shapely.geometry import box, mapping

from lssr_ray.config import OUTPUT_BANDS, GridConfig
from lssr_ray.data import hls
from lssr_ray.data.aoi import parse_aoi
from lssr_ray.data.cube import build_cube, read_chips
from lssr_ray.data.grid import OutputGrid, plan_chips
from lssr_ray.data.masks import clear_from_fmask
from lssr_ray.data.mosaic import (
    group_by_solar_day,
    mosaic_day,
    mosaic_days,
    solar_day,
    time_provenance,
)
from lssr_ray.data.readers import read_lowres
from lssr_ray.mapping.store import create_store, gdal_path, open_store

N = 150  # the L30 crop is N x N px at 30 m, EPSG:32616
A_CLOUD = slice(30, 70)  # columns of the native granule under cloud
B_CLOUD = slice(80, 120)  # columns (of the native grid) under cloud in the zone-15 granule
B_OFFSET = 300  # DN added to the zone-15 granule so each pixel's source is identifiable
ZONE15 = "EPSG:32615"
RED = OUTPUT_BANDS.index("red")


def _read(granule):
    with rasterio.open(granule.assets["Fmask"]) as src:
        fm = src.read(1)
    bands = {}
    for bid in hls.BANDS["L30"].values():
        if bid in granule.assets:
            with rasterio.open(granule.assets[bid]) as src:
                bands[bid] = src.read(1)
    return bands, fm


def _with_cloud(fm, cols):
    out = fm.copy()
    cloud = np.zeros(fm.shape, bool)
    cloud[:, cols] = True
    out[cloud & (fm != hls.FMASK_FILL)] |= np.uint8(1 << hls.FMASK_CLOUD)
    return out


@pytest.fixture(scope="module")
def scene(l30_granule, hls_granule_writer, tmp_path_factory):
    """Native granule A (L30, zone 16, cloud over A_CLOUD), granule B (L30, the same scene
    warped into zone 15, +B_OFFSET DN, cloud over B_CLOUD) acquired across UTC midnight from A
    on the same solar day, and C (S30 on A's grid, +200 DN, cloud over columns 0..40)."""
    bands, fm = _read(l30_granule)
    t16 = Affine(*tuple(l30_granule.transform)[:6])
    folder = tmp_path_factory.mktemp("mosaic")
    # the Alabama scene is at ~87.5 W: solar time = UTC - 5.8 h, so 03:00 and 23:00 UTC of
    # consecutive UTC dates are the same solar afternoon
    when_a = dt.datetime(2015, 8, 4, 3, 0, tzinfo=dt.UTC)
    when_b = dt.datetime(2015, 8, 3, 23, 0, tzinfo=dt.UTC)
    a = hls_granule_writer(folder / "a", "HLS.L30.T16RDU.2015216T030000.v2.0", "HLSL30_2.0", when_a,
                           l30_granule.crs, t16, bands, _with_cloud(fm, A_CLOUD), {"eo:cloud_cover": 50.0})
    # B: a 30 m grid in zone 15 over A's footprint
    to15 = Transformer.from_crs(l30_granule.crs, ZONE15, always_xy=True)
    xs, ys = to15.transform(*zip(*[t16 @ (c, r) for c in (0, N) for r in (0, N)]))
    t15 = Affine(30, 0, 30 * np.floor(min(xs) / 30), 0, -30, 30 * np.ceil(max(ys) / 30))
    h15, w15 = int(np.ceil((max(ys) - min(ys)) / 30)) + 1, int(np.ceil((max(xs) - min(xs)) / 30)) + 1
    b_bands = {}
    for bid, dn in bands.items():
        out = np.full((h15, w15), hls.NODATA, np.int16)
        reproject(dn, out, src_transform=t16, src_crs=l30_granule.crs, dst_transform=t15, dst_crs=ZONE15,
                  src_nodata=hls.NODATA, dst_nodata=hls.NODATA, resampling=Resampling.nearest)
        b_bands[bid] = np.where(out != hls.NODATA, out + B_OFFSET, out).astype(np.int16)
    b_fm = np.full((h15, w15), hls.FMASK_FILL, np.uint8)
    reproject(fm, b_fm, src_transform=t16, src_crs=l30_granule.crs, dst_transform=t15, dst_crs=ZONE15,
              src_nodata=hls.FMASK_FILL, dst_nodata=hls.FMASK_FILL, resampling=Resampling.nearest)
    # B's cloud: its pixels whose centres fall in A's columns B_CLOUD
    rr, cc = np.mgrid[0:h15, 0:w15]
    x15, y15 = t15 * (cc + 0.5, rr + 0.5)
    x16, _ = Transformer.from_crs(ZONE15, l30_granule.crs, always_xy=True).transform(x15, y15)
    col16 = (np.asarray(x16) - t16.c) / t16.a
    cloud_b = (col16 >= B_CLOUD.start) & (col16 < B_CLOUD.stop) & (b_fm != hls.FMASK_FILL)
    b_fm[cloud_b] |= np.uint8(1 << hls.FMASK_CLOUD)
    b = hls_granule_writer(folder / "b", "HLS.L30.T15RYP.2015215T230000.v2.0", "HLSL30_2.0", when_b,
                           ZONE15, t15, b_bands, b_fm, {"eo:cloud_cover": 10.0})
    s_bands = {hls.band_id("S30", name): np.where(bands[hls.band_id("L30", name)] != hls.NODATA,
                                                   bands[hls.band_id("L30", name)] + 200, hls.NODATA)
               for name in OUTPUT_BANDS}
    c = hls_granule_writer(folder / "c", "HLS.S30.T16RDU.2015216T040000.v2.0", "HLSS30_2.0",
                           when_a + dt.timedelta(hours=1), l30_granule.crs, t16, s_bands,
                           _with_cloud(fm, slice(0, 40)), {"eo:cloud_cover": 1.0})
    grid = OutputGrid(l30_granule.crs, t16, (N, N))
    return a, b, c, grid


def _raw(granule, bid, window=(0, 0, N, N)):
    with rasterio.open(granule.assets[bid]) as src:
        return src.read(1, window=((window[0], window[0] + window[2]), (window[1], window[1] + window[3])))


def _warp_reference(granule, bid, grid, resampling, nodata):
    """``rasterio.warp.reproject`` of one band file onto the grid: the reference for read_lowres."""
    with rasterio.open(granule.assets[bid]) as src:
        out = np.full((N, N), nodata, src.dtypes[0])
        reproject(src.read(1), out, src_transform=src.transform, src_crs=src.crs, dst_transform=grid.input_transform,
                  dst_crs=grid.crs, src_nodata=nodata, dst_nodata=nodata, resampling=resampling)
    return out


def test_solar_day_groups_across_utc_midnight(scene):
    a, b, _, _ = scene
    assert a.datetime.date() != b.datetime.date()  # different UTC dates ...
    assert solar_day(a) == solar_day(b) == dt.date(2015, 8, 3)  # ... one solar day (~87.5 W)
    assert list(group_by_solar_day([a, b])) == [dt.date(2015, 8, 3)]
    # east of Greenwich an evening UTC time is the next solar morning; the antimeridian bbox is centred on 180
    east = dataclasses.replace(a, bbox=(119.0, 30.0, 121.0, 31.0), datetime=dt.datetime(2021, 6, 30, 23, tzinfo=dt.UTC))
    east2 = dataclasses.replace(east, id="x", datetime=dt.datetime(2021, 7, 1, 3, tzinfo=dt.UTC))
    assert solar_day(east) == solar_day(east2) == dt.date(2021, 7, 1)
    fiji = dataclasses.replace(a, bbox=(178.0, -18.0, -179.0, -17.0), datetime=dt.datetime(2021, 6, 30, 13, tzinfo=dt.UTC))
    assert solar_day(fiji) == dt.date(2021, 7, 1)  # centre 179.5 E: +12 h, not the naive (178 + -179) / 2 = -0.5


def test_mosaic_fills_each_granules_cloud_from_the_other(scene):
    a, b, _, grid = scene
    win = (0, 0, N, N)
    low_a, low_b = read_lowres(a, grid, window=win), read_lowres(b, grid, window=win)
    (m,) = mosaic_days([(b, low_b), (a, low_a)], grid.crs)  # input order does not matter: the rank does
    assert m.granules == (a.id, b.id)  # native zone first
    raw_red = _raw(a, "B04").astype(np.float32) * np.float32(hls.SCALE)
    # wherever A is clear, the mosaic is A's plain windowed read, bit-exact
    assert low_a.clear.any() and np.array_equal(m.lowres.lr[RED][low_a.clear], raw_red[low_a.clear])
    assert (m.source[low_a.clear] == 0).all()
    # A's cloud is filled from B (its +300 DN values), B's cloud from A
    fill_b = low_b.clear & ~low_a.clear
    assert fill_b[:, A_CLOUD].mean() > 0.8
    assert np.array_equal(m.lowres.lr[:, fill_b], low_b.lr[:, fill_b]) and (m.source[fill_b] == 1).all()
    assert low_a.clear[:, B_CLOUD].mean() > 0.8 and not low_b.clear[:, B_CLOUD.start + 2:B_CLOUD.stop - 2].any()
    # both holes filled: clear wherever either granule is clear, NaN elsewhere
    assert np.array_equal(m.lowres.clear, low_a.clear | low_b.clear)
    assert m.lowres.clear.sum() > max(low_a.clear.sum(), low_b.clear.sum())
    assert np.isnan(m.lowres.lr[:, ~m.lowres.clear]).all() and np.isfinite(m.lowres.lr[:, m.lowres.clear]).all()
    # a chip over both holes names both granules; one inside A's clear part names A only
    _, ids, sensor = m.cut((0, 20, 64, 64))
    assert ids == (a.id, b.id) and sensor == "L30"
    assert m.cut((0, 75, 4, 4))[1] == (a.id,)


def test_other_zone_reflectance_is_bilinear_and_fmask_nearest(scene):
    _, b, _, grid = scene
    low = read_lowres(b, grid, window=(0, 0, N, N))
    ref_fm = _warp_reference(b, "Fmask", grid, Resampling.nearest, hls.FMASK_FILL)
    bil = {bid: _warp_reference(b, bid, grid, Resampling.bilinear, hls.NODATA)
           for bid in (hls.band_id("L30", n) for n in OUTPUT_BANDS)}
    refl = np.stack([hls.to_reflectance(v) for v in bil.values()])
    expect_observed = (ref_fm != hls.FMASK_FILL) & np.isfinite(refl).all(axis=0)
    assert np.array_equal(low.observed, expect_observed)
    assert np.array_equal(low.clear, clear_from_fmask(ref_fm) & expect_observed)  # the mask: nearest
    ok = low.clear
    assert ok.mean() > 0.5
    # GDAL's bilinear through the VRT and through reproject: measured 98.5 % of pixels within 1 DN
    # (int16 rounding), the rest within 7 DN (a sub-pixel difference on this scene's sharp edges)
    diff = np.abs(low.lr[:, ok] - refl[:, ok])
    assert np.mean(diff <= 1.01e-4) > 0.97 and diff.max() < 20e-4
    nearest = hls.to_reflectance(_warp_reference(b, "B04", grid, Resampling.nearest, hls.NODATA))
    assert np.mean(low.lr[RED][ok] != nearest[ok]) > 0.5  # not a nearest-neighbour copy
    # -9999 never smears into valid pixels: valid values stay in HLS's valid range
    lo, hi = (v * hls.SCALE for v in hls.VALID_RANGE)
    assert np.nanmin(low.lr) >= lo - 1e-6 and np.nanmax(low.lr) <= hi + 1e-6
    assert (~low.observed).any()  # the warped footprint's edge is inside the window


def test_l30_first_s30_fills_where_l30_has_no_clear_pixel(scene):
    a, _, c, grid = scene
    win = (0, 0, N, N)
    low_a, low_c = read_lowres(a, grid, window=win), read_lowres(c, grid, window=win)
    # S30 is listed first and reports less cloud: the sensor policy still puts L30 first
    m = mosaic_day(solar_day(a), [(c, low_c), (a, low_a)], grid.crs)
    assert m.granules == (a.id, c.id) and m.sensors == ("L30", "S30")
    both = low_a.clear & low_c.clear
    assert both.any() and np.array_equal(m.lowres.lr[:, both], low_a.lr[:, both])
    fill = low_c.clear & ~low_a.clear
    assert fill[:, 40:70].mean() > 0.8 and np.array_equal(m.lowres.lr[:, fill], low_c.lr[:, fill])
    assert m.cut((0, 20, 64, 64))[2] == "L30+S30" and m.cut((0, 80, 16, 16))[2] == "L30"


def _aoi_over(grid, rows, cols):
    t = grid.input_transform
    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    lon0, lat1 = to_ll.transform(*(t @ (cols[0], rows[0])))
    lon1, lat0 = to_ll.transform(*(t @ (cols[1], rows[1])))
    return parse_aoi(mapping(box(lon0, lat0, lon1, lat1)))


def test_cube_chips_are_cut_from_the_mosaic_and_skip_only_without_any_clear_pixel(scene, tmp_path):
    a, b, _, grid = scene
    plan = plan_chips(_aoi_over(grid, (10, 140), (10, 140)), config=GridConfig(chip_size=32, overlap=4),
                      anchor=(grid.input_transform.c % 30, grid.input_transform.f % 30))
    res = build_cube(plan, [a, b], tmp_path / "cube", block=2)
    assert not res.skipped and len(res.records) >= 9
    over_a_cloud = [r for r in res.records if r.input_window[1] + 16 in range(A_CLOUD.start, A_CLOUD.stop)]
    assert over_a_cloud and all(b.id in r.granules for r in over_a_cloud)
    assert all(r.solar_day == "2015-08-03" and r.month == 8 for r in res.records)
    # every chip of the cube is clear wherever one of the two granules is clear
    low_a, low_b = (read_lowres(g, plan.grid, window=(0, 0, *plan.grid.input_shape)) for g in (a, b))
    cube = xr.open_zarr(res.path, group="lr_30m")
    h = plan.config.overlap // 2
    for r in res.records:
        r0, c0 = r.input_window[0] + h, r.input_window[1] + h
        core = (slice(r0, r0 + plan.config.stride), slice(c0, c0 + plan.config.stride))
        assert np.array_equal(cube["clear"].values[core].astype(bool), (low_a.clear | low_b.clear)[core])
    # with both granules cloudy everywhere a chip is skipped (all_cloud), naming both
    overcast = [dataclasses.replace(g, assets={**g.assets, "Fmask": _cloud_everywhere(g, tmp_path)}) for g in (a, b)]
    sub = dataclasses.replace(plan, chips=plan.chips[:1])
    (rec,) = build_cube(sub, overcast, tmp_path / "c2").records
    assert rec.skipped == "all_cloud" and a.id in rec.detail and b.id in rec.detail


def _cloud_everywhere(g, tmp_path):
    with rasterio.open(g.assets["Fmask"]) as src:
        prof, fm = src.profile, src.read(1)
    p = tmp_path / f"{g.id}.cloud.Fmask.tif"
    with rasterio.open(p, "w", **prof) as dst:
        dst.write(np.where(fm == hls.FMASK_FILL, fm, np.uint8(1 << hls.FMASK_CLOUD)), 1)
    return str(p)


def test_store_time_coords_name_sensors_and_granules(scene, tmp_path):
    a, b, c, grid = scene
    coords = time_provenance({0: [b, a], 1: [c], 2: [c, a]})
    assert coords["sensor"] == ["L30", "S30", "L30+S30"]
    url = str(tmp_path / "s.zarr")
    create_store(url, crs=grid.crs, transform=tuple(grid.output_transform)[:6], shape=(48, 48), chunk=24,
                 times=["2015-08-03", "2015-08-04", "2015-08-05"], time_coords=coords)
    ds = open_store(url)
    assert ds["sensor"].dims == ("time",) and list(ds["sensor"].values) == ["L30", "S30", "L30+S30"]
    assert ds["granules"].values[0].split(",") == sorted([a.id, b.id]) and ds["granules"].values[1] == c.id
    assert "sensor" in ds.coords and "long_name" in ds["granules"].attrs
    assert str(ds.rio.crs) == grid.crs  # the grid mapping survives next to the extra coordinates
    with rasterio.open(gdal_path(url)) as src:  # GDAL still opens the variable
        assert src.count == 3 * len(OUTPUT_BANDS) and src.crs.to_string() == grid.crs



def test_clearest_mode_takes_the_clearest_days_mosaic(scene):
    a, b, c, grid = scene
    later = dataclasses.replace(c, datetime=c.datetime + dt.timedelta(days=2))  # S30, cloud over columns 0..40
    plan = plan_chips(_aoi_over(grid, (10, 40), (20, 48)), config=GridConfig(chip_size=32, overlap=4),
                      anchor=(grid.input_transform.c % 30, grid.input_transform.f % 30))
    recs = [r for r, _ in read_chips(plan, [later, a, b], block=4)]
    # A's cloud (30..70) is filled from B the same day: that mosaic beats the later S30 alone
    assert recs and all(r.solar_day == "2015-08-03" and set(r.granules) <= {a.id, b.id} for r in recs)
    assert any(r.granules == (a.id, b.id) for r in recs)


def test_plan_steps_are_solar_days_with_their_sensors():
    from lssr_ray.config import REPO_ROOT, MapConfig
    from lssr_ray.mapping.plan import plan_map

    aoi = str(REPO_ROOT / "examples" / "flanders_31UDS.geojson")
    plan = plan_map(MapConfig(aoi=aoi, start="2018-07-31", end="2018-08-03"))
    # the bundled archive's L30 and S30 of 2018-08-02 (10:39 and 10:59 UTC, 3 E) are one step
    assert [str(t) for t in plan.times] == ["2018-08-02"]
    assert plan.time_coords == {"sensor": ["L30+S30"], "granules": [
        "HLS.L30.T31UDS.2018214T103944.v2.0,HLS.S30.T31UDS.2018214T105938.v2.0"]}
