"""The Zarr output store: template, region writes, read-back by xarray/rioxarray and by GDAL,
provenance, the run lock; locally and on a loopback S3 server (moto_server subprocess)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import lssr_ray
from lssr_ray.config import OUTPUT_BANDS
from lssr_ray.errors import StoreError, StoreLockedError
from lssr_ray.mapping import store as S
from lssr_ray.mapping.lock import StoreLock
from lssr_ray.mapping.provenance import provenance_attrs

CRS = "EPSG:32616"
# a real Landsat-style UTM 16N origin; 10 m output pixels
TRANSFORM = from_origin(399960.0, 3700020.0, 10.0, 10.0)
CHUNK = 36
SHAPE = (2 * CHUNK, 3 * CHUNK)
TIMES = ["2015-05-06", "2015-06-07"]


def _chunk_data(seed: int, shape=(6, CHUNK, CHUNK)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 0.6, size=shape).astype("float32")


def _make(url, storage_options=None, **kw):
    S.create_store(
        url,
        crs=CRS,
        transform=tuple(TRANSFORM)[:6],
        shape=SHAPE,
        chunk=CHUNK,
        times=TIMES,
        attrs=provenance_attrs(
            ["HLS.L30.T16SDC.2015126T163000.v2.0"], "a" * 64, adapter_hash="b" * 64
        ),
        storage_options=storage_options,
        **kw,
    )


def test_roundtrip_xarray_and_gdal(tmp_path):
    url = str(tmp_path / "out.zarr")
    _make(url)
    lay = S.read_layout(url)
    assert lay.shape == SHAPE and lay.chunk == CHUNK and lay.n_times == 2
    assert lay.bands == OUTPUT_BANDS
    a = _chunk_data(0)
    a[2, 5, 7] = np.nan  # nodata in one band -> valid 0 there
    b = _chunk_data(1)
    S.write_chunk(url, a, row_off=CHUNK, col_off=2 * CHUNK, time_index=0, layout=lay)
    S.write_chunk(url, b, row_off=0, col_off=0, time_index=1, layout=lay)
    S.finalize_store(url, attrs={"chips_ok": 2})

    ds = S.open_store(url)
    assert ds.rio.crs.to_epsg() == 32616
    assert ds.rio.transform() == TRANSFORM
    assert ds.attrs["chips_ok"] == 2
    got = ds["reflectance"].isel(time=0, y=slice(CHUNK, 2 * CHUNK), x=slice(2 * CHUNK, None)).values
    # int16 quantisation with rounding: within half a step of 0.0001
    assert np.isnan(got[2, 5, 7])
    assert np.nanmax(np.abs(got - a)) <= 0.5e-4 + 1e-7
    assert np.isnan(ds["reflectance"].isel(time=0, y=slice(0, CHUNK)).values).all()  # never written
    valid = ds["valid"].values
    assert (
        valid[0, CHUNK:, 2 * CHUNK :].sum() == CHUNK * CHUNK - 1
        and valid[0, CHUNK + 5, 2 * CHUNK + 7] == 0
    )
    assert valid[0, :CHUNK].sum() == 0 and valid[1, :CHUNK, :CHUNK].all()
    assert str(ds.time.values[1])[:10] == TIMES[1]
    assert list(ds.band.values) == list(OUTPUT_BANDS)

    with rasterio.open(S.gdal_path(url, "reflectance")) as src:
        assert src.crs.to_epsg() == 32616
        assert src.transform == TRANSFORM
        assert src.count == 12 and src.shape == SHAPE  # time-major: t * 6 + b + 1
        assert src.nodata == S.FILL_VALUE and src.scales[0] == pytest.approx(1e-4)
        assert src.tags(2)["DIM_band_VALUE"] == "green"
        swir2_t0 = src.read(6) * 1e-4
        red_t1 = src.read(7) * 1e-4
    np.testing.assert_allclose(swir2_t0[CHUNK:, 2 * CHUNK :], a[5], atol=0.5e-4 + 1e-7)
    np.testing.assert_allclose(red_t1[:CHUNK, :CHUNK], b[0], atol=0.5e-4 + 1e-7)
    with rasterio.open(S.gdal_path(url, "valid")) as src:
        assert src.crs.to_epsg() == 32616 and src.transform == TRANSFORM and src.count == 2


def test_region_checks(tmp_path):
    url = str(tmp_path / "out.zarr")
    _make(url)
    with pytest.raises(StoreError, match="chunk origin"):
        S.write_chunk(url, _chunk_data(0), row_off=10, col_off=0)
    with pytest.raises(StoreError, match="must be"):
        S.write_chunk(url, _chunk_data(0, (6, 20, 20)), row_off=0, col_off=0)
    with pytest.raises(StoreError, match="time_index"):
        S.write_chunk(url, _chunk_data(0), row_off=0, col_off=0, time_index=5)
    with pytest.raises(StoreError, match="already exists"):
        _make(url)
    with pytest.raises(StoreError, match="north-up"):
        S.create_store(
            str(tmp_path / "r.zarr"),
            crs=CRS,
            transform=(10, 1, 0, 0, -10, 0),
            shape=SHAPE,
            chunk=CHUNK,
            times=TIMES,
        )
    with pytest.raises(StoreError, match="not an lssr-ray store"):
        S.read_layout(str(tmp_path / "missing.zarr"))


def test_provenance_has_no_credentials(tmp_path, monkeypatch):
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    key_id = "AKIAIOSFODNN7EXAMPLE"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    url = str(tmp_path / "out.zarr")
    attrs = provenance_attrs(
        ["g1", "g2"],
        "c" * 64,
        adapter_hash="d" * 64,
        engine="onnxruntime",
        extra={
            "run_config": {"store": url, "secret": secret, "aws_access_key_id": key_id},
            "note": f"launched with {secret}",
            "env": dict(os.environ),
        },
    )
    _make(url)  # first store with default attrs, then one with the hostile attrs
    S.create_store(
        url,
        crs=CRS,
        transform=tuple(TRANSFORM)[:6],
        shape=SHAPE,
        chunk=CHUNK,
        times=TIMES,
        attrs=attrs,
        overwrite=True,
    )
    S.finalize_store(url, attrs={"log": f"key={key_id}"})
    ds = S.open_store(url)
    assert ds.attrs["software_version"] == lssr_ray.__version__
    assert ds.attrs["source_granules"] == ["g1", "g2"]
    assert ds.attrs["base_model_sha256"] == "c" * 64 and ds.attrs["adapter_sha256"] == "d" * 64
    assert "created" in ds.attrs
    text = "".join(p.read_text() for p in Path(url).rglob(".z*"))
    assert secret not in text and key_id not in text
    assert "launched with <redacted>" in text


def test_lock_refuses_second_run_and_keeps_chunks(tmp_path):
    url = str(tmp_path / "out.zarr")
    _make(url)
    a = _chunk_data(3)
    with StoreLock(url, "run-A") as lock_a:
        S.write_chunk(url, a, row_off=0, col_off=0)
        with pytest.raises(StoreLockedError, match="run-A"), StoreLock(url, "run-B"):
            S.write_chunk(url, _chunk_data(4), row_off=0, col_off=0)  # must never run
        lock_a.heartbeat()
        assert StoreLock(url, "run-A").acquire().held  # same run id resumes
    assert StoreLock(url, "x").read() is None  # released
    got = S.open_store(url)["reflectance"].isel(time=0, y=slice(0, CHUNK), x=slice(0, CHUNK)).values
    assert np.nanmax(np.abs(got - a)) <= 0.5e-4 + 1e-7


def test_stale_lock_taken_over(tmp_path):
    url = str(tmp_path / "out.zarr")
    _make(url)
    dead = StoreLock(url, "dead-run").acquire()
    rec = json.loads(Path(dead.path).read_text())
    rec["heartbeat"] -= 3600  # its run died an hour ago
    Path(dead.path).write_text(json.dumps(rec))
    with pytest.raises(StoreLockedError):
        StoreLock(url, "new-run", stale_after_s=7200).acquire()
    new = StoreLock(url, "new-run", stale_after_s=60).acquire()
    assert new.read()["run_id"] == "new-run"
    with pytest.raises(StoreLockedError, match="new-run"):
        dead.heartbeat()  # the dead run, if it wakes up, learns it lost the lock


def test_kept_alive_heartbeats_while_the_caller_waits_and_tells_a_lost_lock(tmp_path):
    """finalize's Ray Data stages run for hours at state scale without a loop in the driver: the
    lock's own thread keeps the heartbeat young, and a lock another run took is raised at the end."""
    import time

    url = str(tmp_path / "out.zarr")
    _make(url)
    lock = StoreLock(url, "run-A").acquire()
    first = lock.read()["heartbeat"]
    with lock.kept_alive(every_s=0.2, poll_s=0.05):
        time.sleep(1.0)  # the caller blocks (a Ray Data stage), no heartbeat_if_due of its own
        beats = lock.read()["heartbeat"]
    assert beats > first + 0.5
    time.sleep(0.5)
    assert lock.read()["heartbeat"] == beats  # the thread stopped with the block
    with pytest.raises(StoreLockedError, match="run-B"), lock.kept_alive(every_s=0.2, poll_s=0.05):
        rec = lock.read()
        rec["run_id"] = "run-B"  # another run took the lock over
        Path(lock.path).write_text(json.dumps(rec))
        time.sleep(0.6)


