"""Pairs store: converter on the real Flanders/Hesbaye samples, round trip, append, s3://."""

from __future__ import annotations

import os
import shutil

import netCDF4
import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy import ndimage

from lssr_ray.config import REPO_ROOT
from lssr_ray.data import pairs, pairs_convert, psf
from lssr_ray.errors import ConfigError, MissingDataError

SAMPLES = REPO_ROOT / "data" / "samples"
FLANDERS = SAMPLES / "worldcereal_flanders_31UDS_2018"
HESBAYE = SAMPLES / "worldcereal_hesbaye_monthly_2021"
TANZANIA = SAMPLES / "worldcereal_tanzania_37MBS_2021"
L8 = FLANDERS / "L8_SR_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc"
S2_10 = FLANDERS / "S2_L2A_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc"
S2_20 = FLANDERS / "S2_L2A_20m_00002806639B424A_32631_2017-08-01_2018-11-30.nc"


@pytest.fixture(scope="module")
def flanders(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "flanders.zarr"
    rep = pairs_convert.convert_worldcereal(FLANDERS, out, band_adjust="none")
    return rep, pairs.open_pairs(out)


def _index(ds, pair_id):
    return pairs.pair_ids(ds).index(pair_id)


def _raw(path, var):
    with netCDF4.Dataset(path) as nc:
        v = nc.variables[var]
        v.set_auto_maskandscale(False)
        tv = nc.variables["timestamp"]
        times = netCDF4.num2date(tv[:], tv.units, calendar=tv.calendar)
        return np.asarray(v[:]), [t.strftime("%Y-%m-%d") for t in times]


def test_real_pairs_match_provenance_dates(flanders):
    rep, _ds = flanders
    real = sorted(p for p in rep.written if "_L8-S2_" in p)
    # PROVENANCE.md: same-day 08-02 and 10-21; next-day 07-01/06-30, 07-17/07-18, 07-24/07-23
    assert real == [
        "00002806639B424A_L8-S2_20180701_20180630_r00c00",
        "00002806639B424A_L8-S2_20180717_20180718_r00c00",
        "00002806639B424A_L8-S2_20180724_20180723_r00c00",
        "00002806639B424A_L8-S2_20180802_20180802_r00c00",
        "00002806639B424A_L8-S2_20181021_20181021_r00c00",
    ]
    # the 2-day pair 2018-02-23/02-25 is reported as skipped for the gap
    assert any("L8 2018-02-23" in item and "within 1 d" in why for item, why in rep.skipped)


def test_wider_date_gap_admits_the_two_day_pair(tmp_path):
    wide = pairs_convert.convert_worldcereal(FLANDERS, tmp_path / "w.zarr", synthetic=False, max_date_gap_days=2)
    assert "00002806639B424A_L8-S2_20180223_20180225_r00c00" in wide.written
    assert len(wide.written) == 6


def test_real_lr_is_the_30m_landsat_cells_and_georeferenced(flanders):
    _, ds = flanders
    p = pairs.read_pair(ds, _index(ds, "00002806639B424A_L8-S2_20180802_20180802_r00c00"))
    raw, dates = _raw(L8, "B04")
    k = dates.index("2018-08-02")
    red = raw[k].view(np.int16).astype(np.float32) * 1e-4
    # 30 m cells start at 10 m row 2, col 1: cell (i, j) is the constant block rows 2+3i.., cols 1+3j..
    blocks = red[2:62, 1:61].reshape(20, 3, 20, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()
    np.testing.assert_allclose(p["lr"][0], blocks[:, 0, :, 0], atol=1e-7)
    assert p["lr_valid"].all()  # pixel_qa 322 everywhere on this date
    # the patch DEM GeoTIFF covers exactly the patch bounds: its top-left is the 10 m grid origin
    with rasterio.open(FLANDERS / "dem_31UDS.tif") as src:
        left, top = src.bounds.left, src.bounds.top
        assert src.crs.to_epsg() == 32631
    expect = rasterio.transform.from_origin(left, top, 10.0, 10.0) @ Affine.translation(1, 2)
    assert p["crs"] == "EPSG:32631"
    assert p["transform"] == pytest.approx(tuple(expect)[:6])
    assert p["lr_transform"] == pytest.approx((30.0, 0.0, expect.c, 0.0, -30.0, expect.f))
    assert p["month"] == 8 and p["sensor_pair"] == "L8-S2"
    assert str(p["lr_date"])[:16] == "2018-08-02T10:39" and str(p["hr_date"])[:10] == "2018-08-02"


def test_real_hr_is_s2_truth_on_the_same_grid(flanders):
    _, ds = flanders
    p = pairs.read_pair(ds, _index(ds, "00002806639B424A_L8-S2_20180802_20180802_r00c00"))
    raw, dates = _raw(S2_10, "B08")
    k = dates.index("2018-08-02")
    nir = raw[k, 2:62, 1:61].astype(np.float32) * 1e-4
    ok = p["hr_valid"]
    assert ok.mean() > 0.95
    np.testing.assert_allclose(p["hr"][3][ok], nir[ok], atol=6e-5)  # int16 x 1e-4 storage
    # swir1 (B11, 20 m) is bilinear on pixel centres: 10 m pixel i sits at 20 m coordinate i/2 - 0.25
    b11, _ = _raw(S2_20, "B11")
    src = b11[k].astype(np.float64) * 1e-4
    rr, cc = np.mgrid[2:62, 1:61]
    ref = ndimage.map_coordinates(src, [rr / 2 - 0.25, cc / 2 - 0.25], order=1)
    inner = np.zeros_like(ok)
    inner[2:-2, 2:-2] = True
    inner &= ok
    np.testing.assert_allclose(p["hr"][4][inner], ref[inner], atol=1e-4)
    assert tuple(ds["hr_res"].values[0]) == (10, 10, 10, 10, 20, 20)
    # aux: DEM (m, 35..47 in the tif), SAR dB, land cover class indices from the csv
    assert 30 < np.nanmin(p["dem"]) and np.nanmax(p["dem"]) < 50
    assert p["present"].tolist() == [1.0, 1.0, 1.0]
    assert set(np.unique(p["landcover"]).tolist()) <= {0, 1, 2, 3, 4}
    assert -30 < np.nanmedian(p["sar"][0]) < 0 and np.nanmedian(p["sar"][1]) < np.nanmedian(p["sar"][0])


def test_real_l8_and_s2_agree_at_30m(flanders):
    _, ds = flanders
    maes = []
    for pid in [x for x in pairs.pair_ids(ds) if "_L8-S2_" in x]:
        p = pairs.read_pair(ds, _index(ds, pid))
        hr30 = psf.block_mean(p["hr"])
        m = p["lr_valid"] & np.isfinite(hr30).all(axis=0)
        maes.append([np.mean(np.abs(p["lr"][b][m] - hr30[b][m])) for b in range(6)])
    # measured: MAE about 0.013-0.016 (visible) and 0.03-0.04 (nir, swir) for these 5 pairs
    assert np.max(np.mean(maes, axis=0)) < 0.05


def test_synthetic_pairs_are_degraded_targets(flanders):
    rep, ds = flanders
    syn = [x for x in rep.written if "_S2deg-S2_" in x]
    assert len(syn) == 30  # S2 dates with SCL clear >= 0.9 over the chip
    p = pairs.read_pair(ds, _index(ds, syn[0]))
    i = _index(ds, syn[0])
    sigma = float(ds["psf_sigma"].values[i])
    assert sigma == pytest.approx(psf.sigma_for_mtf(), rel=1e-6)
    lr, ok, _ = psf.degrade(p["hr"], 3, sigma=sigma, valid=p["hr_valid"])
    np.testing.assert_array_equal(ok, p["lr_valid"])
    np.testing.assert_allclose(p["lr"][:, ok], lr[:, ok], atol=1.5e-4)
    assert p["lr_date"] == p["hr_date"] and p["sensor_pair"] == "S2deg-S2"
    assert np.isnan(ds["psf_sigma"].values[_index(ds, next(x for x in rep.written if "_L8-S2_" in x))])


def test_subset_of_layers_and_report(tmp_path):
    sub = tmp_path / "patchA"
    sub.mkdir()
    for f in (S2_10, S2_20):
        os.symlink(f, sub / f.name)
    shutil.copytree(TANZANIA, tmp_path / "tanzania", symlinks=True)
    rep = pairs_convert.convert_worldcereal(tmp_path, tmp_path / "out.zarr", min_clear=0.95)
    reasons = dict(rep.skipped)
    assert all("_S2deg-S2_" in w for w in rep.written) and rep.written
    assert "no L8_SR_10m" in reasons["patchA/real"]
    assert "dem" in reasons["patchA/dem"] and "S1" in reasons["patchA/sar"]
    assert "no S2_L2A_10m" in reasons["tanzania"]
    ds = pairs.open_pairs(tmp_path / "out.zarr")
    assert (ds["present"].values == 0).all()
    assert np.isnan(pairs.read_pair(ds, 0)["dem"]).all()


def test_monthly_cube_gives_synthetic_pairs(tmp_path):
    rep = pairs_convert.convert_worldcereal(HESBAYE, tmp_path / "h.zarr")
    ds = pairs.open_pairs(tmp_path / "h.zarr")
    assert len(rep.written) == ds.sizes["pair"] > 0
    p = pairs.read_pair(ds, 0)
    assert p["present"].tolist() == [1.0, 0.0, 1.0]  # elevation and S1, no land cover
    assert 140 <= np.nanmin(p["dem"]) and np.nanmax(p["dem"]) <= 173  # PROVENANCE: 142..172 m
    # tiles of 20 cells inside 33: origins 0 and 13 (x 664000 and 664390)
    xs = sorted({round(float(t[2])) for t in ds["transform"].values})
    assert xs == [664000, 664390]
    assert any("landcover" in item for item, _ in rep.skipped)
    assert set(pairs.pair_locations(ds)) == {"hesbaye_2021"}  # stored per pair


def test_locations_and_chip_stride(tmp_path, flanders):
    """Every converted pair records its location (the folder, not the date); stores written
    before the variable existed get the same location from their pair ids; ``chip_stride``
    places chip origins every stride cells (evaluation chips whose cores tile the area)."""
    _, ds = flanders
    assert set(pairs.pair_locations(ds)) == {"flanders_31UDS_2018"}
    legacy = ds.drop_vars("location")
    assert pairs.pair_locations(legacy) == pairs.pair_locations(ds)
    assert pairs.location_from_pair_id("worldcereal-hesbaye-monthly-2021_S2deg-S2_20210115_20210115_r00c13") \
        == "hesbaye_2021"
    assert pairs.location_from_folder("landsat8_l1t_alabama_2015") == "alabama_2015"
    rep = pairs_convert.convert_worldcereal(HESBAYE, tmp_path / "s.zarr", chip_size=16, chip_stride=8)
    st = pairs.open_pairs(tmp_path / "s.zarr")
    xs = sorted({round(float(t[2])) for t in st["transform"].values})
    assert xs == [664000, 664240, 664480]  # origins 0, 8, 16 cells (16 + 16 <= 33)
    assert st.attrs["chip_size"] == 16 and len(rep.written) == st.sizes["pair"]
    with pytest.raises(ConfigError, match="chip_stride"):
        pairs_convert.convert_worldcereal(HESBAYE, tmp_path / "x.zarr", chip_stride=0)


def mk(i, h=4):
    """A hand-made synthetic pair with chip size h (30 m cells), seeded by i."""
    rng = np.random.default_rng(i)
    hr = rng.uniform(0, 0.6, (6, 3 * h, 3 * h)).astype(np.float32)
    ok = np.ones((3 * h, 3 * h), bool)
    ok[0, 0] = False
    lr, lrok, s = psf.degrade(hr, valid=ok)
    return pairs.Pair(
        pair_id=f"p{i}", lr=lr, lr_valid=lrok, hr=hr, hr_valid=ok, crs="EPSG:32737",
        transform=(10.0, 0.0, 260900.0, 0.0, -10.0, 9595800.0),
        lr_date=np.datetime64("2021-03-04T07:30"), hr_date=np.datetime64("2021-03-04T07:30"),
        sensor_pair="S2deg-S2", source="x.nc", lr_bands="S2deg:B04,B03,B02,B08,B11,B12",
        hr_bands="S2:B04,B03,B02,B08,B11,B12", psf_sigma=s,
        sar=np.full((2, 3 * h, 3 * h), -12.345, np.float32),
    )


def test_round_trip_append_and_errors(tmp_path):
    a, b = mk(0), mk(1)
    out = tmp_path / "s.zarr"
    assert pairs.write_pairs([a], out) == 1
    pairs.write_pairs([b], out, mode="a")
    ds = pairs.open_pairs(out)
    assert ds.sizes["pair"] == 2 and ds.attrs["chip_size"] == 4
    r = pairs.read_pair(ds, 1)
    np.testing.assert_allclose(r["hr"][:, r["hr_valid"]], b.hr[:, b.hr_valid], atol=5.1e-5)
    assert np.isnan(r["hr"][:, 0, 0]).all() and np.isnan(r["lr"][:, 0, 0]).all()
    np.testing.assert_allclose(r["sar"], -12.345, atol=0.0051)
    assert r["present"].tolist() == [0.0, 0.0, 1.0] and r["month"] == 3
    assert r["lr_transform"] == (30.0, 0.0, 260900.0, 0.0, -30.0, 9595800.0)
    with pytest.raises(ConfigError, match="already in"):
        pairs.write_pairs([mk(1)], out, mode="a")
    with pytest.raises(ConfigError, match="chips of 4"):
        pairs.write_pairs([mk(5, h=5)], out, mode="a")
    with pytest.raises(ConfigError, match="3x the lr grid"):
        bad = mk(7)
        bad.hr = bad.hr[:, :-1]
        pairs.write_pairs([bad], tmp_path / "bad.zarr")
    with pytest.raises(MissingDataError, match="no pairs store"):
        pairs.open_pairs(tmp_path / "nothing.zarr")
    with pytest.raises(ConfigError, match="B8A"):
        pairs_convert.convert_worldcereal(FLANDERS, tmp_path / "x.zarr", nir="B09")
    with pytest.raises(MissingDataError, match="no WorldCereal"):
        (tmp_path / "empty").mkdir()
        pairs_convert.convert_worldcereal(tmp_path / "empty", tmp_path / "x.zarr")


def test_store_on_s3(tmp_path, monkeypatch):
    from lssr_ray.data import s3server

    srv = s3server.start()
    try:
        for k, v in srv.env().items():
            monkeypatch.setenv(k, v)
        import boto3

        boto3.client("s3", endpoint_url=srv.endpoint_url, region_name="us-east-1").create_bucket(Bucket="pairs")
        opts = {"endpoint_url": srv.endpoint_url, "key": "testing", "secret": "testing"}
        url = "s3://pairs/run1/p.zarr"
        pairs.write_pairs([mk(0), mk(2)], url, storage_options=opts)  # append is tested locally
        ds = pairs.open_pairs(url, storage_options=opts)
        assert pairs.pair_ids(ds) == ["p0", "p2"]
        r, ref = pairs.read_pair(ds, 1), mk(2)
        np.testing.assert_allclose(r["hr"][:, ref.hr_valid], ref.hr[:, ref.hr_valid], atol=5.1e-5)
        assert r["crs"] == "EPSG:32737" and r["month"] == 3
        with pytest.raises(MissingDataError, match="no pairs store"):
            pairs.open_pairs("s3://pairs/other.zarr", storage_options=opts)
    finally:
        s3server.stop(srv)
