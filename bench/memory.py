"""Peak resident memory of a process tree, sampled with psutil from a background thread.

Used around a mapping run started as a child process: the child is the Ray *driver*; its
descendants are Ray's own processes (GCS, raylet, ...) and the workers that host the Ray Data
actors. Ray names worker processes after what they run (process title ``ray::...``), so the
LSSR actors are the workers whose command line mentions ``LSSRPredictor``.

Ray Data names an actor-pool worker after its operator (``ray::MapWorker(MapBatches(ReadChips))``)
and a task after its function (``ray::MapBatches(count_classes)``), so a UDF that no entry of
:data:`ROLES` names still gets its own role from that name (:func:`udf_role`): a new stage shows
up in the tables without editing this module.

RSS counts shared pages (torch / onnxruntime libraries) in every process that maps them, so
per-process peaks must not be summed into a machine total.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Self

ROLES: tuple[tuple[str, str], ...] = (
    ("LSSRPredictor", "lssr_actor"),
    ("ReadChips", "read_actor"),
    ("CommitPartials", "commit_actor"),
    ("BlendAndWrite", "blend_actor"),
    ("ray::MapWorker(", "udf"),
    ("ray::Map", "udf"),
    ("ray::FlatMap(", "udf"),
    ("ray::Filter(", "udf"),
    ("gcs_server", "ray_system"),
    ("raylet", "ray_system"),
    ("dashboard", "ray_system"),
    ("log_monitor", "ray_system"),
    ("monitor.py", "ray_system"),
    ("ray::", "ray_worker_other"),
    ("default_worker", "ray_worker_other"),
)
"""(substring of the command line, role), first match wins; role ``udf``: named by :func:`udf_role`."""

_UDF = re.compile(r"(?:MapBatches|Map|FlatMap|Filter)\((\w+)\)")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def udf_role(cmdline: str) -> str:
    """The role of a Ray Data worker no :data:`ROLES` entry names: ``<udf>_actor`` for an
    actor-pool worker (``MapWorker(...)``), ``<udf>_task`` for a task, after the *last* UDF of
    its (possibly fused) operator, snake-cased (``ClassifyChunks`` -> ``classify_chunks_actor``)."""
    names = _UDF.findall(cmdline)
    if not names:
        return "ray_worker_other"
    return f"{_snake(names[-1])}_{'actor' if 'MapWorker(' in cmdline else 'task'}"


def role_of(cmdline: str, *, is_root: bool = False) -> str:
    """The role of a process from its command line (``driver`` for the sampled root)."""
    if is_root:
        return "driver"
    for key, role in ROLES:
        if key in cmdline:
            return udf_role(cmdline) if role == "udf" else role
    return "other"


class TreeRssSampler:
    """Sample the RSS of ``root_pid`` and all its descendants every ``interval`` seconds.

    ``peaks``: ``{pid: {"role", "cmd", "peak_rss_mb", "peak_private_mb"}}``; a worker's role is re-read at every
    sample because Ray renames a worker when it starts hosting an actor. ``root_trace``:
    ``[(seconds since start, root RSS MiB)]`` at every sample (when the root peaks).
    """

    def __init__(self, root_pid: int, *, interval: float = 0.2) -> None:
        self.root_pid = int(root_pid)
        self.interval = float(interval)
        self.peaks: dict[int, dict[str, Any]] = {}
        self.samples = 0
        self.root_trace: list[tuple[float, float]] = []
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for p in procs:
            try:
                mi = p.memory_info()
                rss = mi.rss / 2**20
                # RSS minus shared pages: Ray's object store (/dev/shm) and shared libraries count
                # in the RSS of every process that touches them; this is the process's own memory
                private = (mi.rss - getattr(mi, "shared", 0)) / 2**20
                cmd = " ".join(p.cmdline())[:200]
            except psutil.Error:
                continue
            rec = self.peaks.setdefault(p.pid, {"role": "other", "cmd": cmd, "peak_rss_mb": 0.0,
                                                     "peak_private_mb": 0.0})
            role = role_of(cmd, is_root=p.pid == self.root_pid)
            if role != "other" or rec["role"] == "other":
                rec["role"], rec["cmd"] = role, cmd
            rec["peak_rss_mb"] = max(rec["peak_rss_mb"], rss)
            rec["peak_private_mb"] = max(rec["peak_private_mb"], private)
            if p.pid == self.root_pid:
                self.root_trace.append((round(time.perf_counter() - self._t0, 2), round(rss, 1)))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self) -> Self:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def by_role(self, key: str = "peak_rss_mb") -> dict[str, list[float]]:
        """``{role: [peak MiB of each process with that role, largest first]}``; ``key``
        ``peak_rss_mb`` (RSS) or ``peak_private_mb`` (RSS minus shared pages)."""
        out: dict[str, list[float]] = {}
        for rec in self.peaks.values():
            out.setdefault(rec["role"], []).append(round(rec[key], 1))
        return {k: sorted(v, reverse=True) for k, v in sorted(out.items())}


__all__ = ["ROLES", "TreeRssSampler", "role_of", "udf_role"]
