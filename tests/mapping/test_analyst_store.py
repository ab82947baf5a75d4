"""The store as an analyst opens it (issue 14): one fast real run (2 x 2 Alabama chips of the
real L30 crop, bicubic engine, the bundled classifier passed explicitly, time-series copy on),
then the checks xarray, GDAL and a file browser would make."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lssr_ray.config import CROP_CLASSIFIER_DIR, REPO_ROOT, MapConfig
from lssr_ray.data.aoi import write_box_aoi

ALABAMA_BOX = (456015, 3396015, 458985, 3398985)  # EPSG:32616 metres: 2 x 2 chips of the L30 crop


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import ray

    from lssr_ray.mapping.pipeline import run_map

    tmp = tmp_path_factory.mktemp("analyst")
    cfg = MapConfig(aoi=write_box_aoi(tmp / "al4.geojson", ALABAMA_BOX), out=str(tmp / "al4.zarr"),
                    dates="clearest", engine="bicubic", quicklook=False, classifier=str(CROP_CLASSIFIER_DIR),
                    timeseries_copy=True)
    try:
        yield cfg, run_map(cfg, progress=False)
    finally:
        ray.shutdown()


def _metadata_texts(store):
    """Every attribute and array header of a store, as written (.zattrs / .zarray / .zmetadata)."""
    out = {}
    for root, _, files in os.walk(store):
        for f in files:
            if f in (".zattrs", ".zarray", ".zgroup", ".zmetadata"):
                path = os.path.join(root, f)
                with open(path) as fh:
                    out[os.path.relpath(path, store)] = fh.read()
    return out


def test_xarray_decodes_float32_with_honest_ranges(run):
    import xarray as xr

    from lssr_ray.mapping.store import open_store

    cfg, _ = run
    ds = open_store(cfg.out)
    assert ds.reflectance.dtype == np.float32 and ds.consistency.dtype == np.float32
    assert ds.crop_type.dtype == np.uint16 and ds.valid.dtype == np.uint8
    assert ds.reflectance.attrs["valid_range"] == [-100, 16000]  # HLS v2.0, in packed units
    refl = ds.reflectance.values
    assert np.nanmin(refl) >= -0.01 and np.nanmax(refl) <= 1.6
    # a plain open_zarr gives float64 (Zarr JSON attributes); the values are the same numbers
    plain = xr.open_zarr(cfg.out, decode_coords="all").reflectance.values
    np.testing.assert_array_equal(plain.astype(np.float32), refl)
    assert ds.rio.crs.to_epsg() == 32616
    assert list(ds.sensor.values) == ["L30"] and list(ds.granules.values) == ["HLS.L30.T16RDV.2015216T161921.v2.0"]
    ct = ds.crop_type
    codes = json.loads(ct.attrs["class_table"])["codes"]
    assert ct.attrs["flag_values"] == codes and 0 not in codes
    assert len(ct.attrs["flag_meanings"].split()) == len(codes)
    assert ct.attrs["_FillValue"] == 0
    assert ds.valid.attrs["flag_values"] == [0, 1]


def test_gdal_reads_every_variable_with_crs_transform_and_nodata(run):
    import rasterio

    from lssr_ray.mapping.store import gdal_path, open_store

    cfg, _ = run
    ds = open_store(cfg.out)
    want = tuple(ds.rio.transform())[:6]
    for name in ("reflectance", "valid", "consistency", "crop_type"):
        with rasterio.open(gdal_path(cfg.out, name)) as src:
            assert src.crs.to_epsg() == 32616, name
            assert tuple(src.transform)[:6] == pytest.approx(want), name
            if name == "crop_type":
                assert src.nodata == 0 and src.dtypes[0] == "uint16"
                assert np.array_equal(src.read(1), ds.crop_type.values)
            if name == "reflectance":
                assert src.nodata == -9999 and src.scales[0] == pytest.approx(1e-4)
    with rasterio.open(gdal_path(cfg.out, "overviews/2/reflectance")) as src:
        assert src.crs.to_epsg() == 32616 and src.shape == (168, 168)
        assert tuple(src.transform)[:6] == pytest.approx((20.0, 0, want[2], 0, -20.0, want[5]))
    layout = ds.attrs["multiscales"]["layout"]
    assert [e["asset"] for e in layout] == ["overviews/2"] and layout[0]["proj:shape"] == [168, 168]


def test_finished_store_has_no_partials_and_no_local_paths(run):
    cfg, summary = run
    assert summary.computed == 4 and summary.crop_type is not None
    assert not os.path.exists(os.path.join(cfg.out, "_partials"))
    assert not os.path.exists(os.path.join(cfg.out, "_lock.json"))
    ts = cfg.out.removesuffix(".zarr") + "_ts.zarr"
    for store in (cfg.out, ts):
        texts = _metadata_texts(store)
        assert ".zattrs" in texts
        for where, text in texts.items():
            for local in (str(REPO_ROOT), os.path.dirname(cfg.out), os.path.expanduser("~")):
                assert local not in text, (store, where, local)
            assert '"/' not in text, (store, where)  # no JSON string starting with an absolute path


def test_timeseries_copy_is_chunked_for_pixel_series(run):
    from lssr_ray.mapping.store import open_store

    cfg, _ = run
    ds, ts = open_store(cfg.out), open_store(cfg.out.removesuffix(".zarr") + "_ts.zarr")
    assert ts.reflectance.encoding["chunks"] == (1, 6, 256, 256)
    np.testing.assert_array_equal(ts.reflectance.values, ds.reflectance.values)
    assert ds.attrs["timeseries_copy"] == "al4_ts.zarr"


def test_rerun_of_the_complete_store_computes_and_writes_nothing(run):
    from lssr_ray.mapping.pipeline import run_map
    from lssr_ray.mapping.store import open_store

    cfg, _ = run
    before = open_store(cfg.out).reflectance.values
    again = run_map(cfg, progress=False)
    assert (again.resumed, again.computed, again.chunks_written) == (4, 0, 0)
    assert not os.path.exists(os.path.join(cfg.out, "_partials"))
    np.testing.assert_array_equal(open_store(cfg.out).reflectance.values, before)


def test_local_paths_in_attributes_become_portable(tmp_path):
    """Whatever a stage puts in an attribute, the store records no absolute local path: repository
    paths become relative, others their name; URLs, GDAL paths and unit slashes stay."""
    from lssr_ray.mapping.store import create_store, open_store

    out = tmp_path / "p.zarr"
    note = (f"checkpoint {REPO_ROOT}/models/croptype-lgbm missing; store {out}. "
            "inputs s3://b/k.tif, /vsis3/b/k.tif at 12 km2/h")
    create_store(str(out), crs="EPSG:32616", transform=(10, 0, 4e5, 0, -10, 3.7e6), shape=(8, 8), chunk=8,
                 times=["2015-08-04"], attrs={"note": note, "paths": [str(tmp_path / "a.geojson")]})
    a = open_store(str(out)).attrs
    assert a["note"] == ("checkpoint models/croptype-lgbm missing; store p.zarr. "
                         "inputs s3://b/k.tif, /vsis3/b/k.tif at 12 km2/h")
    assert a["paths"] == ["a.geojson"]
