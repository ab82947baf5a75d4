"""A job's local Ray goes away with the job, agents included, even when the driver is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from lssr_ray.ray_local import session_processes

DRIVER = """
import sys, time
from lssr_ray.mapping.ray_env import init_ray
from lssr_ray.config import MapConfig
import ray
init_ray(MapConfig(aoi="unused.geojson"))
import os
print(os.environ["LSSRRAY_OWNER"], flush=True)
ray.get(ray.remote(lambda: 1).remote())  # a worker exists too
print("ready", flush=True)
time.sleep(600)
"""


def _alive(procs: dict[int, float]) -> list[int]:
    """pids of ``{pid: create_time}`` still running (same process, not a reused pid), zombies excluded."""
    out = []
    for pid, ctime in procs.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - ctime) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def _wait_gone(procs: dict[int, float], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    left = _alive(procs)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _alive(procs)
    return left


def test_local_ray_is_gone_after_the_driver_is_sigkilled(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LSSRRAY_OWNER" and k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env, cwd=tmp_path)
    try:
        tag = proc.stdout.readline().strip()
        assert tag, "driver printed no owner tag"
        assert proc.stdout.readline().strip() == "ready"
        procs, sessions = session_processes(tag)
        assert len(sessions) == 1, sessions  # one Ray session, found from the tagged processes
        before = {p.pid: p.create_time() for p in procs}
        names = " ".join(" ".join(p.cmdline()) for p in procs)
        # the session is really there: gcs, raylet and the two agents the issue saw orphaned
        for want in ("gcs_server", "raylet", "DashboardAgent", "RuntimeEnvAgent"):
            assert want in names, f"{want} not among the session's processes: {names[:2000]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        left = _wait_gone(before, 30.0)
        assert not left, f"left after SIGKILL of the driver: {[psutil.Process(p).cmdline()[:1] for p in left]}"
        assert not session_processes(tag)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
