"""The bundled archive: COG encoding, the recovered 30 m Landsat grid, Fmask, and rebuildability."""

from __future__ import annotations

import importlib.util
import json
import sys

import netCDF4
import numpy as np
import pytest
import rasterio
from affine import Affine

from lssr_ray.config import REPO_ROOT
from lssr_ray.data import hls, masks
from lssr_ray.data.samples import sample_dir

ARCHIVE = REPO_ROOT / "data" / "archive"
FLANDERS = sample_dir("worldcereal_flanders_31UDS_2018")
L8_NC = next(FLANDERS.glob("L8_SR_10m_*.nc"))
S2_NC = next(FLANDERS.glob("S2_L2A_10m_*.nc"))
L30_0802 = "HLS.L30.T31UDS.2018214T103944.v2.0"
L30_1119 = "HLS.L30.T31UDS.2017323T104039.v2.0"  # partly cloudy
L30_0606 = "HLS.L30.T31UDS.2018157T104459.v2.0"  # fill strip
ALABAMA = "HLS.L30.T16RDV.2015216T161921.v2.0"


def _band(item_id: str, band: str, collection: str = "HLSL30"):
    with rasterio.open(ARCHIVE / collection / item_id / f"{item_id}.{band}.tif") as src:
        return src.read(1), src.profile, src.scales, src.tags(1)


def _nc(path, var, day):
    """Raw (unscaled) stored values of ``var`` for the first timestamp on ``day`` (netCDF4 only)."""
    with netCDF4.Dataset(path) as nc:
        t = netCDF4.num2date(nc["timestamp"][:], nc["timestamp"].units, only_use_cftime_datetimes=False)
        idx = [i for i, x in enumerate(t) if x.strftime("%Y-%m-%d") == day]
        v = nc[var]
        v.set_auto_maskandscale(False)
        return np.asarray(v[idx[0]]), np.asarray(v[idx])


def test_archive_is_small_and_documented():
    size = sum(p.stat().st_size for p in ARCHIVE.rglob("*") if p.is_file())
    assert size < 6.5e6
    text = (ARCHIVE / "PROVENANCE.md").read_text()
    assert "not" in text and "real HLS products" in text and "top-of-atmosphere" in text
    assert json.loads((ARCHIVE / "catalog.json").read_text())["type"] == "Catalog"


