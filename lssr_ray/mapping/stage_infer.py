"""Stage 1 of a mapping run, **infer and commit**: per (chip, date), streamed through Ray Data::

    manifest parts (store) -> map_batches(read part)                        # _manifest/stage1/...
                           -> map_batches(ReadChips, actors, read_cpus)      # one read per block
                            -> map_batches(LSSRPredictor, actors, actor_cpus[, 1 GPU each: resources.py])
                            -> map_batches(CommitPartials, actors)            # atomic partials
                            -> driver iter_batches (ids, status and timings only: no pixels)

Bounded memory: the driver writes the work items to the store's manifest date by date
(:mod:`lssr_ray.mapping.manifest`) and keeps counts only (computed, skipped by reason, 20 skip
examples, granule use counts), never pixels or per-item records; Ray Data's streaming executor
keeps a bounded number of blocks in flight, so a larger region means more items on the store, not
more memory in the driver.

Every chip-date is committed atomically as a partial (:mod:`lssr_ray.mapping.partials`); a rerun
leaves out the committed ones (:func:`~lssr_ray.mapping.plan.committed_at`). Completion is what
the partials say, counted per date against the plan at the end (not the executor's word).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lssr_ray.config import MapConfig
from lssr_ray.errors import ConfigError
from lssr_ray.mapping.lock import StoreLock
from lssr_ray.mapping.plan import MapPlan, committed_at, plan_map, work_items
from lssr_ray.mapping.resources import ClusterResources, infer_pools, stage1_batch_rows
from lssr_ray.mapping.udfs import CommitPartials, LSSRPredictor, ReadChips

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferResult:
    """What stage 1 did in this run."""

    resumed: int
    """Chip-dates already committed before this run's stage 1 (not recomputed)."""
    computed: int = 0
    """Chip-dates predicted (or skipped with a reason) and committed by this run."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Skipped chip-dates of this run by reason."""
    skip_examples: list[str] = field(default_factory=list)
    """Up to 20 skip lines ``chip date reason: detail``."""
    granule_use: dict[str, int] = field(default_factory=dict)
    """Chip-dates predicted from each granule id (this run)."""
    seconds: float = 0.0
    """Wall time of stage 1 (after the ONNX export, which is cached)."""


def onnx_graph(plan: MapPlan) -> str:
    """Path of the exported ONNX graph of the run's model (fixed batch and chip size; weights as
    external data beside it for an SD-2.1-size base), cached under ``$LSSR_CACHE/onnx/<key>/``
    (:func:`~lssr_ray.infer.export.cached_export`). Actors get the path, never the bytes; one on
    a node without it exports the same graph there (:class:`~lssr_ray.mapping.udfs.LSSRPredictor`)."""
    from lssr_ray.infer.export import cached_export
    from lssr_ray.model.checkpoint import CheckpointRef

    cfg = plan.cfg
    ref = CheckpointRef(plan.checkpoint, cfg.base, cfg.seed)
    return str(cached_export(ref, batch_size=cfg.batch_size, chip_size=cfg.grid.chip_size))


def predictor_kwargs(plan: MapPlan) -> dict[str, Any]:
    """Constructor arguments of :class:`LSSRPredictor` for this run."""
    cfg = plan.cfg
    kw: dict[str, Any] = {"engine": plan.engine, "checkpoint": plan.checkpoint, "base": cfg.base, "seed": cfg.seed,
                          "batch_size": cfg.batch_size, "chip_size": cfg.grid.chip_size,
                          "uncertainty": cfg.uncertainty, "precision": cfg.precision}
    if plan.engine not in ("torch", "bicubic"):
        kw["onnx"] = onnx_graph(plan)
    return kw


def _stage1_dataset(plan: MapPlan, manifest: Any, pkw: dict[str, Any], storage_options: dict[str, Any]) -> Any:
    from lssr_ray.mapping.manifest import stage1_source
    from lssr_ray.mapping.ray_env import configure_data_context, runtime_env

    configure_data_context()
    cfg, env, rows = plan.cfg, runtime_env(), stage1_batch_rows(plan.cfg)
    pools = infer_pools(plan.engine, cfg, ClusterResources.from_ray(), manifest.items)
    log.info("stage 1 actor pools: %s", ", ".join(f"{k} {p.min_size}-{p.max_size} x ({p.num_cpus} CPU, {p.num_gpus} GPU)"
                                                  for k, p in pools.items()))
    ds = stage1_source(plan, manifest, storage_options)  # about one item per block, capped for huge regions
    ds = ds.map_batches(ReadChips, fn_constructor_kwargs={"plan": plan.stage.plan, "granules": plan.stage.granules,
                                                          "aux": plan.stage.aux},
                        batch_size=1, batch_format="numpy", runtime_env=env, **pools["read"].map_batches_args())
    ds = ds.map_batches(LSSRPredictor, fn_constructor_kwargs=pkw, batch_size=rows,
                        batch_format="numpy", runtime_env=env, **pools["infer"].map_batches_args())
    return ds.map_batches(CommitPartials, fn_constructor_args=(plan.store,),
                          fn_constructor_kwargs={"storage_options": storage_options}, batch_size=rows,
                          batch_format="numpy", runtime_env=env, **pools["commit"].map_batches_args())


