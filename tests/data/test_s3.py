"""Reads through a real loopback S3 server (moto_server subprocess) equal reads from disk."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from lssr_ray.config import REPO_ROOT, GridConfig
from lssr_ray.data import s3server
from lssr_ray.data.grid import OutputGrid
from lssr_ray.data.readers import read_lowres, read_raster
from lssr_ray.errors import MissingObjectError, StorageUnreachableError

ALABAMA = REPO_ROOT / "data" / "samples" / "landsat8_l1t_alabama_2015"


def test_same_raster_from_s3_and_disk(s3_env):
    with rasterio.open(ALABAMA / "l8_B5.tif") as src:
        t, crs = src.transform, str(src.crs)
    dst_t = t @ Affine.translation(100, 200)
    disk = read_raster(str(ALABAMA / "l8_B5.tif"), crs, transform=dst_t, shape=(128, 96))
    s3 = read_raster("s3://lssr-test/alabama/l8_B5.tif", crs, transform=dst_t, shape=(128, 96))
    assert s3.dtype == disk.dtype and s3.shape == (1, 128, 96)
    np.testing.assert_array_equal(s3, disk)
    # warped reads agree too (10 m bilinear)
    d10 = read_raster(str(ALABAMA / "l8_B5.tif"), crs, transform=dst_t @ Affine.scale(1 / 3), shape=(64, 64),
                      resampling="bilinear", dtype="float32")
    s10 = read_raster("s3://lssr-test/alabama/l8_B5.tif", crs, transform=dst_t @ Affine.scale(1 / 3),
                      shape=(64, 64), resampling="bilinear", dtype="float32")
    np.testing.assert_array_equal(s10, d10)


def test_granule_from_s3_equals_disk(s3_env, l30_granule, tmp_path):
    s3server.upload_folder(os.path.dirname(l30_granule.assets["Fmask"]), "lssr-gran",
                           endpoint_url=s3_env.endpoint_url)
    s3_assets = {k: f"s3://lssr-gran/{os.path.basename(v)}" for k, v in l30_granule.assets.items()}
    g3 = dataclasses.replace(l30_granule, assets=s3_assets)
    grid = OutputGrid(l30_granule.crs, l30_granule.transform, (150, 150), GridConfig().scale)
    a = read_lowres(l30_granule, grid, window=(3, 7, 64, 64))
    b = read_lowres(g3, grid, window=(3, 7, 64, 64))
    np.testing.assert_array_equal(a.lr, b.lr)
    np.testing.assert_array_equal(a.clear, b.clear)
    # a key that does not exist on a live endpoint is a missing object (a chip skip), not an outage
    with pytest.raises(MissingObjectError, match="does not exist"):
        read_raster("s3://lssr-gran/nope.tif", l30_granule.crs, transform=l30_granule.transform, shape=(4, 4))


def test_unreachable_endpoint_fails_fast(monkeypatch):
    port = s3server.free_port()  # nothing listens here
    for k, v in s3server.s3_env(f"http://127.0.0.1:{port}").items():
        monkeypatch.setenv(k, v)
    t0 = time.perf_counter()
    with pytest.raises(StorageUnreachableError, match=f"127.0.0.1:{port}"):
        read_raster("s3://lssr-down/x/l8_B4.tif", "EPSG:32616", transform=Affine(30, 0, 0, 0, -30, 0), shape=(2, 2))
    assert time.perf_counter() - t0 < 5.0


def test_stopped_server_is_unreachable(monkeypatch, tmp_path):
    srv = s3server.start()
    try:
        s3server.upload_folder(tmp_path, "lssr-stop", endpoint_url=srv.endpoint_url)
    finally:
        assert s3server.stop(srv)
    assert not s3server.pidfile_for(srv.port).exists()
    for k, v in srv.env().items():
        monkeypatch.setenv(k, v)
    with pytest.raises(StorageUnreachableError, match=srv.endpoint_url.split("//")[1]):
        read_raster("s3://lssr-stop/l8_B4.tif", "EPSG:32616", transform=Affine(30, 0, 0, 0, -30, 0), shape=(2, 2))


def test_cli_start_stop_with_pidfile():
    port = s3server.free_port()
    py = sys.executable
    r = subprocess.run([py, "-m", "lssr_ray.data.s3server", "start", "--port", str(port)],
                       check=False, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    try:
        assert r.returncode == 0, r.stderr
        assert f"AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in r.stdout
        pid = int(s3server.pidfile_for(port).read_text())
        assert os.path.exists(f"/proc/{pid}")
    finally:
        r2 = subprocess.run([py, "-m", "lssr_ray.data.s3server", "stop", "--port", str(port)],
                            check=False, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    (Path(tempfile.gettempdir()) / f"lssr-s3server-{port}.log").unlink(missing_ok=True)
    assert "stopped" in r2.stdout
    time.sleep(0.2)
    stat = Path(f"/proc/{pid}/stat")
    state = stat.read_text().split()[2] if stat.exists() else "gone"
    assert state in ("gone", "Z")
