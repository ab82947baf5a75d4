"""lssr_ray.fileio against the real loopback S3 server: one endpoint rule for fsspec, GDAL and
pyarrow, per-prefix settings, paths, and the one NetCDF opener."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lssr_ray import fileio
from lssr_ray.config import REPO_ROOT
from lssr_ray.errors import ConfigError, MissingDataError

ALABAMA = REPO_ROOT / "data" / "samples" / "landsat8_l1t_alabama_2015"
FLANDERS = REPO_ROOT / "data" / "samples" / "worldcereal_flanders_31UDS_2018"
TEST_BUCKET = "lssr-test"  # the session server's bucket (tests/conftest.py)

OBJECT = f"s3://{TEST_BUCKET}/alabama/l8_B4.tif"
LOCAL = ALABAMA / "l8_B4.tif"
ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING",
            fileio.STORAGE_OPTIONS_ENV)


@pytest.fixture
def bare_env(s3_env, monkeypatch):
    """The server's credentials and region, but no endpoint variable and no prefix settings."""
    for k in ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
    yield s3_env


@pytest.fixture
def dead_endpoint():
    from lssr_ray.data import s3server

    return f"http://127.0.0.1:{s3server.free_port()}"  # nothing listens there


def _read_three_ways(url: str) -> tuple[bytes, bytes, np.ndarray]:
    """The object's bytes through fsspec and pyarrow, and band 1 through GDAL (/vsis3/)."""
    import rasterio

    fs, path = fileio.filesystem(url)
    via_fsspec = fs.cat_file(path)
    pa_path, pa_fs = fileio.pyarrow_filesystem(url)
    assert pa_fs is not None, "an endpoint is configured: a pyarrow filesystem must carry it"
    with pa_fs.open_input_file(pa_path) as fh:
        via_pyarrow = fh.read()
    with fileio.gdal_env(url), rasterio.open(url) as src:
        via_gdal = src.read(1)
    return via_fsspec, via_pyarrow, via_gdal


def _local_band(path=LOCAL) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def test_join_and_is_remote():
    assert fileio.join("s3://b/store.zarr/", "_partials", "r0000c0001.npz") == "s3://b/store.zarr/_partials/r0000c0001.npz"
    assert fileio.join("/data/out.zarr", "_lock.json") == "/data/out.zarr/_lock.json"
    assert fileio.is_remote("s3://b/k") and fileio.is_remote("memory://x")
    assert not fileio.is_remote("/data/out.zarr") and not fileio.is_remote("file:///data/out.zarr")
    assert fileio.is_s3("s3://b") and not fileio.is_s3("memory://b") and not fileio.is_s3(None)


