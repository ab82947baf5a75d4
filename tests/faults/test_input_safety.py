"""Issue 10 (part A): never destroy what --out points at, check before committing to a run, true
resume advice, portable run identity and store attributes, faithful (signed) values.

The CLI rows call ``jobs/map_region.py``'s ``main`` in-process: each must end with exit code 2
and exactly one ``error:`` line on stderr, before the store is created and before Ray starts.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT, MapConfig

sys.path.insert(0, str(REPO_ROOT / "tests"))
from _jobs import load_job

FLANDERS = str(REPO_ROOT / "examples" / "flanders_31UDS.geojson")
FLANDERS_L30 = "HLS.L30.T31UDS.2017243T104032.v2.0"  # an item over the Flanders AOI (EPSG:32631)


def _job():
    return load_job("map_region")


def run_job(capsys, *args: str) -> tuple[int, str]:
    """(exit code, stderr) of the job; asserts no local Ray was started."""
    import ray

    rc = _job().main(["--aoi", FLANDERS, "--no-progress", "--no-quicklook", *args])
    err = capsys.readouterr().err
    assert not ray.is_initialized(), "a pre-flight failure must not start Ray"
    return rc, err


def error_line(err: str) -> str:
    """The one ``error:`` line; fails on a traceback or more lines."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- never destroy


@pytest.mark.parametrize("overwrite", [False, True])
def test_out_folder_of_foreign_files_is_refused_and_kept(tmp_path, capsys, overwrite):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("do not delete\n")
    (out / "sub" / "data.bin").write_bytes(bytes(range(256)))
    before = _snapshot(out)
    rc, err = run_job(capsys, "--out", str(out), *(["--overwrite"] if overwrite else []))
    line = error_line(err)
    assert rc == 2 and str(out) in line and "not an lssr-ray store" in line, line
    assert _snapshot(out) == before  # both files survive, nothing was added


def test_create_store_never_empties_a_foreign_folder(tmp_path):
    """The library guard under the job: even create_store(overwrite=True) refuses, and a Zarr
    group another tool wrote is refused the same way."""
    import zarr

    from lssr_ray.errors import StoreError
    from lssr_ray.mapping.store import create_store

    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "data.bin").write_bytes(b"x" * 10)
    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w", zarr_format=2).attrs["made_by"] = "another tool"
    for target in (out, other):
        before = _snapshot(target)
        with pytest.raises(StoreError, match="refusing to write into it"):
            create_store(str(target), crs="EPSG:32631", transform=(10, 0, 500000, 0, -10, 5600000),
                         shape=(8, 8), chunk=8, times=["2018-07-01"], overwrite=True)
        assert _snapshot(target) == before


def test_own_store_is_recognised_by_its_marker_and_replaced_only_with_overwrite(tmp_path):
    from lssr_ray.errors import StoreError
    from lssr_ray.mapping.output_target import (
        OURS,
        STORE_FORMAT_VERSION,
        STORE_MARKER,
        is_project_store_attrs,
        output_state,
    )
    from lssr_ray.mapping.store import create_store, open_store

    url = str(tmp_path / "ours.zarr")
    kw = {"crs": "EPSG:32631", "transform": (10, 0, 500000, 0, -10, 5600000), "shape": (8, 8), "chunk": 8,
          "times": ["2018-07-01"]}
    create_store(url, **kw)
    assert open_store(url).attrs[STORE_MARKER] == STORE_FORMAT_VERSION and output_state(url) == OURS
    with pytest.raises(StoreError, match="already exists"):
        create_store(url, **kw)
    create_store(url, **kw, overwrite=True)  # our own store: replaced
    # stores written before the marker: run_config + software "lssr_ray ..."
    assert is_project_store_attrs({"run_config": "{}", "software": "lssr_ray 0.3.0"})
    assert not is_project_store_attrs({"software": "someone else"})


def test_out_regular_file_is_refused(tmp_path, capsys):
    out = tmp_path / "report.zarr"
    out.write_text("a file\n")
    rc, err = run_job(capsys, "--out", str(out))
    line = error_line(err)
    assert rc == 2 and f"--out {out} is a file" in line, line
    assert out.read_text() == "a file\n"


def test_debug_flag_adds_the_traceback(tmp_path, capsys):
    out = tmp_path / "report.zarr"
    out.write_text("a file\n")
    rc, err = run_job(capsys, "--out", str(out), "--debug")
    assert rc == 2 and "Traceback (most recent call last)" in err and "StoreError" in err, err
    assert err.strip().splitlines()[-1].startswith(f"error: --out {out} is a file")


