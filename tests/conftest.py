"""Shared fixtures: a real loopback S3 server and small HLS-format granules made from real samples."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT

SAMPLES = REPO_ROOT / "data" / "samples"
ALABAMA = SAMPLES / "landsat8_l1t_alabama_2015"
FLANDERS = SAMPLES / "worldcereal_flanders_31UDS_2018"
TEST_BUCKET = "lssr-test"


@dataclass(frozen=True)
class TestGranule:
    """Minimal granule with the fields of ``lssr_ray.data.catalog.Granule`` (for tests only)."""

    id: str
    collection: str
    datetime: dt.datetime
    crs: str
    bbox: tuple[float, float, float, float]
    transform: Any
    shape: tuple[int, int]
    assets: dict[str, str] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict, compare=False)


def _write(path: Path, arr: np.ndarray, profile: dict[str, Any]) -> None:
    import rasterio

    prof = dict(profile)
    prof.update(driver="GTiff", count=1, dtype=arr.dtype.name, tiled=True, blockxsize=64, blockysize=64,
                compress="deflate", height=arr.shape[0], width=arr.shape[1])
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr, 1)


def write_hls_granule(folder: Path, gid: str, collection: str, when: dt.datetime, crs: Any, transform: Any,
                      bands: dict[str, np.ndarray], fmask: np.ndarray,
                      properties: dict[str, Any] | None = None) -> TestGranule:
    """Write an HLS v2.0-format granule (one tiled DEFLATE GeoTIFF per band: int16 DN with nodata
    -9999, ``Fmask`` uint8 with fill 255) named ``<gid>.<band id>.tif`` and return its granule."""
    from rasterio.warp import transform_bounds

    from lssr_ray.data import hls

    folder.mkdir(parents=True, exist_ok=True)
    profile = {"crs": crs, "transform": transform, "nodata": hls.NODATA}
    assets = {}
    for bid, dn in bands.items():
        assets[bid] = str(folder / f"{gid}.{bid}.tif")
        _write(Path(assets[bid]), np.asarray(dn, np.int16), profile)
    assets["Fmask"] = str(folder / f"{gid}.Fmask.tif")
    _write(Path(assets["Fmask"]), np.asarray(fmask, np.uint8), dict(profile, nodata=hls.FMASK_FILL))
    h, w = np.shape(fmask)
    bbox = transform_bounds(crs, "EPSG:4326", *_lbrt(h, w, transform))
    return TestGranule(gid, collection, when, str(crs), tuple(bbox), transform, (h, w), assets,
                       properties=dict(properties or {}))


@pytest.fixture(scope="session")
def hls_granule_writer():
    """:func:`write_hls_granule`: small HLS-format granules from arrays (tests build scenes from real crops)."""
    return write_hls_granule


def make_l30_granule(folder: Path, *, rows: slice = slice(0, 150), cols: slice = slice(0, 150),
                     all_cloud: bool = False) -> TestGranule:
    """HLS v2.0-format L30 granule from a crop of the real Alabama Landsat-8 L1T scene.

    Reflectance is the scene's TOA reflectance (MTL coefficients) as int16 * 1e4, nodata -9999;
    Fmask is derived from the pre-collection BQA (cloud bit where cloud confidence is high),
    or all cloud when ``all_cloud``.
    """
    import rasterio
    from rasterio.windows import Window

    from lssr_ray.data import hls
    from lssr_ray.data.landsat_l1 import open_scene
    from lssr_ray.data.masks import decode_bqa_precollection

    scene = open_scene(ALABAMA)
    when = scene.mtl.acquired.replace(microsecond=0)
    gid = hls.format_name("L30", "16RDU", when) + (".cloudy" if all_cloud else "")
    win = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
    with rasterio.open(scene.band_files["B4"]) as src:
        transform = src.window_transform(win)
        crs = src.crs
    bands = {}
    for name, bid in hls.BANDS["L30"].items():
        if name in ("blue", "green", "red", "nir", "swir1", "swir2"):
            bands[bid] = hls.from_reflectance(scene.read_toa(int(bid[1:]))[0][rows, cols])
    bqa, _ = scene.read_dn("BQA")
    d = decode_bqa_precollection(bqa[rows, cols])
    cloud = np.ones_like(d["fill"]) if all_cloud else d["cloud"] == 3
    fm = hls.encode_fmask(cloud=cloud, fill=d["fill"])
    return write_hls_granule(folder, gid, "HLSL30", when, crs, transform, bands, fm)


def _lbrt(h: int, w: int, t: Any) -> tuple[float, float, float, float]:
    return (t.c, t.f + h * t.e, t.c + w * t.a, t.f)


@pytest.fixture(scope="session")
def l30_granule(tmp_path_factory: pytest.TempPathFactory) -> TestGranule:
    """A clear-ish real L30-format granule (150 x 150 px at 30 m, EPSG:32616)."""
    return make_l30_granule(tmp_path_factory.mktemp("l30"))


@pytest.fixture(scope="session")
def cloudy_granule(tmp_path_factory: pytest.TempPathFactory) -> TestGranule:
    """The same crop with an all-cloud Fmask."""
    return make_l30_granule(tmp_path_factory.mktemp("l30cloudy"), all_cloud=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``moto_server`` on a free loopback port for the whole session.

    Bucket ``lssr-test`` holds the Alabama sample rasters under ``alabama/``, the Flanders DEM
    under ``flanders/`` and ``data/archive`` under ``archive/`` when it exists. The process
    environment is not touched here: use the ``s3_env`` fixture in a test.
    """
    from lssr_ray.data import s3server

    srv = s3server.start()
    try:
        s3server.upload_folder(ALABAMA, TEST_BUCKET, endpoint_url=srv.endpoint_url, prefix="alabama")
        flanders = tmp_path_factory.mktemp("flanders_s3")
        (flanders / "dem_31UDS.tif").write_bytes((FLANDERS / "dem_31UDS.tif").read_bytes())
        s3server.upload_folder(flanders, TEST_BUCKET, endpoint_url=srv.endpoint_url, prefix="flanders")
        archive = REPO_ROOT / "data" / "archive"
        if archive.is_dir():
            s3server.upload_folder(archive, TEST_BUCKET, endpoint_url=srv.endpoint_url, prefix="archive")
        yield srv
    finally:
        s3server.stop(srv)


