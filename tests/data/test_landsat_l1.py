"""MTL parsing and DN -> TOA reflectance on the real Alabama Landsat-8 L1T crop."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pytest
import rasterio

from lssr_ray.data.landsat_l1 import open_scene, parse_mtl, read_mtl
from lssr_ray.data.samples import sample_dir
from lssr_ray.errors import ConfigError, MissingDataError

FOLDER = sample_dir("landsat8_l1t_alabama_2015")


def _mtl_number(key: str) -> float:
    text = (FOLDER / "l8_MTL.txt").read_text()
    return float(re.search(rf"^\s*{key}\s*=\s*(\S+)", text, re.MULTILINE).group(1))


def test_mtl_fields():
    mtl = read_mtl(FOLDER / "l8_MTL.txt")
    assert mtl.scene_id == "LC80200392015216LGN00"
    assert mtl.data_type == "L1T"
    assert mtl.sun_elevation == pytest.approx(64.74360932)
    assert mtl.acquired == dt.datetime(2015, 8, 4, 16, 19, 21, 791742, tzinfo=dt.UTC)
    assert sorted(mtl.reflectance_mult) == list(range(1, 10))
    assert mtl.reflectance_mult[4] == 2.0e-05 and mtl.reflectance_add[4] == -0.1
    assert mtl.raw["L1_METADATA_FILE"]["PRODUCT_METADATA"]["WRS_PATH"] == 20


@pytest.mark.parametrize("band", [2, 4, 5])
def test_toa_matches_hand_computation(band):
    scene = open_scene(FOLDER)
    toa, prof = scene.read_toa(band)
    with rasterio.open(FOLDER / f"l8_B{band}.tif") as src:
        dn = src.read(1).astype(np.float64)
        assert prof["transform"] == src.transform
    mult = _mtl_number(f"REFLECTANCE_MULT_BAND_{band}")
    add = _mtl_number(f"REFLECTANCE_ADD_BAND_{band}")
    sun = _mtl_number("SUN_ELEVATION")
    expected = (mult * dn + add) / np.sin(np.deg2rad(sun))
    assert toa.dtype == np.float32 and toa.shape == (603, 627)
    np.testing.assert_allclose(toa, expected, rtol=1e-6)
    # a plausible vegetated-land range for an August scene
    assert 0.0 < np.nanmedian(toa) < 0.5


def test_toa_single_pixel_value():
    scene = open_scene(FOLDER)
    dn, _ = scene.read_dn("B4")
    v = int(dn[300, 300])
    toa, _ = scene.read_toa(4)
    assert toa[300, 300] == pytest.approx((2e-5 * v - 0.1) / np.sin(np.radians(64.74360932)), rel=1e-6)


def test_fill_dn_becomes_nan():
    mtl = read_mtl(FOLDER / "l8_MTL.txt")
    out = mtl.toa_reflectance(np.array([[0, 10000]], dtype=np.uint16), 4)
    assert np.isnan(out[0, 0]) and out[0, 1] == pytest.approx((0.2 - 0.1) / np.sin(np.radians(64.74360932)))


def test_bad_input_errors(tmp_path):
    with pytest.raises(ConfigError, match="END_GROUP"):
        parse_mtl("END_GROUP = X\n")
    with pytest.raises(ConfigError, match="inside a GROUP"):
        parse_mtl("GROUP = A\n  K = 1\n")
    with pytest.raises(MissingDataError):
        read_mtl(tmp_path / "none_MTL.txt")
    with pytest.raises(ConfigError, match="valid"):
        read_mtl(FOLDER / "l8_MTL.txt").toa_reflectance(np.ones((2, 2), np.uint16), 12)
    with pytest.raises(MissingDataError, match="present"):
        open_scene(FOLDER).read_dn("B9")
