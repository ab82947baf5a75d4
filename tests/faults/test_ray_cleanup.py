"""A job's local Ray goes away with the job, agents included, even when the driver is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from lssr_ray.ray_local import _driver_alive, process_start, same_start, session_processes

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
    """pids of ``{pid: process_start}`` still running (same process, not a reused pid), zombies excluded."""
    out = []
    for pid, start in procs.items():
        try:
            if same_start(process_start(pid), start) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
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
        before = {p.pid: process_start(p.pid) for p in procs}
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


def test_a_wall_clock_step_does_not_make_a_live_driver_look_dead(monkeypatch):
    """The reaper compares the driver's start, taken in the driver, with what it reads later in its own
    process. psutil's ``create_time()`` adds the kernel's boot time, which moves by whole seconds when
    the wall clock is stepped or slewed; a live driver then looked dead and its Ray was reaped."""
    code = ("import os, sys; from lssr_ray.ray_local import process_start; "
            "print(process_start(os.getpid()), flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        start_seen_by_itself = float(child.stdout.readline())
        assert same_start(process_start(child.pid), start_seen_by_itself)  # exact across processes
        assert not same_start(process_start(os.getpid()), start_seen_by_itself)
        import psutil._pslinux as pslinux

        monkeypatch.setattr(pslinux, "boot_time", lambda real=pslinux.boot_time: real() + 1.0)  # clock stepped 1 s
        assert _driver_alive(child.pid, start_seen_by_itself)
        child.stdin.close()
        child.wait(10)
        assert not _driver_alive(child.pid, start_seen_by_itself)
    finally:
        if child.poll() is None:
            child.kill()