@pytest.fixture
def s3_env(s3_server, monkeypatch: pytest.MonkeyPatch):
    """Set the AWS_* / GDAL variables of the session's S3 server for one test; yields the server."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    yield s3_server


@pytest.fixture
def s3_bucket(s3_env):
    """A fresh empty bucket on the session's S3 server, env set for boto3/s3fs/GDAL.

    Yields ``(url, storage_options, boto3 client)`` with url ``s3://<bucket>``.
    """
    import uuid

    import boto3

    client = boto3.client("s3", endpoint_url=s3_env.endpoint_url)
    name = f"scratch-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield f"s3://{name}", {"endpoint_url": s3_env.endpoint_url}, client


@pytest.fixture
def stac_api():
    """A loopback STAC API replaying the recorded CMR-STAC documents (``data/samples/cmr_stac``).

    Yields the running :class:`lssr_ray.data.stac_replay.StacReplayServer`: ``.url`` is the API
    root (``--stac-url``), ``.fail(status, ...)`` injects errors, ``.searches()`` lists the
    ``/search`` requests it received. One server per test, so injected failures never leak.
    """
    from lssr_ray.data.stac_replay import StacReplayServer

    with StacReplayServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def hls_full_granule(s3_server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One full-size (3660 x 3660) HLS v2.0-format L30 granule of tile 15TVG made by
    ``scripts/make_hls_cogs.py`` (real file layout, real-shaped CMR-STAC item), uploaded to bucket
    ``lp-prod-protected`` of the session S3 server. Yields the script's summary (``catalog`` path,
    ``granules[0]`` with ``id``, ``files``, ``transform``...). About 5-15 s on 2 cores."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_hls_cogs", REPO_ROOT / "scripts" / "make_hls_cogs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make(tmp_path_factory.mktemp("hls_full"), tiles=("15TVG",), s3_endpoint=s3_server.endpoint_url,
                    log=lambda _msg: None)