def test_out_under_a_file_is_refused(tmp_path, capsys):
    """An unusable local prefix (a path component is a regular file): one line naming it."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    out = blocker / "maps" / "flanders.zarr"
    rc, err = run_job(capsys, "--out", str(out))
    line = error_line(err)
    assert rc == 2 and str(out) in line and f"{blocker} is a file" in line, line


def test_missing_s3_bucket_is_named(s3_env, capsys):
    rc, err = run_job(capsys, "--out", "s3://no-such-bucket-i10/flanders.zarr")
    line = error_line(err)
    assert rc == 2 and "bucket 'no-such-bucket-i10' does not exist" in line, line


# ----------------------------------------------------------------------------- pre-flight checks


def test_tensorrt_without_tensorrt_is_one_line_and_creates_nothing(tmp_path, capsys):
    from lssr_ray.infer.factory import cuda_available
    from lssr_ray.mapping.preflight import check_engine

    if importlib.util.find_spec("tensorrt") is not None and cuda_available():
        check_engine("tensorrt")  # a GPU host with the gpu extra: the check lets it run
        return
    out = tmp_path / "trt.zarr"
    rc, err = run_job(capsys, "--out", str(out), "--engine", "tensorrt")
    line = error_line(err)
    assert rc == 2 and "--engine tensorrt cannot run here" in line and "--engine auto" in line, line
    assert not out.exists()  # so the obvious rerun with --engine auto is not refused as "exists"
    check_engine("tensorrt", local_ray=False)  # on a cluster only the GPU actors can tell


def test_checkpoint_trained_on_another_base_is_refused(tmp_path, capsys):
    out = tmp_path / "mismatch.zarr"
    rc, err = run_job(capsys, "--out", str(out), "--checkpoint", str(REPO_ROOT / "models" / "lssr-adapters-cpu-v2"))
    line = error_line(err)
    assert rc == 2 and "was trained on base models/small-sd-base-v2" in line and "fingerprint" in line, line
    assert not out.exists()


def test_catalog_item_crs_contradicting_its_file_is_named(tmp_path, capsys):
    archive = tmp_path / "archive"
    shutil.copytree(REPO_ROOT / "data" / "archive", archive)
    item = archive / "HLSL30" / FLANDERS_L30 / f"{FLANDERS_L30}.json"
    doc = json.loads(item.read_text())
    doc["properties"].update({"proj:code": "EPSG:32630", "proj:epsg": 32630})  # the file is EPSG:32631
    item.write_text(json.dumps(doc))
    out = tmp_path / "crs.zarr"
    rc, err = run_job(capsys, "--out", str(out), "--catalog", str(archive / "catalog.json"))
    line = error_line(err)
    assert rc == 2 and f"catalog item {FLANDERS_L30} declares EPSG:32630 but its file says EPSG:32631" in line, line
    assert "no granule overlaps" not in line and not out.exists()


def _udf_with_a_user_mistake(batch):
    from lssr_ray.errors import ConfigError

    raise ConfigError("engine kind 'x' is unknown; valid: auto")


def test_user_error_raised_in_a_ray_data_worker_is_found():
    """An LssrError raised in a Ray Data UDF reaches the driver wrapped by Ray (whose text is the
    remote traceback): the job finds the original and prints its one line."""
    import ray

    from lssr_ray.errors import ConfigError, one_line, user_error

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(Exception) as info:
            ray.data.range(2).map_batches(_udf_with_a_user_mistake).take_all()
    finally:
        ray.shutdown()
    assert "Traceback" in str(info.value) or not isinstance(info.value, ConfigError)  # Ray's wrapper
    err = user_error(info.value)
    assert isinstance(err, ConfigError) and one_line(err) == "engine kind 'x' is unknown; valid: auto"
    assert user_error(RuntimeError("a bug")) is None


# ----------------------------------------------------------------------------- true advice


def test_resume_advice_depends_on_the_storage(s3_env):
    from lssr_ray.data import s3server
    from lssr_ray.mapping.pipeline import resume_advice

    on_moto = MapConfig(aoi=FLANDERS, out="s3://lssr-test/flanders.zarr")
    assert s3server.in_memory_server(s3_env.endpoint_url)
    text = resume_advice(on_moto)
    assert "keeps objects in memory only" in text and "recomputes every chip" in text, text
    durable = {"endpoint_url": "https://s3.eu-west-1.example.com"}  # not loopback: never asked
    assert resume_advice(on_moto, durable) == "committed chips are kept: rerun with --resume when the endpoint is back"
    assert "in memory" not in resume_advice(MapConfig(aoi=FLANDERS, out="out/local.zarr"))


def test_run_identity_is_the_same_for_a_checkout_copied_elsewhere(tmp_path):
    from lssr_ray.mapping.plan import run_identity

    ids = []
    for name in ("checkout_a", "elsewhere/checkout_b"):
        root = tmp_path / name
        (root / "data" / "archive").mkdir(parents=True)
        shutil.copy(REPO_ROOT / "data" / "archive" / "catalog.json", root / "data" / "archive")
        cfg = MapConfig(aoi=FLANDERS, catalog=str(root / "data" / "archive" / "catalog.json"))
        ids.append(run_identity(cfg, aoi_bytes=b"{}", base_sha256="b" * 64, adapter_sha256="a" * 64,
                                engine="onnxruntime", root=root))
    assert ids[0] == ids[1] and ids[0]["catalog"] == "data/archive/catalog.json"
    assert str(tmp_path) not in json.dumps(ids[0])


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        try:
            inner = json.loads(value)
        except ValueError:
            yield value
        else:
            yield from _strings(inner) if isinstance(inner, (dict, list)) else [value]


def test_store_attributes_hold_no_absolute_paths(tmp_path):
    """The attributes a run writes at creation (run_config, warnings, aoi, provenance)."""
    from lssr_ray.config import portable_ref
    from lssr_ray.mapping.pipeline import open_or_create_store
    from lssr_ray.mapping.plan import plan_map
    from lssr_ray.mapping.preflight import preflight
    from lssr_ray.mapping.store import open_store

    cfg = MapConfig(aoi=FLANDERS, out=str(tmp_path / "attrs.zarr"), quicklook=False)
    plan = plan_map(cfg)
    preflight(plan)
    open_or_create_store(plan, {})
    attrs = dict(open_store(cfg.out).attrs)
    texts = list(_strings(attrs))
    assert texts and not [t for t in texts if str(REPO_ROOT) in t or str(tmp_path) in t or t.startswith("/")], attrs
    assert json.loads(attrs["run_config"])["catalog"] == "data/archive/catalog.json"
    assert portable_ref(REPO_ROOT / "models" / "croptype-lgbm") == "models/croptype-lgbm"  # crop_type_classifier


# ----------------------------------------------------------------------------- faithful values


def test_negative_reflectance_keeps_its_sign_in_the_store(tmp_path):
    from lssr_ray.mapping.store import create_store, open_store, write_chunk

    url = str(tmp_path / "signed.zarr")
    create_store(url, crs="EPSG:32631", transform=(10, 0, 500000, 0, -10, 5600000), shape=(4, 4), chunk=4,
                 times=["2018-07-01"])
    refl = np.full((6, 4, 4), 0.05, np.float32)
    refl[:, 0, 0] = -0.0042  # a slightly negative prediction (inside HLS's valid range)
    refl[:, 0, 1] = -0.5  # far below the valid range: clipped to its floor, -0.01
    refl[:, 0, 2] = 2.0  # above: clipped to 1.6
    refl[:, 0, 3] = 0.0  # the model said zero
    write_chunk(url, refl, row_off=0, col_off=0)
    got = open_store(url)["reflectance"].values[0]
    assert np.allclose(got[:, 0, 0], -0.0042, atol=5e-5) and (got[:, 0, 0] < 0).all()
    assert np.allclose(got[:, 0, 1], -0.01) and np.allclose(got[:, 0, 2], 1.6)
    assert (got == 0).sum() == 6 and (got[:, 0, 3] == 0).all()  # zeros only where given


def test_model_output_is_clamped_to_the_valid_range_not_to_zero():
    """Image -1 is reflectance 0: the model's old clamp at -1 made every slightly negative
    prediction an exact 0. Now it clamps at the image values of -0.01 and 1.6."""
    import torch

    from lssr_ray.data.batch import postprocess
    from lssr_ray.model.lssr import LSSRModel

    b = 2
    img = torch.full((2 * b, 3, 6, 6), -0.5)  # [rgb chips; ir chips]
    img[:, :, 0, 0] = -1.02  # rgb: -0.004, ir: -0.008 reflectance
    img[:, :, 0, 1] = -9.0  # far below: the valid floor
    img[:, :, 0, 2] = 9.0  # far above: the valid ceiling
    out = LSSRModel._to_valid_range(img, b)
    six = torch.cat([out[:b], out[b:]], 1).numpy()
    refl = postprocess(six, np.ones((b, 2, 2), bool))
    assert np.allclose(refl[:, :3, 0, 0], -0.004, atol=1e-6) and np.allclose(refl[:, 3:, 0, 0], -0.008, atol=1e-6)
    assert np.allclose(refl[:, :, 0, 1], -0.01, atol=1e-6) and np.allclose(refl[:, :, 0, 2], 1.6, atol=1e-5)
    assert not (refl == 0).any()
