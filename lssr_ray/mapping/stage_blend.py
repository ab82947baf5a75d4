"""Stage 2 of a mapping run, **blend and write**, per (output chunk, date)::

    chunk index spans -> map_batches(expand to row, col, ti) -> map_batches(BlendAndWrite)

The driver never lists the (chunk, date) pairs: Ray Data tasks expand index spans from the chip
lattice's compact arrays (:func:`~lssr_ray.mapping.manifest.chunk_source`).

Each chunk blends its chip's partial with its neighbours' halos
(:func:`~lssr_ray.mapping.blend.blend_chunk`) and is written by exactly one chunk-aligned region
write. It runs over every chunk on every run (idempotent), so a resumed run rewrites the chunks
next to newly committed chips.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from lssr_ray.mapping.lock import StoreLock
from lssr_ray.mapping.plan import MapPlan
from lssr_ray.mapping.resources import ClusterResources, blend_pool
from lssr_ray.mapping.udfs import BlendAndWrite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlendResult:
    """What stage 2 did."""

    chunks_written: int
    """Output chunks written (chunks without any prediction are left unwritten)."""
    seconds: float
    """Wall time of stage 2."""


def blend_and_write(plan: MapPlan, *, lock: StoreLock, storage_options: dict[str, Any],
                    progress: bool = True) -> BlendResult:
    """Blend and write every output chunk of every date of ``plan`` on the running Ray,
    keeping ``lock`` alive."""
    from lssr_ray.mapping.accounting import progress_bar
    from lssr_ray.mapping.manifest import chunk_source
    from lssr_ray.mapping.ray_env import runtime_env

    t2 = time.perf_counter()
    chips, cfg = plan.stage.plan, plan.cfg
    n_chunks = len(chips.chips) * len(plan.times)
    pool = blend_pool(cfg, ClusterResources.from_ray(), n_chunks)
    ds = chunk_source(plan, n_blocks=4 * pool.max_size)
    ds = ds.map_batches(BlendAndWrite, fn_constructor_args=(plan.store,),
                        fn_constructor_kwargs={"core": chips.chunk_size, "halo": cfg.grid.overlap // 2 * chips.grid.scale,
                                               "storage_options": storage_options},
                        batch_size=8, batch_format="numpy", runtime_env=runtime_env(), **pool.map_batches_args())
    written = 0
    with progress_bar(n_chunks, "stage 2 chunks", progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            written += int(np.asarray(batch["written"]).sum())
            bar.update(len(batch["written"]))
            lock.heartbeat_if_due()
    seconds = time.perf_counter() - t2
    log.info("stage 2: %d of %d chunk(s) written in %.1f s", written, n_chunks, seconds)
    return BlendResult(chunks_written=written, seconds=seconds)


__all__ = ["BlendResult", "blend_and_write"]
