"""A local Ray started by a job, and a reaper that takes it down with the job, even after SIGKILL.

Why: on Linux Ray ties gcs_server and raylet to the driver (``PR_SET_PDEATHSIG``), but the
agents the raylet starts (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) and idle workers
outlive a SIGKILLed driver and ignore SIGTERM while their raylet is gone. Ray 2.60 has no
``ray.init`` option for that (its own ``ray_process_reaper`` is only used where kernel fate
sharing is unavailable, and only watches the processes the driver starts itself).

How: before ``ray.init`` the driver puts a unique owner tag in its environment
(:data:`OWNER_ENV`); every process of that Ray session inherits it (gcs, raylet, agents,
workers), while another user's or another job's Ray on the same machine does not. A small reaper
process (this file run as a script, psutil only, in its own session so Ctrl-C of the job does not
stop it) polls the driver PID; when the driver is gone it sends SIGTERM to every process carrying
the tag, then SIGKILL to those still alive after a grace period. Processes are matched by that
tag, never by name.

A PID is told from a later process with the same PID by its start in clock ticks since boot
(:func:`process_start`), never by psutil's ``create_time()``: that is boot time plus those ticks,
and the kernel's boot time (``btime``, whole seconds) moves when the wall clock is stepped or slewed,
so a driver checked against a start time taken in another process can look dead while it runs
(the reaper then took down a live job's Ray, and the job exited with status 1 on its next Ray call).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

OWNER_ENV = "LSSRRAY_OWNER"
"""Environment variable carrying the owner tag (no ``LSSR_`` prefix: it is not forwarded to
cluster workers by :data:`lssr_ray.mapping.ray_env.FORWARDED_ENV_PREFIXES`)."""
POLL_S = 0.5
"""Seconds between the reaper's checks of the driver."""
SCAN_S = 1.0
"""Seconds between the reaper's scans of the session's processes while the driver lives."""
GRACE_S = 3.0
"""Seconds between SIGTERM and SIGKILL."""

_REAPER: dict[int, tuple[str, subprocess.Popen]] = {}  # driver pid -> (tag, reaper process)


def process_start(pid: int) -> float:
    """When ``pid`` started, in a form that compares exactly across processes and hours.

    Linux: clock ticks from boot to the process's start (``/proc/PID/stat`` field 22), which no
    change of the wall clock moves. Elsewhere: psutil's start time in epoch seconds, rounded to the
    second (compare with :func:`same_start`). Raises ``psutil.NoSuchProcess`` when the PID is gone.
    """
    import psutil

    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:  # gone (ENOENT, or ESRCH while it exits), or no /proc on this system
        if os.path.isdir("/proc/self"):
            raise psutil.NoSuchProcess(pid) from None
        return float(round(psutil.Process(pid).create_time()))
    return float(stat[stat.rindex(b")") + 2:].split()[19])  # fields after "(comm)" start at field 3


def same_start(a: float, b: float) -> bool:
    """Two :func:`process_start` values of one process (exact ticks; within a second elsewhere)."""
    return a == b if os.path.isdir("/proc/self") else abs(a - b) <= 1.0


def _owner_tag() -> str:
    """This driver's tag (one per driver process, reused by later local Rays of the same process)."""
    pid = os.getpid()
    if pid in _REAPER:
        return _REAPER[pid][0]
    return f"{pid}-{uuid.uuid4().hex[:12]}"


def start_reaper() -> str:
    """Tag this process's environment and start the reaper once; returns the tag.

    Everything this process starts afterwards (the local Ray's processes included) is taken down
    when this process dies.
    """
    pid = os.getpid()
    if pid in _REAPER and _REAPER[pid][1].poll() is None:
        return _REAPER[pid][0]
    tag = _owner_tag()
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}  # the reaper must not match itself
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--watch", str(pid),
         "--start", repr(process_start(pid)), "--tag", tag],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env, start_new_session=True, close_fds=True,
    )
    _REAPER[pid] = (tag, proc)
    os.environ[OWNER_ENV] = tag
    return tag


