"""No planted secret reaches a Ray runtime_env, the job's output and logs, the store or the Ray
dashboard (state API); chips skipped for transient read errors are retried by a resumed run."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT, MapConfig
from lssr_ray.mapping.ray_env import forwarded_env

FLANDERS = str(REPO_ROOT / "examples" / "flanders_31UDS.geojson")
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "planted-aws-secret-5b1e",
    "AWS_SESSION_TOKEN": "planted-session-token-9c2d",
    "EARTHDATA_TOKEN": "planted-edl-token-3a7f",
}
STORAGE_SECRET = "planted-storage-secret-8d4c"
MARKER = "planted-public-marker-4e"  # not a secret: it must reach the actors' runtime_env
STORAGE_OPTIONS = json.dumps({"s3://lssr-nowhere": {"endpoint_url": "http://127.0.0.1:9", "secret": STORAGE_SECRET,
                                                    "client_kwargs": {"region_name": "us-west-2"}}})
PLANTED = [*SECRETS.values(), STORAGE_SECRET]


def _flanders(tmp_path: Path) -> MapConfig:
    return MapConfig(aoi=FLANDERS, out=str(tmp_path / "fl.zarr"), start="2018-07-01", end="2018-07-23",
                     dates="all", engine="bicubic", keep_partials=True)  # the resume test re-commits one


def test_forwarded_env_keeps_settings_and_drops_secrets():
    env = {**SECRETS, "AWS_ACCESS_KEY_ID": "AKIAPLANTED", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "GDAL_HTTP_TIMEOUT": "10", "GDAL_HTTP_BEARER": "planted-bearer", "LSSR_STORAGE_OPTIONS": STORAGE_OPTIONS,
           "LSSR_EARTHDATA_PREFIXES": "https://x", "HOME": "/home/u"}
    out = forwarded_env(env)
    text = json.dumps(out)
    assert not [v for v in [*PLANTED, "AKIAPLANTED", "planted-bearer"] if v in text]
    assert out["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9" and out["GDAL_HTTP_TIMEOUT"] == "10"
    assert out["LSSR_EARTHDATA_PREFIXES"] == "https://x" and "HOME" not in out
    assert json.loads(out["LSSR_STORAGE_OPTIONS"]) == {
        "s3://lssr-nowhere": {"endpoint_url": "http://127.0.0.1:9", "client_kwargs": {"region_name": "us-west-2"}}}


def test_transient_skips_are_committed_but_not_done(tmp_path):
    from lssr_ray.mapping.partials import commit_partial
    from lssr_ray.mapping.plan import committed, plan_map, retryable, work_items

    plan = plan_map(_flanders(tmp_path))
    assert len(plan.times) == 4 and len(plan.chip_ids) == 1
    cid = plan.chip_ids[0]
    commit_partial(plan.store, 0, cid, status="skipped", reason="transient_read", detail="HTTP 503")
    commit_partial(plan.store, 1, cid, status="skipped", reason="missing_object", detail="HTTP 404")
    commit_partial(plan.store, 2, cid, sr=np.random.default_rng(0).random((6, 96, 96), np.float32),
                   window=[0, 0, 96, 96])
    assert committed(plan, None) == {0: set(), 1: {cid}, 2: {cid}, 3: set()}
    assert committed(plan, None, with_retryable=True) == {0: {cid}, 1: {cid}, 2: {cid}, 3: set()}
    assert retryable(plan, None) == {0: {cid}, 1: set(), 2: set(), 3: set()}
    assert sorted(it["ti"] for it in work_items(plan, committed(plan, None))) == [0, 3]


def _texts_under(folder: Path) -> dict[str, str]:
    """Every file's text (partials: their JSON records, which the npz compresses)."""
    out = {}
    for p in folder.rglob("*"):
        if not p.is_file():
            continue
        if p.suffix == ".npz":
            with np.load(io.BytesIO(p.read_bytes()), allow_pickle=False) as npz:
                out[str(p)] = str(npz["record"])
        else:
            out[str(p)] = p.read_bytes().decode("utf-8", "replace")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A Flanders run (4 dates, bicubic) on a Ray started here with its dashboard, secrets planted
    in the environment; then date 0 is re-committed as a transient skip and the run resumed."""
    import ray
    from ray.util.state import list_actors, list_jobs

    from lssr_ray.data.s3server import free_port
    from lssr_ray.mapping.partials import commit_partial
    from lssr_ray.mapping.pipeline import run_map

    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("secrets")
    handler = logging.StreamHandler(log := io.StringIO())
    out = io.StringIO()  # the driver's stdout/stderr, worker output included (log_to_driver)
    logging.getLogger().addHandler(handler)
    logging.getLogger("lssr_ray").setLevel(logging.DEBUG)
    try:
        for k, v in {**SECRETS, "LSSR_STORAGE_OPTIONS": STORAGE_OPTIONS, "LSSR_TEST_MARKER": MARKER}.items():
            mp.setenv(k, v)
        # a Ray not started by the job: every actor gets the forwarded env as its runtime_env
        ctx = ray.init(num_cpus=2, include_dashboard=True, dashboard_port=free_port(), log_to_driver=True)
        cfg = _flanders(tmp)
        cid = "r0000c0000"
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            first = run_map(cfg, progress=False)
            commit_partial(cfg.out, 0, cid, status="skipped", reason="transient_read", detail="HTTP 503 after retries")
            second = run_map(cfg, progress=False)
        api = f"http://{ctx.dashboard_url}"  # this Ray's own dashboard: other Ray instances may run on the host
        state = repr(list_actors(address=api, detail=True, limit=10000)) + repr(list_jobs(address=api, detail=True))
        session = Path(ray._private.worker._global_node.get_session_dir_path())
        yield {"first": first, "second": second, "state": state, "log": log, "out": out, "session": session,
               "store": Path(cfg.out), "cid": cid}
    finally:
        ray.shutdown()
        logging.getLogger().removeHandler(handler)
        mp.undo()


def test_resumed_run_retries_transient_skips_and_says_so(runs):
    from lssr_ray.mapping.partials import load_partial

    assert runs["first"].computed == 4 and runs["second"].computed == 1 and runs["second"].resumed == 3
    assert "retrying 1 chip-date(s) skipped for transient read errors" in runs["log"].getvalue()
    assert load_partial(str(runs["store"]), 0, runs["cid"], with_sr=False).record["status"] == "ok"


def test_no_planted_secret_in_runtime_env_logs_store_or_dashboard(runs):
    state = runs["state"]
    assert MARKER in state  # the state API shows the actors' runtime_env: the grep below can see it
    texts = {"ray state API": state, "job log records": runs["log"].getvalue(), "stdout/stderr": runs["out"].getvalue()}
    texts.update(_texts_under(runs["store"]))
    texts.update(_texts_under(runs["session"] / "logs"))
    assert any(name.endswith((".zattrs", "zarr.json")) for name in texts)
    leaks = [(where, v) for where, text in texts.items() for v in PLANTED if v in text]
    assert not leaks, leaks[:5]