def infer_and_commit(plan: MapPlan, done: Mapping[int, set[str]] | None = None, *, lock: StoreLock,
                     storage_options: dict[str, Any], progress: bool = True,
                     on_commit: Callable[[dict[str, Any]], None] | None = None) -> InferResult:
    """Run stage 1 over the chip-dates not committed on the running Ray, keeping ``lock`` alive;
    ``done`` (``{ti: chip ids}``) overrides what the store says is committed (default: asked date
    by date, :func:`~lssr_ray.mapping.plan.committed_at`); ``on_commit`` gets each committed
    record (tests, monitors). Raises :class:`~lssr_ray.errors.IncompleteRunError` if a planned
    chip-date ends without a committed partial, or when nothing is committed for ``stall_timeout_s``."""
    from lssr_ray.mapping.accounting import progress_bar, stream_with_watchdog
    from lssr_ray.mapping.manifest import check_committed_counts, write_stage1_manifest

    def done_at(ti: int) -> set[str]:
        return set(done.get(ti, set())) if done is not None else committed_at(plan, ti, storage_options)

    manifest = write_stage1_manifest(plan, done_at, storage_options)
    pkw = predictor_kwargs(plan) if manifest.items else {}  # ONNX export (cached) before the clock starts
    t1 = time.perf_counter()
    computed, skipped, examples, used = 0, {}, [], {}
    if manifest.items:
        ds = _stage1_dataset(plan, manifest, pkw, storage_options)
        remaining = manifest.chip_dates

        def so_far() -> str:
            return f" ({computed} of {remaining} chip-dates of this run committed)"

        with progress_bar(remaining, "stage 1 chips", progress) as bar:
            for batch in stream_with_watchdog(lambda: ds.iter_batches(batch_size=None, batch_format="numpy"),
                                              stall_s=plan.cfg.stall_timeout_s, idle=lock.heartbeat_if_due,
                                              describe=so_far):
                cols = {k: v.tolist() for k, v in batch.items()}  # one conversion per column, not per value
                for values in zip(*cols.values()):
                    rec = dict(zip(cols, values))
                    computed += 1
                    if rec["status"] != "ok":
                        skipped[rec["reason"]] = skipped.get(rec["reason"], 0) + 1
                        if len(examples) < 20:
                            examples.append(
                                f"{rec['chip_id']} {plan.labels[int(rec['ti'])]} {rec['reason']}: {rec['detail'][:160]}")
                    else:
                        for g in str(rec["granules"]).split(","):
                            used[g] = used.get(g, 0) + 1
                    if on_commit is not None:
                        on_commit(rec)
                    bar.update(1)
                lock.heartbeat_if_due()
    seconds = time.perf_counter() - t1
    check_committed_counts(plan, storage_options)
    log.info("stage 1: %d chip-date(s) committed in %.1f s (%d already done)", computed, seconds, manifest.resumed)
    return InferResult(resumed=manifest.resumed, computed=computed, skipped=skipped, skip_examples=examples,
                       granule_use=used, seconds=seconds)


def engine_throughput(cfg: MapConfig, *, n_chips: int = 8, repeats: int = 2) -> dict[str, Any]:
    """Engine-only throughput on the run's own chips, no Ray: chips/s of
    ``LSSRPredictor.predict`` (preprocess + engine + postprocess) after one warm-up call.

    Reads up to ``n_chips`` clear chip-dates of ``cfg`` in-process, then times ``repeats``
    passes over them in batches of ``cfg.batch_size``. Compare with
    :attr:`MapSummary.stage1_chips_per_s` for the pipeline / engine ratio.
    """
    plan = plan_map(cfg)
    reader = ReadChips(plan.stage.plan, plan.stage.granules, aux=plan.stage.aux)
    rows: dict[str, list[np.ndarray]] = {}
    for item in work_items(plan, {}):
        out = reader({k: np.asarray([v]) for k, v in item.items()})
        for i in np.flatnonzero(np.asarray(out["status"]) == "ok"):
            for k in ("lr", "dem", "landcover", "sar", "month", "present"):
                rows.setdefault(k, []).append(out[k][i])
        if len(rows.get("lr", [])) >= n_chips:
            break
    if not rows:
        raise ConfigError(f"engine_throughput: no clear chip in {cfg.aoi} to time")
    batch = {k: np.stack(v[:n_chips]) for k, v in rows.items()}
    n = batch["lr"].shape[0]
    pred = LSSRPredictor(**predictor_kwargs(plan))
    bs = cfg.batch_size
    pred.predict({k: v[:bs] for k, v in batch.items()})  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        for s in range(0, n, bs):
            pred.predict({k: v[s : s + bs] for k, v in batch.items()})
    dt = time.perf_counter() - t0
    return {"engine": pred.kind, "chips": n * repeats, "seconds": dt, "chips_per_s": n * repeats / dt,
            "batch_size": bs}


__all__ = ["InferResult", "engine_throughput", "infer_and_commit", "onnx_graph", "predictor_kwargs"]