def start_local_ray(**init_kwargs: Any) -> str:
    """``ray.init(address="local", **init_kwargs)`` with the reaper in place; returns the owner tag.

    ``address="local"`` never joins another user's cluster found via /tmp/ray on a shared machine.
    """
    import ray

    tag = start_reaper()  # before init: a driver killed during start-up is covered too
    ray.init(address="local", **init_kwargs)
    return tag


def tagged_processes(tag: str) -> list[Any]:
    """Live processes (psutil) whose environment carries ``OWNER_ENV=tag`` (this user's only).

    Ray's agents rename themselves with setproctitle, which clobbers their environment block, so
    they are not found here: :func:`session_processes` adds them as descendants / session users.
    """
    import psutil

    me = os.getpid()
    out = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get(OWNER_ENV) == tag and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, OSError):
            continue
    return out


_SESSION_RE = re.compile(r"(/[^\s=]*/session_\d{4}-\d\d-\d\d_[\d_-]+)")


def session_processes(tag: str, known: dict[int, float] | None = None) -> tuple[list[Any], set[str]]:
    """The session's processes now: tagged ones, their descendants (the agents), still-live members
    of ``known`` (``pid -> process_start`` from earlier scans: agents orphaned after their raylet
    died) and ``ray::`` processes holding files in the session's folder. Returns
    (processes, session folders seen)."""
    import psutil

    me = os.getpid()
    found: dict[int, Any] = {}
    for p in tagged_processes(tag):
        found[p.pid] = p
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            pass
    for pid, start in (known or {}).items():
        try:
            if same_start(process_start(pid), start):
                found.setdefault(pid, psutil.Process(pid))
        except psutil.Error:
            continue
    sessions: set[str] = set()
    for p in list(found.values()):
        try:
            sessions.update(_SESSION_RE.findall(" ".join(p.cmdline())))
        except psutil.Error:
            continue
    if sessions:
        for p in psutil.process_iter(["pid", "cmdline"]):
            if p.pid in found or p.pid == me or not (p.info["cmdline"] or [""])[0].startswith("ray::"):
                continue
            try:
                if any(f.path.startswith(s + "/") for f in p.open_files() for s in sessions):
                    found[p.pid] = p
            except (psutil.Error, OSError):
                continue
    found.pop(me, None)
    return [p for p in found.values() if _live(p)], sessions


def _live(p: Any) -> bool:
    import psutil

    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def reap(tag: str, known: dict[int, float] | None = None, *, grace_s: float = GRACE_S) -> int:
    """SIGTERM every process of the session (:func:`session_processes`), SIGKILL what is left after
    ``grace_s``; returns how many were signalled. Rescans so workers started meanwhile go too."""
    import psutil

    seen: set[int] = set()
    for _ in range(3):
        procs, _ = session_processes(tag, known)
        if not procs:
            break
        seen.update(p.pid for p in procs)
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=grace_s)
    return len(seen)


def _driver_alive(pid: int, start: float) -> bool:
    import psutil

    try:
        return same_start(process_start(pid), start) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="reap a job's local Ray when the job's driver dies")
    ap.add_argument("--watch", type=int, required=True, help="driver PID")
    ap.add_argument("--start", type=float, required=True, help="driver's process_start (guards PID reuse)")
    ap.add_argument("--tag", required=True, help=f"value of {OWNER_ENV} in the session's processes")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    known: dict[int, float] = {}  # pid -> process_start of every session process seen so far
    last_scan = 0.0
    import psutil

    while _driver_alive(a.watch, a.start):
        if time.monotonic() - last_scan >= SCAN_S:
            for p in session_processes(a.tag, known)[0]:
                with contextlib.suppress(psutil.Error):  # gone meanwhile
                    known[p.pid] = process_start(p.pid)
            last_scan = time.monotonic()
        time.sleep(POLL_S)
    reap(a.tag, known)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