def test_one_liveness_rule_for_the_early_check_and_acquire(tmp_path):
    """A lock record of the *same* run id held by another live process on this host is refused by
    both refuse_if_live and acquire (a second start of one run); once that process is gone, both
    let the run take it over (resume). Another run id's fresh lock is refused by both."""
    import socket
    import subprocess
    import time

    url = str(tmp_path / "out.zarr")
    os.makedirs(url)
    lock_path = Path(url) / "_lock.json"
    live = subprocess.Popen(["sleep", "60"])
    try:
        lock_path.write_text(json.dumps({"run_id": "run-A", "host": socket.gethostname(), "pid": live.pid,
                                         "heartbeat": time.time()}))
        for ask in (StoreLock(url, "run-A").refuse_if_live, StoreLock(url, "run-A").acquire):
            with pytest.raises(StoreLockedError, match=f"pid {live.pid} on this host, still running"):
                ask()
        with pytest.raises(StoreLockedError, match="locked by run 'run-A'"):
            StoreLock(url, "run-B").acquire()
    finally:
        live.kill()
        live.wait()
    StoreLock(url, "run-A").refuse_if_live()
    taken = StoreLock(url, "run-A").acquire()
    assert taken.held and json.loads(lock_path.read_text())["pid"] == os.getpid()


