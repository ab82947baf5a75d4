"""The aligned input cube and the job's data stage on the bundled archive (local and s3://)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine

from lssr_ray.config import OUTPUT_BANDS, REPO_ROOT, GridConfig
from lssr_ray.data import hls
from lssr_ray.data.aoi import read_aoi
from lssr_ray.data.aux import warp_layer
from lssr_ray.data.catalog import open_catalog
from lssr_ray.data.cube import build_cube, plan_data_stage, read_chips

ARCHIVE = REPO_ROOT / "data" / "archive" / "catalog.json"
FLANDERS_AOI = REPO_ROOT / "examples" / "flanders_31UDS.geojson"


@pytest.fixture(scope="module")
def flanders_stage():
    return plan_data_stage(read_aoi(FLANDERS_AOI), open_catalog(ARCHIVE), config=GridConfig(chip_size=16, overlap=4))


@pytest.fixture(scope="module")
def flanders_cube(flanders_stage, tmp_path_factory):
    st = flanders_stage
    return build_cube(st.plan, st.granules, tmp_path_factory.mktemp("cube"), aux=st.aux)


def test_grid_snapped_to_archive_lattice(flanders_stage):
    g0 = flanders_stage.granules[0]
    gt = Affine(*g0.transform[:6])
    it = flanders_stage.plan.grid.input_transform
    # the grid's 30 m pixel edges are the granules' pixel edges (whole-pixel offset)
    assert ((it.c - gt.c) / 30) % 1 == 0 and ((it.f - gt.f) / 30) % 1 == 0
    assert flanders_stage.plan.grid.crs == "EPSG:32631"
    assert flanders_stage.aux.dem and flanders_stage.aux.landcover and len(flanders_stage.aux.sar) >= 1


def test_cube_values_match_sources(flanders_stage, flanders_cube):
    plan, res = flanders_stage.plan, flanders_cube
    assert len(res.records) == len(plan.chips) >= 4 and not res.skipped
    lr = xr.open_zarr(res.path, group="lr_30m", decode_coords="all")
    aux = xr.open_zarr(res.path, group="aux_10m", decode_coords="all")
    assert str(lr.rio.crs) == "EPSG:32631" and lr.rio.transform() == plan.grid.input_transform
    assert aux.rio.transform() == plan.grid.output_transform
    assert list(lr.band.values) == list(OUTPUT_BANDS)
    assert lr["lr"].encoding["chunks"] == (1, 12, 12) and aux["dem"].encoding["chunks"] == (36, 36)
    by_id = {g.id: g for g in flanders_stage.granules}
    it = plan.grid.input_transform
    for rec in res.records:
        g = by_id[rec.granule_id]
        gt = Affine(*g.transform[:6])
        chip = plan[rec.chip_id]
        r0, c0 = chip.core_window[0] // 3, chip.core_window[1] // 3
        # core of this chip in the cube == the granule's red band (int16 * 1e-4) where clear
        with rasterio.open(g.assets["B04"]) as src:
            dn = src.read(1)
        row_off = round((it.f - gt.f) / gt.e) + r0
        col_off = round((it.c - gt.c) / gt.a) + c0
        cube_red = lr["lr"].sel(band="red").values[r0 : r0 + 12, c0 : c0 + 12]
        clear = lr["clear"].values[r0 : r0 + 12, c0 : c0 + 12].astype(bool)
        for i in range(12):
            for j in range(12):
                rr, cc = row_off + i, col_off + j
                inside = 0 <= rr < dn.shape[0] and 0 <= cc < dn.shape[1]
                if clear[i, j]:
                    assert inside and cube_red[i, j] == np.float32(dn[rr, cc]) * np.float32(hls.SCALE)
                else:
                    assert np.isnan(cube_red[i, j])
        assert rec.month == g.datetime.month
        assert set(np.unique(lr["month"].values[r0 : r0 + 12, c0 : c0 + 12])) <= {0, rec.month}
    # DEM on the 10 m grid equals a direct warp of the archive DEM onto the same grid
    direct = warp_layer(flanders_stage.aux.dem, plan.grid.crs, transform=plan.grid.output_transform,
                        shape=plan.grid.output_shape, kind="dem")[0]
    written = np.isfinite(aux["dem"].values)
    assert written.sum() > 1000
    np.testing.assert_allclose(aux["dem"].values[written], direct[written], atol=1e-5)
    assert 34 <= np.nanmin(aux["dem"].values) and np.nanmax(aux["dem"].values) <= 48
    meta = json.loads((res.path.parent / "chips.json").read_text())
    assert [c["chip_id"] for c in meta["chips"]] == [c.id for c in plan.chips]
    assert "chips read" in res.summary() and rec.chip_id in res.table()


def test_chip_inputs_follow_batch_contract(flanders_stage):
    rec, x = next(read_chips(flanders_stage.plan, flanders_stage.granules, aux=flanders_stage.aux))
    assert x["lr"].shape == (6, 16, 16) and x["lr"].dtype == np.float32
    assert x["dem"].shape == (1, 48, 48) and x["landcover"].dtype == np.int64 and x["sar"].shape == (2, 48, 48)
    assert x["present"].dtype == np.float32 and x["present"].shape == (3,)
    assert 1 <= int(x["month"]) <= 12 and str(x["chip_id"]) == rec.chip_id


def test_cube_from_s3_catalog_equals_local(s3_env, tmp_path):
    kw = {"config": GridConfig(chip_size=16, overlap=4), "start": "2018-02-01", "end": "2018-03-31"}
    aoi = read_aoi(FLANDERS_AOI)
    st3 = plan_data_stage(aoi, open_catalog("s3://lssr-test/archive/catalog.json"), **kw)
    assert st3.granules and all(h.startswith("s3://") for g in st3.granules for h in g.assets.values())
    assert st3.aux.dem.startswith("s3://")
    st = plan_data_stage(aoi, open_catalog(ARCHIVE), **kw)
    res3 = build_cube(st3.plan, st3.granules, tmp_path / "s3", aux=st3.aux)
    res = build_cube(st.plan, st.granules, tmp_path / "local", aux=st.aux)
    assert [r.granule_id for r in res3.records] == [r.granule_id for r in res.records]
    for group in ("lr_30m", "aux_10m"):
        a = xr.open_zarr(res3.path, group=group).load()
        b = xr.open_zarr(res.path, group=group).load()
        xr.testing.assert_identical(a, b)
    assert np.isfinite(b["sar"].values).any()  # a Sentinel-1 scene within 16 days was used


def _job():
    spec = importlib.util.spec_from_file_location("map_region", REPO_ROOT / "jobs" / "map_region.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_job_data_stage(tmp_path, capsys):
    rc = _job().main(["--aoi", str(FLANDERS_AOI), "--out", str(tmp_path / "o"), "--start", "2018-01-01",
                      "--end", "2018-12-31", "--stage", "data"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "chip plan: 1 chips" in out and "r0000c0000" in out
    assert (tmp_path / "o" / "inputs.zarr").is_dir() and (tmp_path / "o" / "chips.json").is_file()
    # the date filter is applied: only 2018 granules are candidates
    assert "2018" in json.loads((tmp_path / "o" / "chips.json").read_text())["chips"][0]["granule_id"][15:19]
