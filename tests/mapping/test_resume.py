"""A job killed mid-way (SIGKILL) and resumed equals an uninterrupted run, bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT, MapConfig
from lssr_ray.data.aoi import write_box_aoi as write_utm_aoi

ALABAMA_BOX = (456015, 3396015, 458985, 3398985)  # EPSG:32616 metres: 2 x 2 chips of the L30 crop




def _partials(store):
    folder = os.path.join(store, "_partials", "t0000")
    return sorted(f for f in os.listdir(folder) if f.endswith(".npz")) if os.path.isdir(folder) else []


def _bytes(store, name):
    with open(os.path.join(store, "_partials", "t0000", name), "rb") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def ray_session():
    import ray

    yield
    ray.shutdown()


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, ray_session):
    import zarr

    from lssr_ray.mapping.pipeline import run_map

    aoi = write_utm_aoi(tmp_path / "al4.geojson", ALABAMA_BOX)
    killed = str(tmp_path / "killed.zarr")
    args = ["--aoi", aoi, "--dates", "clearest", "--batch-size", "1", "--block", "1", "--no-quicklook", "--no-progress",
            "--classifier", "none"]  # the bundled Flanders classifier is refused in Alabama
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "jobs" / "map_region.py"), *args, "--out", killed],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        try:
            while not _partials(killed) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the job and the local Ray it started
            proc.wait()
    before = {f: _bytes(killed, f) for f in _partials(killed)}
    assert 0 < len(before) < 4, (len(before), (tmp_path / "killed.log").read_text()[-2000:])
    assert os.path.exists(os.path.join(killed, "_lock.json"))  # the dead run's lock is still there
    assert zarr.open_group(killed, mode="r")["valid"][:].max() == 0  # killed before any chunk write

    cfg = MapConfig(aoi=aoi, out=killed, dates="clearest", batch_size=1, quicklook=False, classifier="none",
                    keep_partials=True)
    resumed = run_map(cfg, progress=False)  # same settings -> same run id -> takes the lock over
    assert resumed.resumed == len(before) and resumed.computed == 4 - len(before)
    for f, data in before.items():  # committed chips were not recomputed
        assert _bytes(killed, f) == data
    assert not os.path.exists(os.path.join(killed, "_lock.json"))

    ref = str(tmp_path / "ref.zarr")
    full = run_map(MapConfig(aoi=aoi, out=ref, dates="clearest", batch_size=1, quicklook=False, classifier="none"),
                   progress=False)
    assert full.computed == 4 and full.run_id == resumed.run_id
    a, b = zarr.open_group(killed, mode="r"), zarr.open_group(ref, mode="r")
    for name in ("reflectance", "valid", "x", "y", "time"):
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name][:], b[name][:]), name
    assert np.isfinite(a["reflectance"][:]).all() and (a["valid"][:] == 1).any()

    # a rerun of the finished store recomputes nothing
    again = run_map(cfg, progress=False)
    assert (again.resumed, again.computed) == (4, 0)


def test_resume_with_other_settings_is_refused(tmp_path):
    from lssr_ray.errors import ConfigError, StoreError
    from lssr_ray.mapping.pipeline import open_or_create_store
    from lssr_ray.mapping.plan import plan_map

    aoi = write_utm_aoi(tmp_path / "al4.geojson", ALABAMA_BOX)
    out = str(tmp_path / "s.zarr")
    open_or_create_store(plan_map(MapConfig(aoi=aoi, out=out, dates="clearest")), None)
    with pytest.raises(ConfigError, match=r"differ in \[.*'seed'\]"):
        open_or_create_store(plan_map(MapConfig(aoi=aoi, out=out, dates="clearest", seed=1)), None)
    with pytest.raises(StoreError, match="--resume"):
        open_or_create_store(plan_map(MapConfig(aoi=aoi, out=out, dates="clearest", resume=False)), None)