def test_s3_store_roundtrip_and_lock(s3_bucket):
    bucket, so, _ = s3_bucket
    url = f"{bucket}/maps/out.zarr"
    _make(url, storage_options=so)
    a = _chunk_data(5)
    with StoreLock(url, "s3-run", storage_options=so):
        with pytest.raises(StoreLockedError, match="s3-run"):
            StoreLock(url, "other", storage_options=so).acquire()
        S.write_chunk(url, a, row_off=CHUNK, col_off=CHUNK, time_index=1, storage_options=so)
        S.finalize_store(url, attrs={"chips_ok": 1}, storage_options=so)
    ds = S.open_store(url, storage_options=so)
    assert ds.rio.crs.to_epsg() == 32616 and ds.rio.transform() == TRANSFORM
    got = (
        ds["reflectance"].isel(time=1, y=slice(CHUNK, 2 * CHUNK), x=slice(CHUNK, 2 * CHUNK)).values
    )
    assert np.nanmax(np.abs(got - a)) <= 0.5e-4 + 1e-7
    assert S.gdal_path(url).startswith(f'ZARR:"/vsis3/{bucket[len("s3://"):]}/maps/out.zarr"')
    gdal_env = rasterio.Env(
        AWS_S3_ENDPOINT=os.environ["AWS_S3_ENDPOINT"], AWS_VIRTUAL_HOSTING="FALSE", AWS_HTTPS="NO"
    )
    with gdal_env, rasterio.open(S.gdal_path(url)) as src:
        assert src.crs.to_epsg() == 32616 and src.transform == TRANSFORM
        t1_nir = src.read(10)[CHUNK : 2 * CHUNK, CHUNK : 2 * CHUNK] * 1e-4  # band 6 + 3 + 1
        np.testing.assert_allclose(t1_nir, a[3], atol=0.5e-4 + 1e-7)


