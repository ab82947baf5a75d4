"""WorldCereal NetCDF readers on the real patches, checked against netCDF4 raw reads and rasterio."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from lssr_ray.data import worldcereal as wc
from lssr_ray.data.samples import sample_dir
from lssr_ray.errors import MissingDataError

FLANDERS = sample_dir("worldcereal_flanders_31UDS_2018")
HESBAYE = sample_dir("worldcereal_hesbaye_monthly_2021") / "worldcereal_preprocessed_inputs.nc"


@pytest.fixture(scope="module")
def patch(flanders_patch):
    return flanders_patch


def test_layers_and_grids(patch):
    assert set(patch.files) == {"l8", "s2_10m", "s2_20m", "s1", "labels", "dem"}
    assert patch.l8.rio.crs.to_epsg() == 32631
    assert patch.l8.rio.transform() == Affine(10, 0, 501360, 0, -10, 5629680)
    assert patch.s2_20m.rio.transform() == Affine(20, 0, 501360, 0, -20, 5629680)
    assert patch.s1.rio.transform() == patch.s2_20m.rio.transform()
    assert patch.labels.rio.transform() == patch.l8.rio.transform()
    with rasterio.open(patch.files["dem"]) as src:
        assert patch.dem.rio.transform() == src.transform
        dem_raw = src.read(1)
    assert patch.dem.dtype == np.float32
    np.testing.assert_array_equal(patch.dem.values, dem_raw.astype(np.float32))  # no -32767 here
    assert 35 <= float(patch.dem.min()) and float(patch.dem.max()) <= 47


def test_cf_decoding_against_raw(patch, raw_nc):
    raw = raw_nc(patch.files["l8"], "B04")
    np.testing.assert_allclose(patch.l8["B04"].values, raw * 1e-4, rtol=1e-6)
    s1 = raw_nc(patch.files["s1"], "VV")
    dec = patch.s1["VV"].values
    np.testing.assert_allclose(dec[s1 != 0], s1[s1 != 0] * 1e-4, rtol=1e-6)
    assert np.isnan(dec[s1 == 0]).all()
    assert -25 < np.nanmedian(dec) < 0  # sigma0 VV in dB over cropland
    ct = raw_nc(patch.files["labels"], "CT")
    assert (ct == 0).any() and np.isnan(patch.labels["CT"].values[ct == 0]).all()
    assert set(np.unique(ct[ct > 0]).tolist()) == {1200, 2130, 5100, 7900, 9120}


def test_l8_int16_view_recovers_negative_reflectance(patch, raw_nc):
    dn = wc.l8_reflectance_int16(patch, "B02")
    raw = raw_nc(patch.files["l8"], "B02")
    np.testing.assert_array_equal(dn.values, raw.view(np.int16))
    assert dn.values.min() == -1588  # uint16 63948 in the file
    assert int(dn.values[raw == 65513][0]) == -23
    with pytest.raises(MissingDataError, match="valid"):
        wc.l8_reflectance_int16(patch, "B01")


def test_monthly_inputs_decoding(raw_nc):
    ds = wc.open_monthly_inputs(HESBAYE)
    assert ds.rio.crs.to_epsg() == 32631
    assert ds.rio.transform() == Affine(10, 0, 664000, 0, -10, 5612120)
    raw_vv = raw_nc(HESBAYE, "S1-SIGMA0-VV").view(np.uint16)
    ok = (raw_vv > 0) & (raw_vv != 65535)
    expected = 20 * np.log10(raw_vv[ok].astype(np.float64)) - 83
    np.testing.assert_allclose(ds["S1-SIGMA0-VV"].values[ok], expected, rtol=1e-5)
    assert float(np.nanmedian(ds["S1-SIGMA0-VV"].values)) == pytest.approx(-9.9, abs=0.15)  # PROVENANCE
    raw_b4 = raw_nc(HESBAYE, "S2-L2A-B04").view(np.uint16)
    assert (raw_b4 == 65535).any() and np.isnan(ds["S2-L2A-B04"].values[raw_b4 == 65535]).all()
    good = raw_b4 != 65535
    np.testing.assert_allclose(ds["S2-L2A-B04"].values[good], raw_b4[good] / 10000, rtol=1e-6)
    assert float(ds["elevation"].min()) == 142 and float(ds["elevation"].max()) == 172
    assert ds["S2-L2A-B04"].sizes == {"t": 12, "y": 100, "x": 100}


def test_missing_inputs(tmp_path):
    with pytest.raises(MissingDataError):
        wc.open_patch(tmp_path / "nope")
    with pytest.raises(MissingDataError, match="prefixes"):
        wc.open_patch(tmp_path)
    with pytest.raises(MissingDataError):
        wc.open_nc(tmp_path / "x.nc")