def test_cog_encoding_like_hls():
    _, prof, scales, tags = _band(L30_0802, "B04")
    assert prof["dtype"] == "int16" and prof["nodata"] == -9999 and scales == (0.0001,)
    assert prof["tiled"] and prof["compress"] == "deflate"
    assert tags["scale_factor"] == "0.0001" and tags["_FillValue"] == "-9999"
    _, fprof, _, _ = _band(L30_0802, "Fmask")
    assert fprof["dtype"] == "uint8" and fprof["nodata"] == 255
    # the file really is a COG (GDAL's own layout check)
    with rasterio.open(ARCHIVE / "HLSL30" / L30_0802 / f"{L30_0802}.B04.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_30m_grid_reexpands_to_the_10m_layer():
    t30 = Affine(30, 0, 501340, 0, -30, 5629690)
    for item, day in ((L30_0802, "2018-08-02"), (L30_1119, "2017-11-19")):
        for band in ("B02", "B04", "B07"):
            dn, prof, _, _ = _band(item, band)
            assert prof["transform"] == t30 and dn.shape == (22, 22)
            raw10, _ = _nc(L8_NC, band, day)
            qa10, _ = _nc(L8_NC, "pixel_qa", day)
            # 3x3 expansion, cropped at the recovered phase (1 row above, 2 columns left of the patch)
            fine = np.repeat(np.repeat(dn, 3, 0), 3, 1)[1:65, 2:66]
            valid = fine != -9999
            assert valid.mean() > 0.99
            np.testing.assert_array_equal(fine[valid], raw10.view(np.int16)[valid])
            v16 = raw10.view(np.int16)
            np.testing.assert_array_equal(~valid, (qa10 == 0) | (v16 < -100) | (v16 > 16000))


def test_reflectance_scaling_and_fill_strip():
    dn, _, _, _ = _band(L30_0606, "B04")
    refl = hls.to_reflectance(dn)
    assert np.isnan(refl[dn == -9999]).all() and (dn == -9999).sum() > 0
    np.testing.assert_allclose(refl[dn != -9999], dn[dn != -9999] * 1e-4, rtol=1e-6)
    fm, _, _, _ = _band(L30_0606, "Fmask")
    # the fill strip of pixel_qa (0) is Fmask fill and reflectance nodata at the same pixels
    np.testing.assert_array_equal(fm == 255, dn == -9999)


def test_fmask_from_pixel_qa_on_a_cloudy_date():
    fm, _, _, _ = _band(L30_1119, "Fmask")
    qa10, _ = _nc(L8_NC, "pixel_qa", "2017-11-19")
    qa30 = np.repeat(np.repeat(np.zeros((22, 22), np.uint16), 3, 0), 3, 1)
    qa30[1:65, 2:66] = qa10
    centre = qa30.reshape(22, 3, 22, 3)[:, 1, :, 1]  # every block's centre pixel exists except edges
    edge = np.zeros((22, 22), bool)
    edge[0, :] = edge[:, 0] = edge[-1, :] = True
    d = hls.decode_fmask(fm)
    cloud_src = ((centre >> 5) & 1).astype(bool)
    shadow_src = ((centre >> 3) & 1).astype(bool)
    np.testing.assert_array_equal(d["cloud"][~edge], cloud_src[~edge])
    np.testing.assert_array_equal(d["shadow"][~edge], shadow_src[~edge])
    assert d["cloud"].sum() > 0 and d["adjacent"].sum() > 0
    assert not (d["adjacent"] & (d["cloud"] | d["shadow"])).any()
    clear_fm = masks.clear_from_fmask(fm, mask_adjacent=False)
    np.testing.assert_array_equal(clear_fm[~edge], masks.clear_from_pixel_qa(centre, mask_cirrus=True)[~edge])


def test_s30_is_the_block_mean_of_s2_10m():
    item = "HLS.S30.T31UDS.2018214T105938.v2.0"
    dn, prof, _, _ = _band(item, "B04", "HLSS30")
    assert prof["transform"] == Affine(30, 0, 501340, 0, -30, 5629690)
    raw10, _ = _nc(S2_NC, "B04", "2018-08-02")
    pad = np.full((66, 66), np.nan)
    pad[1:65, 2:66] = np.where(raw10 == 0, np.nan, raw10 * 1e-4)
    mean = np.nanmean(pad.reshape(22, 3, 22, 3), axis=(1, 3))
    np.testing.assert_array_equal(dn, np.round(mean / 1e-4).astype(np.int16))
    # the same-day L30 and S30 red agree roughly (real pair, different sensors)
    l30, _, _, _ = _band(L30_0802, "B04")
    assert abs(np.median(l30 * 1e-4) - np.median(dn * 1e-4)) < 0.02


def test_alabama_is_toa_with_bqa_fmask():
    folder = sample_dir("landsat8_l1t_alabama_2015")
    with rasterio.open(folder / "l8_B4.tif") as src:
        b4 = src.read(1).astype(np.float64)
        t = src.transform
    with rasterio.open(folder / "l8_BQA.tif") as src:
        bqa = src.read(1)
    dn, prof, _, _ = _band(ALABAMA, "B04")
    assert prof["transform"] == t and prof["crs"].to_epsg() == 32616
    toa = (2e-5 * b4 - 0.1) / np.sin(np.radians(64.74360932))
    diff = dn.astype(np.int32) - np.round(toa / 1e-4).astype(np.int32)
    assert np.abs(diff).max() <= 1 and (diff == 0).mean() > 0.999  # float32 TOA rounds at .5 ties
    fm, _, _, _ = _band(ALABAMA, "Fmask")
    np.testing.assert_array_equal(hls.decode_fmask(fm)["cloud"], (bqa >> 14) == 3)


def test_stac_items_match_their_cogs():
    for item_json in sorted(ARCHIVE.glob("*/*/*.json")):
        item = json.loads(item_json.read_text())
        props = item["properties"]
        assert props["proj:epsg"] == int(props["proj:code"].split(":")[1])
        for key, asset in item["assets"].items():
            path = (item_json.parent / asset["href"]).resolve()
            with rasterio.open(path) as src:
                t = asset.get("proj:transform", props["proj:transform"])
                shape = asset.get("proj:shape", props["proj:shape"])
                assert list(src.transform)[:6] == t and [src.height, src.width] == shape, (item["id"], key)
                assert src.crs.to_epsg() == props["proj:epsg"]


def test_rebuild_one_granule_equals_committed(tmp_path):
    spec = importlib.util.spec_from_file_location("build_archive", REPO_ROOT / "scripts" / "build_archive.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_archive"] = mod  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop("build_archive", None)
    mod.build(tmp_path, only={L30_1119})
    new = sorted((tmp_path / "HLSL30" / L30_1119).glob("*.tif"))
    assert len(new) == 7
    for path in new:
        with rasterio.open(path) as a, rasterio.open(ARCHIVE / "HLSL30" / L30_1119 / path.name) as b:
            assert a.transform == b.transform and a.crs == b.crs and a.nodata == b.nodata
            np.testing.assert_array_equal(a.read(), b.read())
    with pytest.raises(SystemExit, match="valid"):
        mod.build(tmp_path, only={"HLS.L30.T99XXX.2000001T000000.v2.0"})