def _race(url, storage_options=None, n=6):
    """n runs try to take the lock at once; returns the run ids that got it."""
    from concurrent.futures import ThreadPoolExecutor

    def attempt(i):
        try:
            StoreLock(url, f"run-{i}", storage_options=storage_options).acquire()
            return f"run-{i}"
        except StoreLockedError:
            return None

    with ThreadPoolExecutor(n) as pool:
        return [r for r in pool.map(attempt, range(n)) if r]


def test_lock_race_has_one_winner(tmp_path, s3_bucket):
    url = str(tmp_path / "out.zarr")
    _make(url)
    winners = _race(url)
    assert len(winners) == 1 and StoreLock(url).read()["run_id"] == winners[0]
    bucket, so, _ = s3_bucket
    s3_url = f"{bucket}/race/out.zarr"
    winners = _race(s3_url, so)
    assert len(winners) == 1
    assert StoreLock(s3_url, storage_options=so).read()["run_id"] == winners[0]


def test_template_of_a_state_size_grid_needs_no_per_chunk_graph(tmp_path):
    """create_store's memory does not grow with the number of chunks (issue 14: a dask task per
    chunk cost the driver 1 GB on the Iowa grid); the template still has the Zarr chunks and no
    data chunk is written."""
    import tracemalloc

    import zarr

    kw = {"crs": CRS, "transform": tuple(TRANSFORM)[:6], "chunk": 168, "times": TIMES, "trust_layers": ("consistency",)}
    S.create_store(str(tmp_path / "warm.zarr"), shape=(168, 168), **kw)  # imports and caches outside the trace
    tracemalloc.start()
    try:
        S.create_store(str(tmp_path / "big.zarr"), shape=(120 * 168, 120 * 168), **kw)  # 14,400 chunks per variable
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"create_store traced {peak / 2**20:.0f} MiB"
    group = zarr.open_group(str(tmp_path / "big.zarr"), mode="r", zarr_format=2)
    assert group["reflectance"].chunks == (1, 6, 168, 168) and group["valid"].chunks == (1, 168, 168)
    assert group["consistency"].chunks == (1, 6, 168, 168)
    assert not any(n[0].isdigit() for n in os.listdir(tmp_path / "big.zarr" / "reflectance"))  # no chunk written


def test_region_write_is_quiet_next_to_our_own_files(tmp_path):
    """Every stage writes through region_write (blends, crop type, overview levels); the run's own
    _partials/, _manifest/ and _lock.json must not make zarr warn once per chunk in the job's logs."""
    import warnings

    import xarray as xr

    url = str(tmp_path / "out.zarr")
    _make(url)
    for extra in ("_partials/t0000", "_manifest/stage1/t0000"):
        (tmp_path / "out.zarr" / extra).mkdir(parents=True)
        (tmp_path / "out.zarr" / extra / "x").write_bytes(b"{}")
    (tmp_path / "out.zarr" / "_lock.json").write_text("{}")
    sub = xr.Dataset({"valid": (("time", "y", "x"), np.ones((1, CHUNK, CHUNK), np.uint8))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        S.region_write(sub, url, {"time": slice(0, 1), "y": slice(0, CHUNK), "x": slice(0, CHUNK)}, None)
    assert int(S.open_store(url)["valid"].isel(time=0, y=slice(0, CHUNK), x=slice(0, CHUNK)).min()) == 1
