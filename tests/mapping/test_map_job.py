"""jobs/map_region.py: bad input (clear message, recorded skips, nothing lost) and S3 end to end."""

from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT, MapConfig
from tests._jobs import load_job

ARCHIVE = REPO_ROOT / "data" / "archive"
FLANDERS = str(REPO_ROOT / "examples" / "flanders_31UDS.geojson")
CORRUPT = "HLS.L30.T31UDS.2018198T103936.v2.0"  # 2018-07-17
CLOUDY = "HLS.S30.T31UDS.2018199T110326.v2.0"  # 2018-07-18


def _job():
    return load_job("map_region")


@pytest.fixture(scope="module")
def ray_session():
    import ray

    yield
    ray.shutdown()


def test_aoi_outside_the_catalog_is_a_coverage_error(tmp_path, capsys):
    out = tmp_path / "iowa.zarr"
    rc = _job().main(["--aoi", str(REPO_ROOT / "examples" / "iowa.geojson"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "error: no granule in the catalog covers AOI" in err and "catalog covers" in err
    assert not out.exists()


def test_unreachable_s3_fails_before_anything_is_written(tmp_path, capsys, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_S3_ENDPOINT", f"127.0.0.1:{port}")
    monkeypatch.setenv("AWS_HTTPS", "NO")
    out = tmp_path / "never.zarr"
    rc = _job().main(["--aoi", FLANDERS, "--catalog", "s3://lssr-test/archive/catalog.json", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and f"S3 endpoint http://127.0.0.1:{port} is unreachable" in err
    assert not out.exists()


def _bad_archive(tmp_path):
    """A copy of the archive with one truncated band COG and one all-cloud Fmask."""
    import rasterio

    from lssr_ray.data import hls

    arch = tmp_path / "archive"
    shutil.copytree(ARCHIVE, arch)
    band = arch / "HLSL30" / CORRUPT / f"{CORRUPT}.B05.tif"
    data = band.read_bytes()
    band.write_bytes(data[: len(data) // 2])  # header intact, tiles cut off
    fm = arch / "HLSS30" / CLOUDY / f"{CLOUDY}.Fmask.tif"
    with rasterio.open(fm) as src:
        prof, arr = src.profile, src.read(1)
    cloud = np.where(arr == hls.FMASK_FILL, arr, np.uint8(1 << 1))  # bit 1: cloud
    with rasterio.open(fm, "w", **prof) as dst:
        dst.write(cloud, 1)
    return arch


def test_corrupt_cog_and_all_cloud_dates_are_recorded_skips(tmp_path, ray_session):
    from lssr_ray.mapping.partials import load_partial
    from lssr_ray.mapping.pipeline import run_map
    from lssr_ray.mapping.store import open_store

    arch = _bad_archive(tmp_path)
    out = str(tmp_path / "fl.zarr")
    cfg = MapConfig(aoi=FLANDERS, catalog=str(arch / "catalog.json"), start="2018-07-01", end="2018-07-23",
                    out=out, dates="all", keep_partials=True)  # the skip records are read below
    s = run_map(cfg, progress=False)
    assert s.n_times == 4 and s.computed == 4
    assert s.skipped == {"corrupt_source": 1, "all_cloud": 1}
    rec1 = load_partial(out, 1, "r0000c0000", with_sr=False).record
    assert rec1["reason"] == "corrupt_source" and CORRUPT in rec1["detail"] and "B05" in rec1["detail"]
    assert load_partial(out, 2, "r0000c0000", with_sr=False).record["reason"] == "all_cloud"
    ds = open_store(out)
    assert [str(t)[:10] for t in ds.time.values] == ["2018-07-01", "2018-07-17", "2018-07-18", "2018-07-23"]
    assert list(ds.sensor.values) == ["L30", "L30", "S30", "S30"] and ds.granules.values[2] == CLOUDY
    assert ds.attrs["mosaic_version"] == 1
    valid = ds.valid.values
    assert valid[1].max() == 0 and valid[2].max() == 0  # skipped dates stay empty
    assert valid[0].sum() > 1000 and valid[3].sum() > 1000  # the other dates are mapped
    assert ds.attrs["skip_reasons"] == {"corrupt_source": 1, "all_cloud": 1}
    assert any("corrupt_source" in line for line in s.skip_examples)
    assert len(s.quicklooks) == 4


def test_job_on_s3_catalog_writes_a_store_gdal_and_xarray_read(s3_env, ray_session, capsys, tmp_path):
    import rasterio
    import s3fs

    from lssr_ray.fileio import gdal_env
    from lssr_ray.mapping.store import gdal_path, open_store

    out = "s3://lssr-test/out/flanders.zarr"
    summary_json = str(tmp_path / "summary.json")
    rc = _job().main(["--aoi", FLANDERS, "--catalog", "s3://lssr-test/archive/catalog.json", "--out", out,
                      "--dates", "clearest", "--no-progress", "--summary-json", summary_json])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "chips/s" in printed and "km2/h" in printed
    with open(summary_json) as fh:
        summary = json.load(fh)
    assert summary["computed"] == 1 and summary["chunks_written"] == 1

    from lssr_ray.data.aoi import read_aoi
    from lssr_ray.data.catalog import open_catalog
    from lssr_ray.data.cube import plan_data_stage

    grid = plan_data_stage(read_aoi(FLANDERS), open_catalog(ARCHIVE / "catalog.json")).plan.grid
    ds = open_store(out, storage_options={})
    assert ds.rio.crs.to_epsg() == 32631
    assert tuple(ds.rio.transform())[:6] == pytest.approx(tuple(grid.output_transform)[:6])
    assert int(ds.valid.sum()) > 1000
    with gdal_env(), rasterio.open(gdal_path(out)) as src:
        assert src.crs.to_epsg() == 32631 and src.count == 6
        assert tuple(src.transform)[:6] == pytest.approx(tuple(grid.output_transform)[:6])
    attrs = json.dumps(dict(ds.attrs))
    import os

    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in attrs and "secret" not in attrs.lower()
    fs = s3fs.S3FileSystem()
    assert fs.exists("lssr-test/out/flanders.zarr/.zmetadata")
    assert fs.exists("lssr-test/out/flanders_quicklook")


@pytest.mark.slow
def test_ray_job_submit_writes_the_store_to_s3(s3_env, tmp_path):
    """``ray start --head`` + ``ray job submit -- python jobs/map_region.py ... s3://`` (about 1-2 min)."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    import s3fs

    from lssr_ray.data.s3server import free_port
    from lssr_ray.mapping.store import open_store

    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")  # the venv's ray CLI
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    port, dash = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="/tmp/rl")  # short: Ray's socket paths must fit in 107 bytes
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={temp}",
                             "--disable-usage-stats"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        runtime_env = json.dumps({"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "CPL_"))}})
        out = "s3://lssr-test/out/job-submit.zarr"
        cmd = [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--runtime-env-json", runtime_env,
               "--", sys.executable, str(REPO_ROOT / "jobs" / "map_region.py"), "--aoi", FLANDERS,
               "--catalog", "s3://lssr-test/archive/catalog.json", "--out", out, "--dates", "clearest",
               "--no-progress"]
        deadline = time.monotonic() + 120
        while True:  # the dashboard's job server takes a while to come up
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, check=False)
            if res.returncode == 0 or time.monotonic() > deadline or "chips/s" in res.stdout:
                break
            time.sleep(3)
        assert res.returncode == 0 and "chips/s" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
        assert s3fs.S3FileSystem().exists("lssr-test/out/job-submit.zarr/.zmetadata")
        ds = open_store(out, storage_options={})
        assert ds.rio.crs.to_epsg() == 32631 and int(ds.valid.sum()) > 1000
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the head and every Ray process it started
        head.wait()
