"""HLS v2.0 naming, band tables, scaling, Fmask bits and MGRS tile ids."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from lssr_ray.config import OUTPUT_BANDS
from lssr_ray.data import hls
from lssr_ray.data.samples import sample_dir
from lssr_ray.data.worldcereal import open_nc, open_patch
from lssr_ray.errors import ConfigError

NAME = "HLS.L30.T31UDS.2018214T103900.v2.0.B04.tif"


def test_parse_and_format_round_trip():
    n = hls.parse_name(NAME)
    assert (n.product, n.tile, n.version, n.band) == ("L30", "31UDS", "v2.0", "B04")
    assert n.datetime == dt.datetime(2018, 8, 2, 10, 39, tzinfo=dt.UTC)  # day 214 of 2018
    assert n.filename() == NAME and n.granule_id == NAME[: -len(".B04.tif")]
    when = dt.datetime(2018, 8, 2, 10, 39, 0)
    assert hls.format_name("L30", "T31UDS", when, "B04") == NAME
    assert hls.format_name("S30", "31UDS", when) == "HLS.S30.T31UDS.2018214T103900.v2.0"
    assert hls.parse_name("s3://b/x/" + NAME).band == "B04"
    # aware non-UTC input is converted
    cet = dt.datetime(2018, 8, 2, 12, 39, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert hls.format_name("L30", "31UDS", cet) == NAME[: -len(".B04.tif")]


@pytest.mark.parametrize("bad", ["HLS.X30.T31UDS.2018214T103900.v2.0.B04.tif", "HLS.L30.31UDS.2018214T103900.v2.0",
                                 "LC08_L1TP_020039.tif", "HLS.L30.T31UDS.2018214.v2.0.B04.tif"])
def test_bad_names(bad):
    with pytest.raises(ConfigError, match="expected like"):
        hls.parse_name(bad)
    with pytest.raises(ConfigError, match="valid"):
        hls.format_name("L31", "31UDS", dt.datetime(2018, 1, 1))


def test_band_tables_cover_output_bands():
    expect = {"L30": ("B04", "B03", "B02", "B05", "B06", "B07"), "S30": ("B04", "B03", "B02", "B8A", "B11", "B12")}
    for product, ids in expect.items():
        assert tuple(hls.band_id(product, b) for b in OUTPUT_BANDS) == ids
        assert set(hls.BANDS[product].values()) <= set(hls.WAVELENGTH_UM[product])
    with pytest.raises(ConfigError, match="valid"):
        hls.band_id("L30", "rededge1")


def test_reflectance_scaling():
    dn = np.array([[-9999, 0, 1234], [16000, -100, 3]], dtype=np.int16)
    r = hls.to_reflectance(dn)
    assert r.dtype == np.float32 and np.isnan(r[0, 0])
    np.testing.assert_allclose(r[~np.isnan(r)], np.array([0, 1234, 16000, -100, 3]) * 1e-4, rtol=1e-6)
    back = hls.from_reflectance(r)
    np.testing.assert_array_equal(back, dn)
    assert hls.from_reflectance(np.array([1.7, -0.02, np.nan])).tolist() == [-9999, -9999, -9999]


def test_fmask_bits():
    cloud = np.array([True, False, False, False])
    adj = np.array([False, True, False, False])
    fill = np.array([False, False, False, True])
    f = hls.encode_fmask(cloud=cloud, adjacent=adj, water=np.array([False, False, True, False]), aerosol=1, fill=fill)
    assert f.dtype == np.uint8
    assert f.tolist() == [0b01000010, 0b01000100, 0b01100000, 255]
    d = hls.decode_fmask(f)
    np.testing.assert_array_equal(d["cloud"], cloud)
    np.testing.assert_array_equal(d["adjacent"], adj)
    assert d["water"].tolist() == [False, False, True, False] and d["fill"].tolist() == [False] * 3 + [True]
    assert d["aerosol"].tolist() == [1, 1, 1, 0]
    with pytest.raises(ConfigError, match="aerosol"):
        hls.encode_fmask(cloud=cloud, aerosol=4)
    with pytest.raises(ConfigError, match="shape"):
        hls.encode_fmask(cloud=cloud, shadow=np.zeros(3, bool))


def test_mgrs_tiles_agree_with_worldcereal_tile_attributes():
    # independent reference: the 'tile' attribute WorldCereal wrote into each patch file
    for name, epsg in (("worldcereal_flanders_31UDS_2018", 32631), ("worldcereal_tanzania_37MBS_2021", 32737)):
        patch = open_patch(sample_dir(name))
        ds = open_nc(patch.files["s2_20m"], mask_and_scale=False)
        b = ds.rio.bounds()
        assert ds.attrs["tile"] in hls.mgrs_tiles(b, epsg)
    # Alabama crop: straddles northing 3400000; only tile 16RDV (9.8 km overlap south) holds all of it
    assert hls.mgrs_tiles((452475, 3390555, 471285, 3408645), 32616) == ["16RDV"]
    with pytest.raises(ConfigError, match="UTM"):
        hls.mgrs_tiles((0, 0, 1, 1), 3857)
