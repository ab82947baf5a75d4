"""Catalog search over the bundled archive, locally and through a real S3 endpoint (moto_server)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio
from shapely.geometry import Point, box, shape

from lssr_ray.config import REPO_ROOT
from lssr_ray.data.catalog import Granule, open_catalog
from lssr_ray.errors import ConfigError, MissingDataError

ARCHIVE = REPO_ROOT / "data" / "archive"
EXAMPLES = REPO_ROOT / "examples"


def _aoi(name):
    return json.loads((EXAMPLES / name).read_text())


@pytest.fixture(scope="module")
def cat():
    return open_catalog(ARCHIVE)


def test_flanders_july_2018(cat):
    got = cat.search(_aoi("flanders_31UDS.geojson"), start="2018-07-01", end="2018-07-31")
    assert [g.id for g in got] == [
        "HLS.L30.T31UDS.2018182T103929.v2.0",  # 07-01
        "HLS.L30.T31UDS.2018198T103936.v2.0",  # 07-17
        "HLS.S30.T31UDS.2018199T110326.v2.0",  # 07-18
        "HLS.S30.T31UDS.2018204T110518.v2.0",  # 07-23
        "HLS.L30.T31UDS.2018205T104526.v2.0",  # 07-24
    ]
    g = got[0]
    assert isinstance(g, Granule) and g.crs == "EPSG:32631" and g.epsg == 32631 and g.product == "L30"
    assert g.shape == (22, 22) and g.transform == (30.0, 0.0, 501340.0, 0.0, -30.0, 5629690.0)
    assert set(g.assets) == {"B02", "B03", "B04", "B05", "B06", "B07", "Fmask"}
    with rasterio.open(g.assets["B04"]) as src:  # hrefs are absolute and agree with the file
        assert tuple(src.transform)[:6] == g.transform and src.crs.to_epsg() == 32631
    assert g.asset_info["B04"]["scale"] == 0.0001 and g.asset_info["Fmask"]["nodata"] == 255
    # a bare end date covers the whole day (the 10:39 granule of 2018-08-02 is included)
    day = cat.search(_aoi("flanders_31UDS.geojson"), start="2018-08-02", end="2018-08-02", collections=("HLSL30",))
    assert [g.id for g in day] == ["HLS.L30.T31UDS.2018214T103944.v2.0"]


def test_outside_coverage_is_empty(cat):
    assert cat.search(_aoi("iowa.geojson")) == []
    assert cat.search(_aoi("flanders_31UDS.geojson"), start="2019-01-01") == []
    assert cat.search(box(3.03, 50.82, 3.04, 50.83)) == []  # just north-east of the patch


def test_alabama_and_geometry_forms(cat):
    al = cat.search(_aoi("alabama_baldwin.geojson"))
    assert [g.id for g in al] == ["HLS.L30.T16RDV.2015216T161921.v2.0"]
    assert al[0].shape == (603, 627) and al[0].properties["lssr:reflectance"] == "toa"
    aoi = shape(_aoi("alabama_baldwin.geojson")["features"][0]["geometry"])
    assert shape(al[0].geometry).contains(aoi)
    assert cat.search(aoi) == al and cat.search(aoi.__geo_interface__) == al


def test_aux_items(cat):
    fl = _aoi("flanders_31UDS.geojson")
    assert [g.id for g in cat.aux_items(fl, "dem")] == ["dem_31UDS"]
    assert [g.id for g in cat.aux_items(fl, "landcover")] == ["landcover_31UDS"]
    assert [g.id for g in cat.aux_items(fl, "croptype")] == ["croptype_31UDS"]
    s1 = cat.aux_items(fl, "sentinel1", start="2018-07-01", end="2018-07-31")
    assert [g.id for g in s1] == ["S1_GRD_ASC.T31UDS.20180702T174016", "S1_GRD_ASC.T31UDS.20180726T174020"]
    assert set(s1[0].assets) == {"VV", "VH"}
    tz = Point(36.85, -3.657).buffer(0.001)  # the Tanzania patch, southern hemisphere UTM
    dem = cat.aux_items(tz, "dem")
    assert [g.id for g in dem] == ["dem_37MBS"] and dem[0].crs == "EPSG:32737"
    ref = cat.aux_items(fl, "s2_reference", start="2018-08-02", end="2018-08-02")
    assert ref[0].asset_info["B11"]["shape"] == (32, 32) and ref[0].shape == (64, 64)
    # the DEM window is the patch time window: outside it nothing matches
    assert cat.aux_items(fl, "dem", start="2020-01-01") == []


def test_bad_requests(cat, tmp_path):
    fl = _aoi("flanders_31UDS.geojson")
    with pytest.raises(ConfigError, match="valid"):
        cat.search(fl, collections=("HLSL31",))
    with pytest.raises(ConfigError, match="valid"):
        cat.aux_items(fl, "weather")
    with pytest.raises(ConfigError, match="before"):
        cat.search(fl, start="2018-08-01", end="2018-07-01")
    with pytest.raises(ConfigError, match="ISO"):
        cat.search(fl, start="last tuesday")
    with pytest.raises(ConfigError, match="GeoJSON"):
        cat.search([3.0, 50.8])
    with pytest.raises(MissingDataError, match="build_archive"):
        open_catalog(tmp_path)
    with pytest.raises(MissingDataError):
        cat.get("nope")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3_archive(monkeypatch):
    """A loopback moto_server with the archive's JSON files and one COG under s3://lssr/archive/."""
    port = _free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                     "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        import boto3
        import botocore.exceptions

        s3 = boto3.client("s3", endpoint_url=endpoint)
        for _ in range(100):
            try:
                s3.create_bucket(Bucket="lssr")
                break
            except (botocore.exceptions.EndpointConnectionError, ConnectionError):  # still starting
                time.sleep(0.1)
        cog = "HLSL30/HLS.L30.T31UDS.2018214T103944.v2.0/HLS.L30.T31UDS.2018214T103944.v2.0.B04.tif"
        for p in list(ARCHIVE.rglob("*.json")) + [ARCHIVE / cog]:
            s3.upload_file(str(p), "lssr", "archive/" + p.relative_to(ARCHIVE).as_posix())
        yield "s3://lssr/archive", cog
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_s3_catalog_yields_s3_hrefs(s3_archive, cat):
    href, cog = s3_archive
    remote = open_catalog(href)
    assert [g.id for g in remote.granules] == [g.id for g in cat.granules]
    g = remote.get("HLS.L30.T31UDS.2018214T103944.v2.0")
    assert g.assets["B04"] == f"{href}/{cog}"
    assert all(h.startswith(href + "/") for x in remote.granules for h in x.assets.values())
    local = cat.get(g.id)
    assert (g.transform, g.shape, g.crs, g.bbox, g.datetime) == (local.transform, local.shape, local.crs,
                                                                 local.bbox, local.datetime)
    hits = remote.search(_aoi("flanders_31UDS.geojson"), start="2018-08-02", end="2018-08-02")
    assert [h.id for h in hits] == [x.id for x in cat.search(_aoi("flanders_31UDS.geojson"),
                                                             start="2018-08-02", end="2018-08-02")]
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    assert fs.cat(g.assets["B04"]) == (ARCHIVE / cog).read_bytes()
    with pytest.raises(MissingDataError):
        open_catalog("s3://lssr/nothing-here")
