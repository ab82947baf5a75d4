"""The analyst views' chunk work (:mod:`lssr_ray.mapping.views`) as a Ray Data stage::

    range(n tasks) -> map_batches(chunk function) -> per-batch counts back to the driver

The driver only writes templates (metadata) and sums counts; each task reads the window of its
output chunk from the store and region-writes that chunk, so the driver's memory does not grow
with the number of chunks (the earlier dask path built a graph of one task per chunk and variable
in the driver: hundreds of MB at state scale, and every chunk computed on the driver's node).

Small jobs (at most :data:`IN_PROCESS_MAX_TASKS` tasks, e.g. the demo store and the tests) run the
same chunk function in this process: a Ray Data job costs seconds of fixed overhead, more than
such a job's work. Larger ones use the running Ray, or start a local one the project's way
(:func:`lssr_ray.mapping.ray_env.init_ray`) and stop it afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

IN_PROCESS_MAX_TASKS = 64
"""Jobs of at most this many chunk tasks run in the calling process instead of on Ray."""
MAX_TASKS_PER_BATCH = 256
"""Most chunk tasks per ``map_batches`` call: each call opens the store once (its metadata and
coordinates: 0.1 s on an idle core, seconds on a loaded one), so small batches spend their
time opening; blocks stay many enough (4 per CPU) to spread over the cluster."""

ChunkFn = Callable[..., dict[str, np.ndarray]]
"""``fn({"id": int64 task ids}, **kwargs) -> {"written": int64 per task}`` (a module-level function)."""


@contextlib.contextmanager
def chunk_task_ray(largest_job: int, *, in_process_max: int = IN_PROCESS_MAX_TASKS) -> Iterator[None]:
    """Around a series of chunk jobs (overview levels) whose largest has ``largest_job`` tasks: a
    Ray for them when that job goes to Ray and none is running, started the project's way
    (:func:`lssr_ray.mapping.ray_env.init_ray`: ``RAY_ADDRESS`` inside ``ray job submit``, else a
    local one) once for the series and stopped after it; nothing otherwise."""
    started = False
    if largest_job > in_process_max:
        import ray

        from lssr_ray.config import MapConfig
        from lssr_ray.mapping.ray_env import init_ray

        started = False if ray.is_initialized() else init_ray(MapConfig(aoi=""))  # only its ray_address is read
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def run_chunk_tasks(fn: ChunkFn, n_tasks: int, *, kwargs: Mapping[str, Any], label: str,
                    in_process_max: int = IN_PROCESS_MAX_TASKS) -> int:
    """Run ``fn`` over the task ids ``0 .. n_tasks - 1`` (``fn`` maps an id to its output chunk)
    and return how many chunks it wrote: in this process for ``n_tasks <= in_process_max``,
    else as a Ray Data ``map_batches`` stage of tasks on the running Ray (:func:`chunk_task_ray`)."""
    t0 = time.perf_counter()
    if n_tasks <= in_process_max:
        written, where = int(fn({"id": np.arange(n_tasks, dtype=np.int64)}, **kwargs)["written"].sum()), "in process"
    else:
        written, where = _run_on_ray(fn, n_tasks, kwargs), "on Ray"
    log.info("%s: %d of %d chunk task(s) wrote a chunk, %s, %.1f s", label, written, n_tasks, where,
             time.perf_counter() - t0)
    return written


def _run_on_ray(fn: ChunkFn, n_tasks: int, kwargs: Mapping[str, Any]) -> int:
    import ray

    from lssr_ray.errors import LssrError
    from lssr_ray.mapping.ray_env import runtime_env

    if not ray.is_initialized():
        raise LssrError(f"{n_tasks} chunk tasks need Ray: run them inside chunk_task_ray()")
    n_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    n_blocks = min(n_tasks, max(4 * n_cpus, -(-n_tasks // MAX_TASKS_PER_BATCH)))
    ds = ray.data.range(n_tasks, override_num_blocks=n_blocks)  # one batch per block: one store open
    ds = ds.map_batches(fn, fn_kwargs=dict(kwargs), batch_size=-(-n_tasks // n_blocks), batch_format="numpy",
                        num_cpus=0.5, runtime_env=runtime_env())
    written = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):  # counts only: flat memory
        written += int(np.asarray(batch["written"]).sum())
    return written


__all__ = ["IN_PROCESS_MAX_TASKS", "MAX_TASKS_PER_BATCH", "chunk_task_ray", "run_chunk_tasks"]
