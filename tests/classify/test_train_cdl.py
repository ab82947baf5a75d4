"""An Iowa user makes an Iowa classifier: jobs/train_classifier.py --labels <CDL GeoTIFF> --store.

The store is a mapping store (create_store + write_chunk, the stage-2 writer) on a 10 m UTM 15N
grid in central Iowa, one growing season (May-September 2018) of reflectance in which corn and
soybean fields green up a month apart. The labels are a raster in the real Cropland Data Layer
layout: GeoTIFF, uint8 CDL class values (1 Corn, 5 Soybeans, 81 Clouds/No Data), 0 = background
/ nodata, EPSG:5070 (CONUS Albers) at 30 m on the 30 m lattice, made from the field pattern on
the store grid with nearest-neighbour reprojection.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine

from lssr_ray.config import CROP_CLASSIFIER_DIR, OUTPUT_BANDS
from lssr_ray.errors import ConfigError
from tests._jobs import load_job

CRS, TRANSFORM = "EPSG:32615", Affine(10, 0, 450000, 0, -10, 4650000)  # ~93.6 W 42.0 N
SIZE, CHUNK, CELL, FIELD = 120, 60, 30, 24  # 4 x 4 fields of 24 px with 6 px (60 m) lanes between
DATES = ["2018-05-15", "2018-06-14", "2018-07-16", "2018-08-15", "2018-09-14"]
GREEN = {1: (0.1, 0.6, 0.95, 0.8, 0.3), 5: (0.05, 0.2, 0.6, 0.95, 0.7)}  # corn peaks in July, soy in August
SOIL = np.array([0.12, 0.10, 0.08, 0.25, 0.28, 0.22], np.float32)  # OUTPUT_BANDS order
LEAF = np.array([0.04, 0.08, 0.03, 0.45, 0.20, 0.10], np.float32)


def _fields() -> np.ndarray:
    """(SIZE, SIZE) CDL codes on the store grid: 16 fields, 8 corn and 8 soybeans, 0 between."""
    codes = np.random.default_rng(1).permutation([1] * 8 + [5] * 8).reshape(4, 4)
    out = np.zeros((SIZE, SIZE), np.uint8)
    for i in range(4):
        for j in range(4):
            out[i * CELL:i * CELL + FIELD, j * CELL:j * CELL + FIELD] = codes[i, j]
    return out


@pytest.fixture(scope="module")
def iowa(tmp_path_factory):
    import rasterio
    from rasterio.warp import Resampling, aligned_target, calculate_default_transform, reproject

    from lssr_ray.mapping.store import create_store, write_chunk

    tmp = tmp_path_factory.mktemp("iowa")
    store = str(tmp / "iowa.zarr")
    create_store(store, crs=CRS, transform=tuple(TRANSFORM)[:6], shape=(SIZE, SIZE), chunk=CHUNK, times=DATES)
    fields = _fields()
    rng = np.random.default_rng(0)
    for ti in range(len(DATES)):
        green = np.select([fields == 1, fields == 5], [GREEN[1][ti], GREEN[5][ti]], 0.05).astype(np.float32)
        refl = SOIL[:, None, None] * (1 - green) + LEAF[:, None, None] * green
        refl = refl + rng.normal(0, 0.01, refl.shape).astype(np.float32)
        clear = rng.random((SIZE, SIZE)) > 0.1  # 10 % cloud per date
        refl[:, ~clear] = np.nan
        for r in range(0, SIZE, CHUNK):
            for c in range(0, SIZE, CHUNK):
                write_chunk(store, refl[:, r:r + CHUNK, c:c + CHUNK], row_off=r, col_off=c, time_index=ti,
                            valid=clear[r:r + CHUNK, c:c + CHUNK])
    # the CDL-layout raster: EPSG:5070, 30 m, on the 30 m lattice, uint8, nodata 0
    fields_cdl = fields.copy()
    fields_cdl[0:CELL, 0:FIELD] = np.where(fields[0:CELL, 0:FIELD] > 0, 81, 0)  # one field under "Clouds/No Data"
    left, top = TRANSFORM.c, TRANSFORM.f
    t0, w0, h0 = calculate_default_transform(CRS, "EPSG:5070", SIZE, SIZE, left, top - SIZE * 10, left + SIZE * 10,
                                             top, resolution=30)
    t30, w30, h30 = aligned_target(t0, w0, h0, 30)
    cdl = np.zeros((h30, w30), np.uint8)
    reproject(fields_cdl, cdl, src_transform=TRANSFORM, src_crs=CRS, src_nodata=0, dst_transform=t30,
              dst_crs="EPSG:5070", dst_nodata=0, resampling=Resampling.nearest)
    tif = tmp / "CDL_2018_clip_iowa.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=w30, height=h30, count=1, dtype="uint8", crs="EPSG:5070",
                       transform=t30, nodata=0, compress="deflate") as dst:
        dst.write(cdl, 1)
        dst.write_colormap(1, {0: (0, 0, 0, 0), 1: (255, 211, 0, 255), 5: (38, 112, 0, 255),
                               81: (247, 247, 247, 255)})
    return tmp, store, tif, fields


def _job():
    return load_job("train_classifier")


@pytest.fixture(scope="module")
def trained(iowa):
    tmp, store, tif, _ = iowa
    model = tmp / "croptype-iowa"
    rc = _job().main(["--labels", str(tif), "--store", store, "--save-model", str(model), "--out", str(tmp / "run"),
                      "--rounds", "40"])
    assert rc == 0
    return model, json.loads((tmp / "run" / "metrics.json").read_text())


def test_cdl_raster_is_in_the_real_layout(iowa):
    import rasterio

    _, _, tif, _ = iowa
    with rasterio.open(tif) as src:
        assert src.crs.to_epsg() == 5070 and src.res == (30.0, 30.0) and src.dtypes[0] == "uint8"
        assert src.nodata == 0 and src.transform.c % 30 == 0 and src.transform.f % 30 == 0
        assert set(np.unique(src.read(1)).tolist()) == {0, 1, 5, 81}


def test_iowa_classifier_learns_corn_and_soybeans_from_the_cdl(trained):
    model, rep = trained
    from lssr_ray.classify.model import CropClassifier

    clf = CropClassifier.load(model)
    assert clf.table.codes == (1, 5) and clf.table.names == ("Corn", "Soybeans")  # 81 is not a class
    assert rep["scores"]["overall_accuracy"] > 0.93 and rep["split"]["test_pixels"] > 500  # held-out fields (0.960)
    assert rep["unknown_codes"] == {}
    assert rep["labels"].startswith("CDL_2018_clip_iowa.tif") and "/" not in rep["labels"]  # no local paths


def test_iowa_classifier_records_region_season_and_classes(iowa, trained):
    from lssr_ray.classify.scope import grid_bbox_wgs84, read_scope

    _, _, _, fields = iowa
    model, _ = trained
    scope = read_scope(model)
    assert scope.scheme == "USDA CDL" and scope.codes == (1, 5) and scope.names == ("Corn", "Soybeans")
    # the footprint of the corn/soybean pixels (the top-left field is 81 "Clouds/No Data": not a label)
    labelled = np.isin(fields, (1, 5))
    labelled[0:CELL, 0:FIELD] = False
    # within one 30 m CDL cell (3.6e-4 degrees of longitude here): the 30 m labels move field edges
    assert scope.bbox == pytest.approx(grid_bbox_wgs84(CRS, TRANSFORM, (SIZE, SIZE), labelled), abs=4e-4)
    assert (scope.start_month, scope.n_months) == (10, 12)  # 12 months ending September 2018
    assert scope.observed_months == (5, 6, 7, 8, 9) and scope.trained_dates == ("2018-05-15", "2018-09-14")


def test_iowa_classifier_maps_the_iowa_store(iowa, trained):
    from lssr_ray.mapping.classify_stage import classify_store
    from lssr_ray.mapping.store import open_store

    _, store, _, fields = iowa
    model, _ = trained
    res = classify_store(store, model, explicit=False)
    assert res.warnings == [] and res.season_start == "2017-10"
    ds = open_store(store)
    ct = ds["crop_type"].values
    inside = fields > 0
    agree = (ct[inside] == fields[inside]).mean()
    assert agree > 0.95, agree
    assert "USDA CDL" in ds["crop_type"].attrs["long_name"] and ds["crop_type"].attrs["flag_meanings"] == "Corn Soybeans"
    assert ds.attrs["crop_type_warnings"] == []


def test_flanders_classifier_on_the_iowa_store(iowa, trained):
    """The default (bundled) classifier is refused before any pixel; chosen explicitly it runs and
    the store says it was applied outside its region."""
    from lssr_ray.mapping.classify_stage import classify_store
    from lssr_ray.mapping.store import open_store

    _, store, _, _ = iowa
    model, _ = trained
    classify_store(store, model)  # a known crop_type to compare with
    before = open_store(store)["crop_type"].values.copy()
    with pytest.raises(ConfigError, match="outside the region of classifier models/croptype-lgbm"):
        classify_store(store, CROP_CLASSIFIER_DIR, explicit=False)
    ds = open_store(store)
    np.testing.assert_array_equal(ds["crop_type"].values, before)  # nothing written
    assert json.loads(ds["crop_type"].attrs["class_table"])["codes"] == [1, 5]
    res = classify_store(store, CROP_CLASSIFIER_DIR, explicit=True)
    ds = open_store(store)
    (w,) = ds.attrs["crop_type_warnings"]
    assert w == res.warnings[0] and "outside its scope" in w and "lon -93.6" in w
    assert set(np.unique(ds["crop_type"].values)) <= {0, 1200, 2130, 5100, 7900, 9120}


def test_labels_and_patch_are_exclusive_with_store(capsys):
    assert _job().main(["--labels", "x.tif", "--patch", "p", "--store", "s.zarr", "--save-model", "m",
                        "--out", "o"]) == 2
    assert "exactly one of --patch" in capsys.readouterr().err
    assert _job().main(["--labels", "x.tif", "--compare", "--out", "o"]) == 2
    assert "need --patch" in capsys.readouterr().err
    assert OUTPUT_BANDS[3] == "nir"  # the synthetic spectra above are in this band order