def test_endpoint_precedence_call_options_then_s3_variable_then_generic():
    env = {"AWS_ENDPOINT_URL": "http://generic:1", "AWS_ENDPOINT_URL_S3": "http://s3only:2"}
    assert fileio.settings_for("s3://b/k", env=env)["endpoint_url"] == "http://s3only:2"
    assert fileio.settings_for("s3://b/k", env={"AWS_ENDPOINT_URL": "http://generic:1"})["endpoint_url"] == "http://generic:1"
    # a call's own options are the most specific setting: they win over the environment
    assert fileio.settings_for("s3://b/k", {"endpoint_url": "http://mine:3"}, env=env)["endpoint_url"] == "http://mine:3"
    assert fileio.settings_for("/local/path", {"endpoint_url": "http://mine:3"}, env=env) == {}
    o = fileio.gdal_options(env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9100"})
    assert o["AWS_S3_ENDPOINT"] == "127.0.0.1:9100" and o["AWS_HTTPS"] == "NO"
    assert o["AWS_VIRTUAL_HOSTING"] == "FALSE" and o["GDAL_HTTP_MAX_RETRY"] == "3"  # 5xx retried with backoff
    assert "AWS_ACCESS_KEY_ID" not in o  # credentials travel in a rasterio AWSSession instead
    assert fileio.gdal_options(env=env)["AWS_S3_ENDPOINT"] == "s3only:2"
    assert "AWS_S3_ENDPOINT" not in fileio.gdal_options(env={})
    # GDAL's own variable still wins over the AWS_ENDPOINT_URL* ones for GDAL
    assert fileio.gdal_options(env={**env, "AWS_S3_ENDPOINT": "gdal:4"})["AWS_S3_ENDPOINT"] == "gdal:4"


def test_s3_endpoint_variable_is_honoured_by_fsspec_gdal_and_pyarrow(bare_env, dead_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead_endpoint)  # would fail every read if it were used
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", bare_env.endpoint_url)
    via_fsspec, via_pyarrow, via_gdal = _read_three_ways(OBJECT)
    assert via_fsspec == via_pyarrow == LOCAL.read_bytes()
    np.testing.assert_array_equal(via_gdal, _local_band())
    assert fileio.endpoint_for(OBJECT) == bare_env.endpoint_url


def test_generic_endpoint_variable_is_used_without_the_s3_one(bare_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", bare_env.endpoint_url)
    via_fsspec, via_pyarrow, via_gdal = _read_three_ways(OBJECT)
    assert via_fsspec == via_pyarrow == LOCAL.read_bytes()
    np.testing.assert_array_equal(via_gdal, _local_band())


def test_per_prefix_settings_choose_options_for_two_buckets(bare_env, dead_endpoint, monkeypatch):
    import boto3

    # bucket 1 through the environment table, bucket 2 registered with a credential provider and
    # reached under another host name of the same server; the global endpoint is dead
    other = "fileio-prefix-b"
    client = boto3.client("s3", endpoint_url=bare_env.endpoint_url)
    client.create_bucket(Bucket=other)
    dem = FLANDERS / "dem_31UDS.tif"
    client.upload_file(str(dem), other, "dem/dem_31UDS.tif")
    localhost = bare_env.endpoint_url.replace("127.0.0.1", "localhost")
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead_endpoint)
    monkeypatch.setenv(fileio.STORAGE_OPTIONS_ENV, json.dumps({
        f"s3://{TEST_BUCKET}": {"endpoint_url": bare_env.endpoint_url},
        f"s3://{TEST_BUCKET}/alabama/never": {"endpoint_url": dead_endpoint, "secret": "prefix-secret-1"},
    }))
    calls = []

    def provider(url):
        calls.append(url)
        return {"key": "testing", "secret": "issued-secret-2", "token": "issued-token-3"}

    fileio.register_storage(f"s3://{other}", {"endpoint_url": localhost}, credentials=provider)
    try:
        a = fileio.settings_for(OBJECT)
        b = fileio.settings_for(f"s3://{other}/dem/dem_31UDS.tif")
        assert a == {"endpoint_url": bare_env.endpoint_url, "config_kwargs": {"retries": fileio.S3_RETRIES}}
        assert b["endpoint_url"] == localhost and b["secret"] == "issued-secret-2"
        assert calls == [f"s3://{other}/dem/dem_31UDS.tif"]
        # longest prefix wins; a bucket whose name merely starts like a prefix does not match
        assert fileio.settings_for(f"s3://{TEST_BUCKET}/alabama/never/x")["endpoint_url"] == dead_endpoint
        assert fileio.settings_for(f"s3://{TEST_BUCKET}-2/x")["endpoint_url"] == dead_endpoint
        assert fileio.gdal_options(f"s3://{other}/x")["AWS_S3_ENDPOINT"] == localhost.split("://")[1]
        assert fileio.gdal_options(OBJECT)["AWS_S3_ENDPOINT"] == bare_env.endpoint_url.split("://")[1]

        via_fsspec, via_pyarrow, via_gdal = _read_three_ways(OBJECT)
        assert via_fsspec == via_pyarrow == LOCAL.read_bytes()
        np.testing.assert_array_equal(via_gdal, _local_band())
        via_fsspec, via_pyarrow, via_gdal = _read_three_ways(f"s3://{other}/dem/dem_31UDS.tif")
        assert via_fsspec == via_pyarrow == dem.read_bytes()
        np.testing.assert_array_equal(via_gdal, _local_band(dem))

        secrets = fileio.secret_values()
        assert {"prefix-secret-1", "issued-secret-2", "issued-token-3"} <= set(secrets)
    finally:
        fileio.unregister_storage(f"s3://{other}")
    assert fileio.settings_for(f"s3://{other}/x")["endpoint_url"] == dead_endpoint


def test_bad_storage_options_variable_is_one_line_without_its_value(monkeypatch):
    monkeypatch.setenv(fileio.STORAGE_OPTIONS_ENV, '{"s3://b": {"secret": "hunter2-value"')
    with pytest.raises(ConfigError, match=fileio.STORAGE_OPTIONS_ENV) as err:
        fileio.settings_for("s3://b/k")
    assert "hunter2-value" not in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv(fileio.STORAGE_OPTIONS_ENV, '{"bucket-without-scheme": {}}')
    with pytest.raises(ConfigError, match="needs a scheme"):
        fileio.settings_for("s3://b/k")


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "data" / "samples").rglob("*.nc")), ids=lambda p: p.name[:24])
def test_open_netcdf_reads_every_sample_as_netcdf4_does(path):
    """classify.labels read with netCDF4 before; the one opener tries h5netcdf first: same result."""
    import xarray as xr

    with fileio.open_netcdf(path, mask_and_scale=False) as ds, \
            xr.open_dataset(path, engine="netcdf4", mask_and_scale=False) as ref:
        xr.testing.assert_identical(ds, ref)  # values, dtypes, coordinates and attributes
        for name in ref.variables:
            assert ds[name].dtype == ref[name].dtype, name
            assert {k: ds[name].encoding.get(k) for k in ("_FillValue", "scale_factor")} == \
                {k: ref[name].encoding.get(k) for k in ("_FillValue", "scale_factor")}, name


def test_open_netcdf_missing_file_is_one_line():
    with pytest.raises(MissingDataError, match="not found"):
        fileio.open_netcdf(FLANDERS / "no_such.nc")


def test_atomic_put_replaces_a_local_file_whole(tmp_path):
    url = str(tmp_path / "sub" / "obj.bin")
    fileio.atomic_put(url, b"first")
    fileio.atomic_put(url, b"second")
    assert (tmp_path / "sub" / "obj.bin").read_bytes() == b"second"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["obj.bin"]  # no temporary left
