"""Shared fixtures for the training tests: one local Ray instance and tiny training configs."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from lssr_ray.config import REPO_ROOT, TrainConfig

PAIRS = REPO_ROOT / "data" / "pairs" / "pairs.zarr"
BASE = REPO_ROOT / "models" / "small-sd-base"


def _tiny_config(storage: Path, **kw) -> TrainConfig:
    """2 CPU workers, 8-cell chips (24 x 24 px at 10 m), batch 1: a step takes a fraction of a second."""
    cfg = TrainConfig(
        run_name="tiny", storage_path=str(storage), base=str(BASE), pairs=str(PAIRS), chip_size=8,
        num_workers=2, use_gpu="false", cpus_per_worker=1.0, batch_size=1, grad_accum=1,
        learning_rate=1e-3, max_steps=2, checkpoint_every=2, val_every=2, precision="fp32",
        max_failures=2, num_to_keep=2,
    )
    return dataclasses.replace(cfg, **kw)


@pytest.fixture(scope="session")
def ray_local():
    """A fresh local Ray with 2 CPUs for the whole session (never an existing cluster)."""
    import os

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # the dashboard serves the state API (list_actors) used by the recovery test
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield ctx  # ctx.dashboard_url: pass it to the state API, or it may pick another Ray on the host
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(storage_folder, **overrides) -> TrainConfig`` for short CPU runs."""
    return _tiny_config


def _kill_worker_after_first_checkpoint(run_dir: Path, done: threading.Event, out: dict, api: str) -> None:
    from ray.util.state import list_actors

    while not done.is_set():
        ckpts = [p for p in run_dir.glob("checkpoint_*") if (p / "train_state.pt").is_file()]
        if ckpts and (run_dir / "checkpoint_manager_snapshot.json").is_file():
            # address=: this test's own Ray; other Ray instances on the host are left alone
            actors = list_actors(address=api, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
            if actors:
                pid = int(actors[-1]["pid"])
                out["checkpoints_before_kill"] = len(ckpts)
                os.kill(pid, signal.SIGKILL)
                out["killed_pid"] = pid
                return
        time.sleep(0.05)


@pytest.fixture(scope="session")
def chaos_run(ray_local, tiny_config, tmp_path_factory):
    """16 steps, checkpoint every 2, validation at the end; one RayTrainWorker SIGKILLed after
    the first checkpoint. Returns (config, run summary, {"killed_pid": ...})."""
    from lssr_ray.train.trainer import run_training

    storage = tmp_path_factory.mktemp("chaos")
    cfg = tiny_config(storage, run_name="chaos", max_steps=16, checkpoint_every=2, val_every=1000)
    done, out = threading.Event(), {}
    api = f"http://{ray_local.dashboard_url}"
    killer = threading.Thread(target=_kill_worker_after_first_checkpoint,
                              args=(storage / cfg.run_name, done, out, api), daemon=True)
    killer.start()
    try:
        summary = run_training(cfg)
    finally:
        done.set()
        killer.join(5)
    return cfg, summary, out
