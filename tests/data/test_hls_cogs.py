"""Full-size HLS v2.0-format COGs (scripts/make_hls_cogs.py, lssr_ray.data.cog) and counted S3 reads."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import rasterio
from affine import Affine

from lssr_ray.config import REPO_ROOT
from lssr_ray.data import hls

SOURCE = REPO_ROOT / "data" / "archive" / "HLSL30" / "HLS.L30.T16RDV.2015216T161921.v2.0"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(name, None)
    return mod


def test_full_size_cogs_have_the_real_hls_layout(hls_full_granule):
    g = hls_full_granule["granules"][0]
    epsg, transform, shape = hls.tile_grid("15TVG")
    assert shape == (3660, 3660) and sorted(g["files"]) == ["B02", "B03", "B04", "B05", "B06", "B07", "Fmask"]
    for band, path in g["files"].items():
        with rasterio.open(path) as src:
            assert (src.height, src.width) == (3660, 3660) and src.crs.to_epsg() == epsg
            assert tuple(src.transform)[:6] == tuple(transform)
            assert src.block_shapes == [(256, 256)] and src.compression.name == "deflate"
            assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"  # GDAL's own COG layout check
            assert src.overviews(1) == [2, 4, 8, 16]
            assert src.tags()["NCOLS"] == "3660" and src.tags()["HORIZONTAL_CS_CODE"] == f"EPSG:{epsg}"
            if band == "Fmask":
                assert src.dtypes[0] == "uint8" and src.nodata == 255
            else:
                assert src.dtypes[0] == "int16" and src.nodata == -9999 and src.scales == (0.0001,)
                tags = src.tags(1)
                assert tags["scale_factor"] == "0.0001" and tags["add_offset"] == "0.0" and tags["_FillValue"] == "-9999"
        for level, size in enumerate((1830, 915, 458, 229)):  # 128 x 128 overview tiles, as in real files
            with rasterio.open(path, overview_level=level) as ovr:
                assert ovr.shape == (size, size) and ovr.block_shapes == [(128, 128)]


def test_pixels_are_the_real_source_mirror_tiled(hls_full_granule):
    mk = _script("make_hls_cogs")
    g = hls_full_granule["granules"][0]
    with rasterio.open(SOURCE / f"{SOURCE.name}.B04.tif") as src:
        source = src.read(1)
    with rasterio.open(g["files"]["B04"]) as cog:
        win = cog.read(1, window=((1000, 1700), (2000, 2700)))
    t = Affine(*g["transform"][:6])
    r0, c0 = int(np.floor(-t.f / 30)) + 1000, int(np.floor(t.c / 30)) + 2000
    expect = source[np.ix_(mk.mirror_index(r0, 700, source.shape[0]), mk.mirror_index(c0, 700, source.shape[1]))]
    np.testing.assert_array_equal(win, expect)
    # the neighbouring tile 15TWG (same zone, corners on the 60 m lattice) shows the same pixels in the overlap
    _, tw, _ = hls.tile_grid("15TWG")
    tw = Affine(*tw)
    k = round((tw.c - t.c) / 30)
    assert tw.f == t.f and k * 30 == tw.c - t.c and 0 < k < 3660
    west = mk.tiled_pixels(source, t, (64, 3660))[:, k:]
    np.testing.assert_array_equal(mk.tiled_pixels(source, tw, (64, 3660 - k)), west)


def test_items_have_the_real_cmr_stac_shape_and_open_on_s3(hls_full_granule):
    from lssr_ray.data.catalog import open_catalog

    mk = _script("make_hls_cogs")
    g = hls_full_granule["granules"][0]
    template = mk._l30_item(mk.default_template())
    item = json.loads((hls_full_granule["catalog"].parent / g["id"] / f"{g['id']}.json").read_text())
    assert item["id"] == "HLS.L30.T15TVG.2021180T165311.v2.0" and item["collection"] == "HLSL30_2.0"
    assert item["stac_version"] == template["stac_version"] and item["stac_extensions"] == template["stac_extensions"]
    assert set(item["properties"]) == set(template["properties"])  # no proj:*, nothing invented
    assert not [k for k in json.dumps(item).split('"') if k.startswith("proj:")]
    assert item["properties"]["eo:cloud_cover"] == mk.cloud_cover(rasterio.open(g["files"]["Fmask"]).read(1))
    key = f"HLSL30.020/{g['id']}/{g['id']}.B04.tif"
    assert item["assets"]["B04"]["href"] == f"https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/{key}"
    assert item["assets"]["s3_B04"]["href"] == f"s3://lp-prod-protected/{key}"
    assert item["assets"]["s3_B04"]["storage:refs"] == template["assets"]["s3_B04"]["storage:refs"]
    assert "B01" not in item["assets"] and "s3_SZA" not in item["assets"]  # only bands that were made
    granule = open_catalog(hls_full_granule["catalog"], asset_access="s3").get(g["id"])
    epsg, transform, shape = hls.tile_grid("15TVG")
    assert granule.crs == f"EPSG:{epsg}" and tuple(granule.transform) == tuple(transform) and granule.shape == shape
    assert granule.assets["B04"] == f"s3://lp-prod-protected/{key}"


def test_archive_cogs_are_byte_identical_after_the_writer_moved(tmp_path):
    build = _script("build_archive")
    gid = "HLS.L30.T16RDV.2015216T161921.v2.0"
    build.build(tmp_path, only={gid})
    made = sorted((tmp_path / "HLSL30" / gid).glob("*.tif"))
    assert len(made) == 7
    for path in made:
        assert path.read_bytes() == (SOURCE / path.name).read_bytes(), path.name


def test_counting_proxy_counts_requests_and_bytes(hls_full_granule, s3_server):
    import boto3

    from lssr_ray.data.s3server import CountingProxy, s3_env

    g = hls_full_granule["granules"][0]
    size = g["files"]["Fmask"].stat().st_size
    key = f"HLSL30.020/{g['id']}/{g['id']}.Fmask.tif"
    env = s3_env(s3_server.endpoint_url)
    with CountingProxy(s3_server.endpoint_url) as proxy:
        s3 = boto3.client("s3", endpoint_url=proxy.endpoint_url, region_name=env["AWS_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        assert len(s3.get_object(Bucket="lp-prod-protected", Key=key)["Body"].read()) == size
        part = s3.get_object(Bucket="lp-prod-protected", Key=key, Range="bytes=100-1099")
        assert part["ResponseMetadata"]["HTTPStatusCode"] == 206 and len(part["Body"].read()) == 1000
        assert s3.head_object(Bucket="lp-prod-protected", Key=key)["ContentLength"] == size
        assert proxy.requests == {"GET": 2, "HEAD": 1} and proxy.body_bytes == size + 1000
        proxy.reset()
        assert proxy.requests == {} and proxy.body_bytes == 0


def test_block_reads_fetch_each_band_once_per_block(hls_full_granule, s3_server, monkeypatch, tmp_path):
    """read_chips(block=2) on a 2 x 2-chip AOI: one header + data read per band file; block=1
    (per chip) repeats them for each chip. Counted at a proxy, GDAL's file cache off so each
    open is what a fresh worker would fetch."""
    from lssr_ray.data.aoi import read_aoi, write_box_aoi
    from lssr_ray.data.catalog import open_catalog
    from lssr_ray.data.cube import plan_data_stage, read_chips
    from lssr_ray.data.s3server import CountingProxy, s3_env

    t = hls_full_granule["granules"][0]["transform"]
    x0, y1 = t[2] + 50_010.0, t[5] - 40_020.0
    aoi = write_box_aoi(tmp_path / "aoi.geojson", (x0, y1 - 2970.0, x0 + 2970.0, y1), "EPSG:32615")
    stage = plan_data_stage(read_aoi(aoi), open_catalog(hls_full_granule["catalog"], asset_access="s3"))
    assert len(stage.plan.chips) == 4
    monkeypatch.setenv("CPL_VSIL_CURL_NON_CACHED", "/vsis3/lp-prod-protected")
    gets = {}
    with CountingProxy(s3_server.endpoint_url) as proxy:
        for k, v in s3_env(proxy.endpoint_url).items():
            monkeypatch.setenv(k, v)
        for block in (2, 1):
            proxy.reset()
            recs = [rec for rec, x in read_chips(stage.plan, stage.granules, block=block) if x is not None]
            assert len(recs) == 4 and all(r.clear_fraction > 0 for r in recs)
            gets[block] = proxy.requests.get("GET", 0)
    files = 7  # measured: {2: 20, 1: 56}
    assert files <= gets[2] <= 3 * files, gets  # per band file: its header, then the block's tiles
    assert gets[1] >= 2 * 4 * files, gets  # per chip: each of the 4 chips opens (header) and reads every file
    assert gets[1] > 2 * gets[2], gets


def test_bad_input_is_a_one_line_error_and_writes_nothing(tmp_path, capsys):
    mk = _script("make_hls_cogs")
    out = tmp_path / "out"
    cases = {("--tiles", "15TVG", "99ZZZ"): "not an MGRS tile id: '99ZZZ'",
             ("--item-template", str(tmp_path / "none.json")): "item template not found",
             ("--time", "yesterday"): "not an ISO 8601 time"}
    for args, message in cases.items():
        assert mk.main(["--out", str(out), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()
