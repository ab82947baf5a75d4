"""Crop-type code table and label rasters on a target grid (real WorldCereal labels)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

import lssr_ray.classify.labels as labels_mod
from lssr_ray.classify.labels import (
    CropTypeTable,
    UnknownCodeWarning,
    load_croptype_table,
    load_labels,
    read_netcdf_variable,
)
from lssr_ray.config import REPO_ROOT
from lssr_ray.errors import ConfigError, CRSMismatchError, MissingDataError

FLANDERS_DIR = REPO_ROOT / "data" / "samples" / "worldcereal_flanders_31UDS_2018"
TANZANIA_DIR = REPO_ROOT / "data" / "samples" / "worldcereal_tanzania_37MBS_2021"


def label_file(patch):
    return min(patch.glob("OUTPUT_POLY-*_10m_*.nc"))

UTM31 = CRS.from_epsg(32631)
FLANDERS_T = from_origin(501360, 5629680, 10, 10)  # PROVENANCE: bounds (501360, 5629040, 502000, 5629680)


def _raw_ct(patch):
    import netCDF4

    with netCDF4.Dataset(label_file(patch)) as ds:
        ds.set_auto_maskandscale(False)
        return np.asarray(ds["CT"][:])


def _write_tif(path, arr, *, crs, transform, nodata=0):
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1,
                       dtype=arr.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(arr, 1)


def test_table_loads_unique_and_names_sample_codes():
    t = load_croptype_table()
    assert len(t.codes) == len(set(t.codes)) > 150
    assert 0 not in t.codes
    # names as the WorldCereal source gives them (PROVENANCE of the table)
    assert t.name(1200) == "Maize" and t.name(9120) == "Permanent grass crops"
    assert t.name(5100) == "Potatoes" and t.name(9998) == "mixed cropping"
    assert t.name(4242) == "code 4242"  # unknown: never an invented name
    with open(Path(labels_mod.__file__).with_name("croptype_codes.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(t.codes)


@pytest.mark.parametrize("patch", [FLANDERS_DIR, TANZANIA_DIR])
def test_all_bundled_label_codes_are_in_the_table(patch):
    codes = set(np.unique(_raw_ct(patch)).tolist()) - {0}
    t = load_croptype_table()
    assert codes and codes <= set(t.codes), sorted(codes - set(t.codes))


def test_table_rejects_duplicates_and_nodata():
    with pytest.raises(ConfigError, match="duplicate"):
        CropTypeTable((1200, 1200), ("a", "b"))
    with pytest.raises(ConfigError, match="reserved"):
        CropTypeTable((0, 1200), ("x", "Maize"))


def test_netcdf_read_matches_netcdf4_and_provenance_grid():
    arr, crs, t, _, times = read_netcdf_variable(label_file(FLANDERS_DIR), "CT")
    np.testing.assert_array_equal(arr, _raw_ct(FLANDERS_DIR))
    assert crs == UTM31 and t.almost_equals(FLANDERS_T) and times is None
    with pytest.raises(ConfigError, match="no variable 'XX'.*CT"):
        read_netcdf_variable(label_file(FLANDERS_DIR), "XX")


def test_same_grid_is_used_as_is(tmp_path):
    ct = _raw_ct(FLANDERS_DIR)
    lab = load_labels(label_file(FLANDERS_DIR), crs="EPSG:32631", transform=FLANDERS_T, shape=(64, 64))
    assert not lab.warped and lab.unknown_codes == {}
    np.testing.assert_array_equal(lab.codes, ct)
    tif = tmp_path / "ct.tif"
    _write_tif(tif, ct, crs=UTM31, transform=FLANDERS_T)
    lab2 = load_labels(tif, crs=UTM31, transform=FLANDERS_T, shape=(64, 64))
    assert not lab2.warped
    np.testing.assert_array_equal(lab2.codes, ct)


def test_coarser_target_uses_mode_resampling():
    ct = _raw_ct(FLANDERS_DIR)
    t20 = from_origin(501360, 5629680, 20, 20)
    lab = load_labels(label_file(FLANDERS_DIR), crs=UTM31, transform=t20, shape=(32, 32))
    assert lab.warped
    blocks = ct.reshape(32, 2, 32, 2).transpose(0, 2, 1, 3).reshape(32, 32, 4)
    checked = 0
    for i in range(32):
        for j in range(32):
            b = blocks[i, j][blocks[i, j] != 0]  # GDAL's mode ignores nodata pixels
            if b.size == 0:
                assert lab.codes[i, j] == 0
                continue
            vals, n = np.unique(b, return_counts=True)
            if (n == n.max()).sum() == 1:  # the mode is unambiguous
                assert lab.codes[i, j] == vals[np.argmax(n)], (i, j, blocks[i, j])
                checked += 1
    assert checked > 500  # most labelled blocks lie inside one field


def test_other_crs_is_warped_back_onto_the_grid(tmp_path):
    ct = _raw_ct(FLANDERS_DIR)
    dst_t, w, h = calculate_default_transform(UTM31, "EPSG:4326", 64, 64, 501360, 5629040, 502000, 5629680)
    geo = np.zeros((h, w), np.uint16)
    reproject(ct, geo, src_transform=FLANDERS_T, src_crs=UTM31, src_nodata=0, dst_transform=dst_t,
              dst_crs="EPSG:4326", dst_nodata=0, resampling=Resampling.nearest)
    tif = tmp_path / "ct_4326.tif"
    _write_tif(tif, geo, crs="EPSG:4326", transform=dst_t)
    lab = load_labels(tif, crs=UTM31, transform=FLANDERS_T, shape=(64, 64))
    assert lab.warped and lab.codes.dtype == np.uint16
    inner = (slice(2, -2), slice(2, -2))
    agree = (lab.codes[inner] == ct[inner]).mean()
    assert agree > 0.9, agree
    assert set(np.unique(lab.codes)) <= set(np.unique(ct))  # mode never invents a code


def test_raster_without_crs_is_rejected_clearly(tmp_path):
    tif = tmp_path / "nocrs.tif"
    _write_tif(tif, _raw_ct(FLANDERS_DIR), crs=None, transform=FLANDERS_T)
    with pytest.raises(CRSMismatchError, match="has no CRS"):
        load_labels(tif, crs=UTM31, transform=FLANDERS_T, shape=(64, 64))
    with pytest.raises(MissingDataError):
        load_labels(tmp_path / "missing.tif", crs=UTM31, transform=FLANDERS_T, shape=(64, 64))


def test_unknown_codes_are_reported_not_merged(tmp_path):
    ct = _raw_ct(FLANDERS_DIR).copy()
    ct[ct == 7900] = 4242  # not a WorldCereal code
    n = int((ct == 4242).sum())
    tif = tmp_path / "unknown.tif"
    _write_tif(tif, ct, crs=UTM31, transform=FLANDERS_T)
    with pytest.warns(UnknownCodeWarning, match="4242"):
        lab = load_labels(tif, crs=UTM31, transform=FLANDERS_T, shape=(64, 64))
    assert lab.unknown_codes == {4242: n}
    np.testing.assert_array_equal(lab.codes, ct)  # kept as its own class
