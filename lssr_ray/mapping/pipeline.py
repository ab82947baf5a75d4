"""A mapping run, AOI -> georeferenced Zarr store, as four steps, each in its own module:

1. **plan** (:mod:`lssr_ray.mapping.plan`): inputs validated, chips, dates, run identity; then
   the driver's checks (:mod:`lssr_ray.mapping.preflight`), the cost confirmation, the store lock
   (:mod:`lssr_ray.mapping.lock`) and the store created or reopened (:func:`open_or_create_store`);
2. **infer and commit** (:mod:`lssr_ray.mapping.stage_infer`): Ray Data read -> LSSR -> one
   atomic partial per chip and date;
3. **blend and write** (:mod:`lssr_ray.mapping.stage_blend`): one region write per output chunk;
4. **finalize** (:mod:`lssr_ray.mapping.finalize`): counts and completion mark, quicklooks,
   crop_type.

:func:`run_map` runs them in order and returns a :class:`~lssr_ray.mapping.summary.MapSummary`;
printing it is the caller's. A rerun with the same settings resumes: committed chip-dates are
left out of stage 1 and stage 2 runs again over every chunk (idempotent).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lssr_ray.config import MapConfig
from lssr_ray.errors import AuthenticationError, ConfigError, StoreError, user_error
from lssr_ray.fileio import check_reachable, endpoint_for, is_s3
from lssr_ray.mapping.plan import MapPlan, pending_chip_dates, plan_map
from lssr_ray.mapping.summary import MapSummary

log = logging.getLogger(__name__)


def run_map(cfg: MapConfig, *, progress: bool = True, storage_options: Mapping[str, Any] | None = None,
            on_commit: Callable[[dict[str, Any]], None] | None = None,
            confirm: Callable[[str], bool] | None = None) -> MapSummary:
    """Map ``cfg.aoi`` into the store; returns the run's :class:`MapSummary` (see :func:`_run_map`).

    A run estimated longer than ``cfg.confirm_over_s`` starts only with ``cfg.yes`` or when
    ``confirm(question)`` (a terminal prompt; None = non-interactive) returns True.

    A failure while an ``s3://`` catalog or store endpoint is down is raised as
    :class:`~lssr_ray.errors.StorageUnreachableError` naming the endpoint (the original error
    chained), not as the storage client's or Ray's own exception, with resume advice that holds
    for that storage (:func:`resume_advice`). An authentication failure in a Ray worker is raised
    as the :class:`~lssr_ray.errors.AuthenticationError` itself (it names the fix).
    """
    from lssr_ray.errors import StorageUnreachableError

    advice = resume_advice(cfg, storage_options)  # asked now: after a failure the endpoint may be gone
    try:
        return _run_map(cfg, progress=progress, storage_options=storage_options, on_commit=on_commit,
                        confirm=confirm)
    except (StorageUnreachableError, AuthenticationError):
        raise
    except Exception as exc:
        if isinstance(user_error(exc), AuthenticationError):
            raise user_error(exc) from exc
        if is_s3(cfg.catalog) or is_s3(cfg.out):
            try:
                check_reachable(cfg.catalog, cfg.out)
            except StorageUnreachableError as down:
                raise StorageUnreachableError(
                    f"{down} (the run stopped with {type(exc).__name__}; {advice})") from exc
        raise


def resume_advice(cfg: MapConfig, storage_options: Mapping[str, Any] | None = None) -> str:
    """What a user can do after a storage failure, true for the store's storage: durable storage
    keeps the committed chips for ``--resume``; the loopback test S3 server keeps nothing across
    a restart (:func:`lssr_ray.data.s3server.in_memory_server`)."""
    from lssr_ray.data import s3server

    if is_s3(cfg.out) and s3server.in_memory_server(endpoint_for(cfg.out, storage_options)):
        return f"{s3server.IN_MEMORY_NOTE}; if it did not restart, rerun with --resume when it is back"
    return "committed chips are kept: rerun with --resume when the endpoint is back"


def _tell(plan: MapPlan, progress: bool) -> None:
    for w in plan.warnings:
        log.warning("%s", w)
    for n in plan.notes:  # every repair or reinterpretation of the input is told, not hidden
        log.info("NOTE: %s", n)
    if progress:  # what a user sees first: the chip plan and the dates
        log.info("%s", plan.stage.plan.summary())
        log.info("%d date(s): %s", len(plan.times), ", ".join(str(t) for t in plan.times))


def _run_map(cfg: MapConfig, *, progress: bool = True, storage_options: Mapping[str, Any] | None = None,
             on_commit: Callable[[dict[str, Any]], None] | None = None,
             confirm: Callable[[str], bool] | None = None) -> MapSummary:
    """Map ``cfg.aoi`` into the store; returns the run's :class:`MapSummary`.

    Ray is started (or joined) if it is not running yet and left running for the caller
    (jobs shut it down). ``on_commit`` is called with each committed record (tests, monitors).
    """
    import ray

    from lssr_ray.credentials import configure_archive_access
    from lssr_ray.mapping.accounting import confirm_run
    from lssr_ray.mapping.classify_stage import resolve_classifier
    from lssr_ray.mapping.finalize import finalize_run, finished_summary
    from lssr_ray.mapping.lock import StoreLock
    from lssr_ray.mapping.output_target import check_out_shared
    from lssr_ray.mapping.preflight import preflight
    from lssr_ray.mapping.ray_env import init_ray
    from lssr_ray.mapping.stage_blend import blend_and_write
    from lssr_ray.mapping.stage_infer import infer_and_commit

    t0 = time.perf_counter()
    so = dict(storage_options or {})  # the store helpers want a dict for s3:// (not None)
    configure_archive_access()  # this process's own Earthdata credentials (each Ray worker sets up its own)
    plan = plan_map(cfg)
    # a bad folder, or the bundled classifier outside its region/season, fails before any work
    classifier = resolve_classifier(cfg.classifier, grid=plan.stage.plan.grid, times=plan.times)
    preflight(plan, so)  # output, engine, checkpoint/base, catalog CRS: before any write or Ray
    _tell(plan, progress)
    nt = len(plan.times)
    finished = finished_summary(plan, so)  # completed, _partials/ removed: nothing left to compute
    if finished is not None or cfg.overwrite:
        todo, retry = (0 if finished is not None else len(plan.chip_ids) * nt), 0
    else:
        todo, retry = pending_chip_dates(plan, so)  # counted date by date, no set over the whole run
    confirm_run(todo, len(plan.chip_ids), nt, cfg, confirm)  # before anything is written
    lock = StoreLock(plan.store, plan.run_id, storage_options=so)
    lock.refuse_if_live()  # before the store is created or overwritten
    open_or_create_store(plan, so)
    if finished is not None:  # (its run identity was just checked)
        return dataclasses.replace(finished, wall_s=time.perf_counter() - t0)
    with lock:
        if retry:
            log.info("retrying %d chip-date(s) skipped for transient read errors", retry)
        init_ray(cfg)
        check_out_shared(plan.store)  # multi-node: a local --out every node sees, or refused before any work
        ray.data.DataContext.get_current().enable_progress_bars = False
        infer = infer_and_commit(plan, lock=lock, storage_options=so, progress=progress, on_commit=on_commit)
        if infer.skipped.get("transient_read"):
            log.warning("%d chip-date(s) skipped for transient read errors: rerun with --resume to retry them",
                        infer.skipped["transient_read"])
        blend = blend_and_write(plan, lock=lock, storage_options=so, progress=progress)
        with lock.kept_alive():  # finalize's Ray Data stages (crop type, overviews) do not loop here
            final = finalize_run(plan, granule_use=infer.granule_use, classifier=classifier, storage_options=so)
    chips = plan.stage.plan
    return MapSummary(
        store=plan.store, run_id=plan.run_id, engine=plan.engine, chips=len(chips), n_times=nt,
        chip_dates=len(chips) * nt, computed=infer.computed, resumed=infer.resumed, skipped=infer.skipped,
        skip_examples=infer.skip_examples, chunks_written=blend.chunks_written,
        chunk_km2=(chips.chunk_size * chips.grid.output_resolution) ** 2 / 1e6, aoi_km2=chips.aoi_area_km2,
        wall_s=time.perf_counter() - t0, stage1_s=infer.seconds, stage2_s=blend.seconds,
        quicklooks=final.quicklooks, warnings=[*plan.warnings, *final.modality_warnings], crop_type=final.crop_type,
        modalities=final.modalities)


def open_or_create_store(plan: MapPlan, storage_options: Mapping[str, Any] | None) -> None:
    """Create the run's store (template and provenance attributes), or check that the existing
    store of this project may be resumed by this run: ``--resume``, the same run identity and
    the same grid; a :class:`ConfigError` / :class:`StoreError` otherwise."""
    from lssr_ray.data.mosaic import MOSAIC_VERSION
    from lssr_ray.mapping.output_target import OURS, output_state
    from lssr_ray.mapping.provenance import provenance_attrs
    from lssr_ray.mapping.store import create_store, open_store, read_layout
    from lssr_ray.mapping.trust_layers import trust_vars

    cfg, url = plan.cfg, plan.store
    if output_state(url, storage_options=storage_options) == OURS and not cfg.overwrite:
        if not cfg.resume:
            raise StoreError(f"store {url} exists; pass --resume to continue it or --overwrite to replace it")
        attrs = open_store(url, storage_options=storage_options).attrs
        old = json.loads(attrs.get("run_config", "{}"))
        diff = sorted(k for k in set(old) | set(plan.identity) if old.get(k) != plan.identity.get(k))
        if diff:
            raise ConfigError(
                f"cannot resume {url}: its run settings differ in {diff} "
                f"(store: {[old.get(k) for k in diff]}, now: {[plan.identity.get(k) for k in diff]}); "
                "use the same settings, another --out, or --overwrite"
            )
        planned, stored = tuple(plan.stage.plan.grid.output_shape), read_layout(url, storage_options=storage_options).shape
        if tuple(stored) != planned:  # e.g. a store planned over the whole AOI before chips followed coverage
            raise ConfigError(f"cannot resume {url}: its grid is {tuple(stored)} px, this run plans {planned} px; "
                              "use another --out or --overwrite")
        return
    g = plan.stage.plan.grid
    attrs = provenance_attrs(
        [str(x.id) for x in plan.stage.granules], plan.identity["base_sha256"],
        adapter_hash=plan.identity["adapter_sha256"], engine=plan.engine,
        extra={"run_config": json.dumps(plan.identity, sort_keys=True), "run_id": plan.run_id,
               "time_mode": plan.cfg.dates, "chip_size": plan.cfg.grid.chip_size, "overlap": plan.cfg.grid.overlap,
               "aoi": Path(plan.cfg.aoi).name, "warnings": list(plan.warnings), "aoi_notes": list(plan.notes),
               "outside_coverage_km2": round(plan.stage.outside_km2, 4), "mosaic_version": MOSAIC_VERSION},
    )
    create_store(url, crs=g.crs, transform=tuple(g.output_transform)[:6], shape=g.output_shape,
                 chunk=plan.stage.plan.chunk_size, times=plan.times, attrs=attrs,
                 storage_options=storage_options, overwrite=cfg.overwrite, trust_layers=trust_vars(cfg.uncertainty),
                 time_coords=plan.time_coords)


def config_from(cfg: MapConfig, **changes: Any) -> MapConfig:
    """A copy of ``cfg`` with ``changes`` (validated)."""
    return dataclasses.replace(cfg, **changes)


__all__ = ["config_from", "open_or_create_store", "resume_advice", "run_map"]
