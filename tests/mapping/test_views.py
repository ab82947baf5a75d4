"""Overviews and the time-series copy of a store, checked against numpy references, GDAL and xarray."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr
from rasterio.transform import from_origin

from lssr_ray.mapping import store as S
from lssr_ray.mapping import views as V

CRS = "EPSG:32616"
TRANSFORM = from_origin(399960.0, 3700020.0, 10.0, 10.0)
CHUNK = 36
SHAPE = (2 * CHUNK, 3 * CHUNK - 5)  # an odd width: the last overview column averages one child
TIMES = ["2015-05-06", "2015-06-07"]


@pytest.fixture
def store(tmp_path):
    """A two-date store, every chunk written, some NaN pixels, and a crop_type layer."""
    url = str(tmp_path / "s.zarr")
    S.create_store(url, crs=CRS, transform=tuple(TRANSFORM)[:6], shape=SHAPE, chunk=CHUNK, times=TIMES,
                   time_coords={"sensor": ["L30", "S30"], "granules": ["a", "b"]})
    lay = S.read_layout(url)
    rng = np.random.default_rng(0)
    full = rng.uniform(-0.005, 1.2, (2, 6, *SHAPE)).astype(np.float32)
    full[0, :, 3:9, 4:10] = np.nan  # a cloud: invalid on date 0
    for ti in range(2):
        for r0 in range(0, SHAPE[0], CHUNK):
            for c0 in range(0, SHAPE[1], CHUNK):
                S.write_chunk(url, full[ti, :, r0:r0 + CHUNK, c0:c0 + CHUNK], row_off=r0, col_off=c0,
                              time_index=ti, layout=lay)
    crop = rng.choice(np.array([0, 1100, 1200], np.uint16), SHAPE)
    root_attrs = dict(zarr.open_group(url, mode="r", zarr_format=2).attrs)  # xarray's append drops them
    tmpl = xr.Dataset({"crop_type": (("y", "x"), crop)})
    tmpl.to_zarr(url, mode="a", zarr_format=2, consolidated=False,
                 encoding={"crop_type": {"_FillValue": 0, "chunks": (CHUNK, CHUNK), "grid_mapping": "spatial_ref"}})
    zarr.open_group(url, mode="r+", zarr_format=2).attrs.update(root_attrs)
    S.finalize_store(url)
    return url, S.open_store(url)


def test_overview_factors():
    assert V.overview_factors((336, 336)) == [2]
    assert V.overview_factors((200, 100)) == []
    assert V.overview_factors((5000, 1000)) == [2, 4, 8, 16, 32]


def test_mode_ignores_nan_and_picks_the_majority():
    a = np.array([[[1.0, 2.0], [2.0, np.nan]], [[np.nan, np.nan], [np.nan, 7.0]]])  # (2, 2, 2)
    out = V._mode(a, axis=(1, 2))  # two windows of 2 x 2
    assert out.tolist() == [2.0, 7.0]
    assert np.isnan(V._mode(np.full((1, 2, 2), np.nan), axis=(1, 2))[0])


def test_overviews_resample_and_open_in_gdal(store):
    url, ds = store
    attrs = V.build_overviews(url, min_px=30)  # 103 px wide: levels 2 and 4
    layout = attrs["multiscales"]["layout"]
    assert [e["asset"] for e in layout] == ["overviews/2", "overviews/4"]
    assert layout[1]["derived_from"] == "overviews/2" and layout[1]["transform"]["scale"] == [2.0, 2.0]
    S.finalize_store(url, attrs=attrs)

    refl = ds.reflectance.values
    want = np.full((2, 6, SHAPE[0] // 2, (SHAPE[1] + 1) // 2), np.nan, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks: NaN expected
        for i in range(want.shape[2]):
            for j in range(want.shape[3]):
                want[:, :, i, j] = np.nanmean(refl[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2], axis=(2, 3))
    o2 = S.open_store(url, group="overviews/2")
    assert o2.reflectance.dtype == np.float32 and o2.sizes["x"] == (SHAPE[1] + 1) // 2
    np.testing.assert_allclose(o2.reflectance.values, want, atol=0.6e-4, equal_nan=True)
    assert np.array_equal(o2.valid.values, np.isfinite(want).all(1).astype(np.uint8))
    assert list(o2.sensor.values) == ["L30", "S30"]
    ct, ct2 = ds.crop_type.values, o2.crop_type.values
    assert ct2.dtype == np.uint16
    for i in range(ct2.shape[0]):  # mode of the classified children, ties: first in row-major order
        for j in range(ct2.shape[1]):
            block = [int(v) for v in ct[2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel() if v > 0]
            assert ct2[i, j] == (max(block, key=block.count) if block else 0), (i, j, block)
    for f in (2, 4):
        for name in ("reflectance", "valid", "crop_type"):
            with rasterio.open(S.gdal_path(url, f"overviews/{f}/{name}")) as src:
                assert src.crs.to_epsg() == 32616
                assert tuple(src.transform)[:6] == pytest.approx(
                    (10.0 * f, 0, TRANSFORM.c, 0, -10.0 * f, TRANSFORM.f))
                if name == "crop_type":
                    assert src.nodata == 0
    with rasterio.open(S.gdal_path(url, "overviews/2/reflectance")) as src:
        band = src.read(1, masked=True)
        np.testing.assert_allclose(np.where(band.mask, np.nan, band.data * src.scales[0]), want[0, 0],
                                   atol=0.6e-4, equal_nan=True)
    assert S.open_store(url).attrs["multiscales"]["layout"][0]["proj:shape"] == [SHAPE[0] // 2, (SHAPE[1] + 1) // 2]


def test_timeseries_copy_equals_the_store(store):
    url, ds = store
    ts_url = V.write_timeseries_copy(url, edge=32)
    assert ts_url.endswith("s_ts.zarr")
    ts = S.open_store(ts_url)
    assert ts.reflectance.encoding["chunks"] == (2, 6, 32, 32) and ts.valid.encoding["chunks"] == (2, 32, 32)
    assert ts.reflectance.dtype == np.float32 and ts.crop_type.dtype == np.uint16
    for name in ("reflectance", "valid", "crop_type"):
        np.testing.assert_array_equal(ts[name].values, ds[name].values)
    assert ts.rio.crs == ds.rio.crs and ts.rio.transform() == ds.rio.transform()
    assert list(ts.granules.values) == ["a", "b"] and ts.attrs["timeseries_copy_of"] == "s.zarr"
    with rasterio.open(S.gdal_path(ts_url)) as src:
        assert src.crs.to_epsg() == 32616 and src.count == 12 and src.nodata == -9999


def test_timeseries_copy_never_replaces_foreign_files(store, tmp_path):
    from lssr_ray.errors import StoreError

    url, _ = store
    foreign = tmp_path / "s_ts.zarr"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="refusing to write"):
        V.write_timeseries_copy(url)
    assert (foreign / "notes.txt").read_text() == "mine"
    (foreign / "notes.txt").unlink()
    V.write_timeseries_copy(url)  # empty now: written, and a second copy replaces the first (ours)
    assert V.write_timeseries_copy(url) == str(foreign)


@pytest.mark.parametrize(("reason", "kept"), [("transient_read", True), ("all_cloud", False)])
def test_complete_run_keeps_partials_only_while_a_transient_skip_waits_for_resume(tmp_path, reason, kept):
    """A finished run removes ``_partials/`` unless a chip was skipped for a transient read error:
    then ``--resume`` still needs them to find and retry that chip."""
    from types import SimpleNamespace

    from lssr_ray.mapping.finalize import finish_store
    from lssr_ray.mapping.partials import commit_partial, partials_present
    from lssr_ray.mapping.store import create_store

    url = str(tmp_path / "done.zarr")
    create_store(url, crs="EPSG:32631", transform=(10, 0, 500000, 0, -10, 5600000), shape=(8, 8), chunk=8,
                 times=["2018-07-01"])
    commit_partial(url, 0, "r0000c0000", status="skipped", reason=reason, detail="test")
    plan = SimpleNamespace(store=url, times=["2018-07-01"],
                           cfg=SimpleNamespace(timeseries_copy=False, keep_partials=False))
    finish_store(plan, {})
    assert partials_present(url) is kept


def _stored_arrays(url):
    """Every array of a store and its groups as stored (packed ints, raw fill), by path."""
    root = zarr.open_group(url, mode="r", zarr_format=2)
    out = {}
    for path, arr in root.arrays():
        out[path] = arr[...]
    if "overviews" in root:
        for f in root["overviews"].group_keys():
            for name, arr in root[f"overviews/{f}"].arrays():
                out[f"overviews/{f}/{name}"] = arr[...]
    return out


@pytest.fixture
def ray_local():
    import ray

    from lssr_ray.ray_local import start_local_ray

    start_local_ray(num_cpus=2, include_dashboard=False)  # a reaper takes it down if the test dies
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_data_stage_writes_what_the_in_process_tasks_write(store, tmp_path, ray_local):
    """The same chunk function as a Ray Data stage (forced onto Ray) and in this process writes
    byte-identical overview levels; a window without any data is left unwritten (no chunk
    object) and reads back as fill. (The time-series copy shares the runner; its chunk function
    is checked in process by test_timeseries_copy_equals_the_store.)"""
    import shutil

    import ray

    url, _ = store
    lay = S.read_layout(url)
    # date 1 without data under level 2's chunk (0, 0): the 2 x 2 source chunks it halves
    zarr.open_array(url, path="reflectance", mode="r+", zarr_format=2)[1, :, :2 * CHUNK, :2 * CHUNK] = S.FILL_VALUE
    zarr.open_array(url, path="valid", mode="r+", zarr_format=2)[1, :2 * CHUNK, :2 * CHUNK] = 0
    assert lay.chunk == CHUNK
    on_ray = str(tmp_path / "ray" / "s.zarr")
    shutil.copytree(url, on_ray)
    attrs = V.build_overviews(url, min_px=60)  # level 2 only: 1 x 2 chunks x 2 dates = 4 tasks
    attrs_ray = V.build_overviews(on_ray, min_px=60, in_process_max=0)
    assert ray.is_initialized()  # the running Ray was used, not replaced or stopped
    assert attrs == attrs_ray and [e["asset"] for e in attrs["multiscales"]["layout"]] == ["overviews/2"]
    mine, theirs = _stored_arrays(url), _stored_arrays(on_ray)
    assert sorted(mine) == sorted(theirs) and "overviews/2/crop_type" in mine
    for path, arr in mine.items():
        np.testing.assert_array_equal(arr, theirs[path], err_msg=path)
    import os

    level = os.path.join(on_ray, "overviews", "2", "reflectance")
    assert not os.path.exists(os.path.join(level, "1.0.0.0")) and os.path.exists(os.path.join(level, "0.0.0.0"))
    o2 = S.open_store(on_ray, group="overviews/2")
    assert np.isnan(o2.reflectance.values[1, :, :CHUNK // 2, :CHUNK // 2]).all()
    assert not o2.valid.values[1, :CHUNK // 2, :CHUNK // 2].any() and o2.valid.values[0].any()


def test_chunk_tasks_without_ray_need_chunk_task_ray():
    """A job sent to Ray outside :func:`chunk_task_ray` (which starts one when needed) is a
    clear error, not a silent local run."""
    import ray

    from lssr_ray.errors import LssrError
    from lssr_ray.mapping.stage_views import chunk_task_ray, run_chunk_tasks

    assert not ray.is_initialized()
    with pytest.raises(LssrError, match="chunk_task_ray"):
        run_chunk_tasks(V.overview_chunk_tasks, 3, kwargs={}, label="t", in_process_max=0)
    with chunk_task_ray(3, in_process_max=10):  # small jobs: no Ray started
        assert not ray.is_initialized()
