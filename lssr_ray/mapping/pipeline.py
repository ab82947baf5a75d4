"""The mapping job as a Ray Data streaming pipeline: catalog -> LSSR actors -> georeferenced Zarr.

Stage 1, per (chip, date) work item, streamed::

    from_items(block items) -> map_batches(ReadChips, actors, read_cpus)      # one read per block
                            -> map_batches(LSSRPredictor, actors, actor_cpus[, 1 GPU each])
                            -> map_batches(CommitPartials, 1 actor)           # atomic partials
                            -> driver iter_batches (ids, status and timings only: no pixels)

Stage 2, per (output chunk, date): ``from_items(chunks) -> map_batches(BlendAndWrite)``: each
chunk blends its chip's partial with its neighbours' halos and is written by exactly one
chunk-aligned region write; then the metadata is consolidated.

Bounded memory: the driver holds work-item ids and per-item records (a few hundred bytes each),
never pixels; Ray Data's streaming executor keeps a bounded number of blocks in flight, so a
larger region means more items, not more memory in flight.

Resume: every chip-date is committed atomically as a partial (:mod:`lssr_ray.mapping.partials`,
under ``<store>/_partials/t{ti:04d}``); a rerun lists the partials and skips those items, then
re-runs stage 2 over every chunk (idempotent). The store records the run identity
(:func:`run_identity`: AOI file hash, catalog, dates, grid, batch size, seed, base and adapter
hashes, engine kind, the ``--uncertainty`` switch, software version) in the ``run_config`` attribute; resuming with a
different identity is refused. The run id is the first 16 hex digits of the sha256 of that
identity (JSON, sorted keys), so a killed run and its resumption share the id and the resumed
run takes over the killed run's store lock (:class:`~lssr_ray.mapping.store.StoreLock`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.config import MapConfig
from lssr_ray.errors import ConfigError, StoreError
from lssr_ray.mapping.summary import MapSummary
from lssr_ray.mapping.udfs import (
    BlendAndWrite,
    CommitPartials,
    LSSRPredictor,
    ReadChips,
    folder_sha256,
    resolve_checkpoint,
    time_partials,
)

FORWARDED_ENV_PREFIXES = ("AWS_", "GDAL_", "CPL_", "LSSR_", "HF_")
"""Environment variables handed to Ray workers (S3 endpoint/keys for GDAL and s3fs, caches)."""
HEARTBEAT_S = 60.0
"""Seconds between store-lock heartbeats from the driver."""


@dataclass
class MapPlan:
    """Everything decided before any pixel is read (no Ray, nothing written)."""

    cfg: MapConfig
    """The run's configuration."""
    stage: Any
    """:class:`~lssr_ray.data.cube.DataStage`: AOI, granules, chip plan, aux sources."""
    store: str
    """Output store URL/path."""
    times: list[np.datetime64]
    """Store time axis (day precision)."""
    granules_by_time: dict[int, list[Any]]
    """Granules each time step chooses from (one date's, or all for ``clearest``)."""
    engine: str
    """Concrete engine kind."""
    checkpoint: str | None
    """Adapter checkpoint folder, or None for the untrained fallback."""
    identity: dict[str, Any]
    """Run identity (see :func:`run_identity`)."""
    warnings: list[str] = field(default_factory=list)
    """Warnings to print and record in the store."""
    notes: list[str] = field(default_factory=list)
    """How the inputs were read (AOI repairs, antimeridian, outside coverage): printed and
    recorded in the store's ``aoi_notes`` attribute."""

    @property
    def run_id(self) -> str:
        """sha256 of the run identity (JSON, sorted keys), first 16 hex digits."""
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def labels(self) -> dict[int, str]:
        """``{ti: "YYYY-MM-DD"}``."""
        return {i: str(t) for i, t in enumerate(self.times)}


def _is_s3(url: str | None) -> bool:
    return bool(url) and str(url).startswith("s3://")


def check_s3(*urls: str | None) -> None:
    """:class:`StorageUnreachableError` before anything is read or written if an ``s3://`` URL is
    given and the configured endpoint does not answer."""
    from lssr_ray.data.readers import check_endpoint, s3_endpoint

    if any(_is_s3(u) for u in urls):
        check_endpoint(os.environ.get("AWS_ENDPOINT_URL") or s3_endpoint())


def run_identity(cfg: MapConfig, *, aoi_bytes: bytes, base_sha256: str, adapter_sha256: str,
                 engine: str, root: Path | None = None) -> dict[str, Any]:
    """The settings that decide the output bytes (hashed into the run id, stored in the store).

    Local paths enter as :func:`~lssr_ray.config.portable_ref` (relative to the checkout
    ``root``, default the repository), so moving the checkout does not change the run id.
    """
    import lssr_ray
    from lssr_ray.config import portable_ref
    from lssr_ray.model.lssr import GRAPH_REVISION

    return {
        "aoi_sha256": hashlib.sha256(aoi_bytes).hexdigest(),
        "catalog": portable_ref(cfg.catalog, root=root),
        "start": cfg.start,
        "end": cfg.end,
        "dates": cfg.dates,
        "chip_size": cfg.grid.chip_size,
        "overlap": cfg.grid.overlap,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "base_sha256": base_sha256,
        "adapter_sha256": adapter_sha256,
        "engine": engine,
        "uncertainty": bool(cfg.uncertainty),  # adds a store variable and changes stage-1 partials
        "graph_revision": GRAPH_REVISION,
        "software_version": lssr_ray.__version__,
    }


def plan_map(cfg: MapConfig) -> MapPlan:
    """Validate the inputs and plan the run: AOI, catalog search, chips, dates, model identity.

    Raises :class:`~lssr_ray.errors.AOIError`, :class:`CoverageError` (AOI outside the catalog),
    :class:`StorageUnreachableError` (S3 endpoint down) or :class:`MissingDataError`.
    """
    from lssr_ray.data.aoi import read_aoi
    from lssr_ray.data.catalog import open_catalog
    from lssr_ray.data.cube import plan_data_stage
    from lssr_ray.infer.engine import resolve_kind
    from lssr_ray.model.base import base_fingerprint, resolve_base

    check_s3(cfg.catalog, cfg.out)
    aoi = read_aoi(cfg.aoi)
    stage = plan_data_stage(aoi, open_catalog(cfg.catalog), config=cfg.grid, start=cfg.start, end=cfg.end)
    if cfg.dates == "all":
        days = sorted({g.datetime.date() for g in stage.granules})
        by_time = {i: [g for g in stage.granules if g.datetime.date() == d] for i, d in enumerate(days)}
    else:
        days = [stage.granules[0].datetime.date()]
        by_time = {0: list(stage.granules)}
    checkpoint, warn = resolve_checkpoint(cfg.checkpoint, seed=cfg.seed)
    adapter = folder_sha256(checkpoint) if checkpoint else f"untrained-seed{cfg.seed}"
    base_sha = base_fingerprint(resolve_base(cfg.base))
    engine = resolve_kind(cfg.engine, onnx_path="graph.onnx")
    store = cfg.out or str(Path.cwd() / "out" / f"{aoi.name}.zarr")
    ident = run_identity(cfg, aoi_bytes=Path(cfg.aoi).read_bytes(), base_sha256=base_sha,
                         adapter_sha256=adapter, engine=engine)
    notes = [*stage.aoi.notes, *filter(None, [stage.coverage_note()])]
    return MapPlan(cfg=cfg, stage=stage, store=store, times=[np.datetime64(d, "D") for d in days],
                   granules_by_time=by_time, engine=engine, checkpoint=checkpoint, identity=ident,
                   warnings=[warn] if warn else [], notes=notes)


def onnx_graph(plan: MapPlan) -> bytes:
    """The exported ONNX graph of the run's model (fixed batch and chip size), cached on disk
    under ``$LSSR_CACHE/onnx/<hash>.onnx`` keyed by base, adapters, seed and shapes."""
    from lssr_ray.infer.export import export_onnx
    from lssr_ray.mapping.udfs import load_lssr_model
    from lssr_ray.model.base import default_cache_dir
    from lssr_ray.model.lssr import GRAPH_REVISION

    cfg = plan.cfg
    key = hashlib.sha256(json.dumps([plan.identity["base_sha256"], plan.identity["adapter_sha256"],
                                     cfg.seed, cfg.batch_size, cfg.grid.chip_size, GRAPH_REVISION]).encode()).hexdigest()[:20]
    path = default_cache_dir() / "onnx" / f"{key}.onnx"
    if not path.is_file():
        model = load_lssr_model(plan.checkpoint, base=cfg.base, seed=cfg.seed)
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(model, tmp, batch_size=cfg.batch_size, chip_size=cfg.grid.chip_size)
        os.replace(tmp, path)
        tmp.with_suffix(".json").unlink(missing_ok=True)
    return path.read_bytes()


def predictor_kwargs(plan: MapPlan) -> dict[str, Any]:
    """Constructor arguments of :class:`LSSRPredictor` for this run."""
    cfg = plan.cfg
    kw: dict[str, Any] = {"engine": plan.engine, "checkpoint": plan.checkpoint, "base": cfg.base, "seed": cfg.seed,
                          "batch_size": cfg.batch_size, "chip_size": cfg.grid.chip_size,
                          "uncertainty": cfg.uncertainty}
    if plan.engine not in ("torch", "bicubic"):
        kw["onnx"] = onnx_graph(plan)
    return kw


def work_items(plan: MapPlan, done: Mapping[int, set[str]]) -> list[dict[str, Any]]:
    """Read items ``{"chips", "ti", "granules"}``: one per read block and date, committed chips left out."""
    from lssr_ray.data.grid import group_chips

    items = []
    groups = group_chips(plan.stage.plan, block=plan.cfg.block)
    for ti, grans in plan.granules_by_time.items():
        gids = ",".join(str(g.id) for g in grans)
        for group in groups:
            todo = [c.id for c in group if c.id not in done.get(ti, set())]
            if todo:
                items.append({"chips": ",".join(todo), "ti": ti, "granules": gids})
    return items


_LOCAL_RAY_ENV: dict[str, str] | None = None  # forwarded env of the local Ray this module started


def _forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def _runtime_env() -> dict[str, Any]:
    """Per-actor runtime env carrying the S3/GDAL settings; empty when the workers of a local Ray
    started here already inherited the same environment (then idle workers can be reused)."""
    env = _forwarded_env()
    return {} if env == _LOCAL_RAY_ENV else {"env_vars": env}


def init_ray(cfg: MapConfig) -> bool:
    """Connect to a cluster (``cfg.ray_address``, or ``auto`` inside ``ray job submit`` where
    ``RAY_ADDRESS`` is set) or start a local Ray with this machine's CPUs. True if it started one."""
    import ray

    global _LOCAL_RAY_ENV
    if ray.is_initialized():
        return False
    _LOCAL_RAY_ENV = None
    address = cfg.ray_address or ("auto" if os.environ.get("RAY_ADDRESS") else None)
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        from lssr_ray.ray_local import start_local_ray

        # a reaper takes this local Ray (agents included) down with the driver, even after SIGKILL
        start_local_ray(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        _LOCAL_RAY_ENV = _forwarded_env()
    return True


def _open_or_create(plan: MapPlan, storage_options: Mapping[str, Any] | None) -> None:
    from lssr_ray.mapping.output_target import OURS, output_state
    from lssr_ray.mapping.store import create_store, open_store, provenance_attrs, read_layout
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
               "outside_coverage_km2": round(plan.stage.outside_km2, 4)},
    )
    create_store(url, crs=g.crs, transform=tuple(g.output_transform)[:6], shape=g.output_shape,
                 chunk=plan.stage.plan.chunk_size, times=plan.times, attrs=attrs,
                 storage_options=storage_options, overwrite=cfg.overwrite, trust_layers=trust_vars(cfg.uncertainty))


def _committed(plan: MapPlan, storage_options: Mapping[str, Any] | None) -> dict[int, set[str]]:
    """``{ti: ids of chips with a committed partial}`` (ok or skipped) for every time step."""
    from lssr_ray.mapping.partials import done_chip_ids

    return {ti: done_chip_ids(time_partials(plan.store, ti), storage_options=storage_options)
            for ti in range(len(plan.times))}


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="chip", disable=not enabled, file=sys.stderr, mininterval=1.0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def refuse_live_lock(plan: MapPlan, storage_options: Mapping[str, Any] | None = None) -> None:
    """:class:`StoreLockedError` if another live run holds the store's lock.

    Checked before the store is opened, created or overwritten, so a second run never
    re-initialises or deletes a running run's store. A lock of another run id is honoured until it
    is stale; a lock of the *same* run id (same settings) is refused only while its process is
    alive on this host, so a killed run is still resumed at once. (Same-id holders on another
    host cannot be checked and are taken over, as before.)
    """
    import socket

    from lssr_ray.errors import StoreLockedError
    from lssr_ray.mapping.store import StoreLock

    lock = StoreLock(plan.store, plan.run_id, storage_options=dict(storage_options or {}))
    rec = lock.read()
    if rec is None:
        return
    age = time.time() - float(rec.get("heartbeat", 0))
    rid, pid, host = rec.get("run_id"), int(rec.get("pid", -1)), rec.get("host")
    if rid != plan.run_id and age <= lock.stale_after_s:
        raise StoreLockedError(
            f"store {plan.store} is locked by run {rid!r} (host {host}, pid {pid}, heartbeat {age:.0f} s ago); "
            f"wait for it to finish, use another --out, or take it over after {lock.stale_after_s:.0f} s "
            "without a heartbeat")
    if rid == plan.run_id and host == socket.gethostname() and pid != os.getpid() and _pid_alive(pid):
        raise StoreLockedError(
            f"store {plan.store} is being written by run {rid!r} with the same settings (pid {pid} on this "
            "host, still running); wait for it to finish or stop it, then rerun to resume")


def run_map(cfg: MapConfig, *, progress: bool = True, storage_options: Mapping[str, Any] | None = None,
            on_commit: Callable[[dict[str, Any]], None] | None = None,
            confirm: Callable[[str], bool] | None = None) -> MapSummary:
    """Map ``cfg.aoi`` into the store; returns the run's :class:`MapSummary` (see :func:`_run_map`).

    A run estimated longer than ``cfg.confirm_over_s`` starts only with ``cfg.yes`` or when
    ``confirm(question)`` (a terminal prompt; None = non-interactive) returns True.

    A failure while an ``s3://`` catalog or store endpoint is down is raised as
    :class:`~lssr_ray.errors.StorageUnreachableError` naming the endpoint (the original error
    chained), not as the storage client's or Ray's own exception, with resume advice that holds
    for that storage (:func:`resume_advice`).
    """
    from lssr_ray.errors import StorageUnreachableError

    advice = resume_advice(cfg, storage_options)  # asked now: after a failure the endpoint may be gone
    try:
        return _run_map(cfg, progress=progress, storage_options=storage_options, on_commit=on_commit,
                        confirm=confirm)
    except StorageUnreachableError:
        raise
    except Exception as exc:
        if _is_s3(cfg.catalog) or _is_s3(cfg.out):
            try:
                check_s3(cfg.catalog, cfg.out)
            except StorageUnreachableError as down:
                raise StorageUnreachableError(
                    f"{down} (the run stopped with {type(exc).__name__}; {advice})") from exc
        raise


def resume_advice(cfg: MapConfig, storage_options: Mapping[str, Any] | None = None) -> str:
    """What a user can do after a storage failure, true for the store's storage: durable storage
    keeps the committed chips for ``--resume``; the loopback test S3 server keeps nothing across
    a restart (:func:`lssr_ray.data.s3server.in_memory_server`)."""
    from lssr_ray.data import s3server

    if _is_s3(cfg.out):
        endpoint = dict(storage_options or {}).get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
        if s3server.in_memory_server(endpoint):
            return f"{s3server.IN_MEMORY_NOTE}; if it did not restart, rerun with --resume when it is back"
    return "committed chips are kept: rerun with --resume when the endpoint is back"


def _run_map(cfg: MapConfig, *, progress: bool = True, storage_options: Mapping[str, Any] | None = None,
             on_commit: Callable[[dict[str, Any]], None] | None = None,
             confirm: Callable[[str], bool] | None = None) -> MapSummary:
    """Map ``cfg.aoi`` into the store; returns the run's :class:`MapSummary`.

    Ray is started (or joined) if it is not running yet and left running for the caller
    (jobs shut it down). ``on_commit`` is called with each committed record (tests, monitors).
    """
    import ray

    from lssr_ray.mapping.accounting import (
        check_accounted,
        confirm_run,
        stream_with_watchdog,
        unaccounted,
    )
    from lssr_ray.mapping.store import StoreLock, finalize_store

    t0 = time.perf_counter()
    storage_options = dict(storage_options or {})  # the store helpers want a dict for s3:// (not None)
    plan = plan_map(cfg)
    from lssr_ray.mapping.classify_stage import classify_store, resolve_classifier

    clf_dir, clf_note = resolve_classifier(cfg.classifier)  # a bad folder fails before any work
    from lssr_ray.mapping.preflight import preflight

    preflight(plan, storage_options)  # output, engine, checkpoint/base, catalog CRS: before any write or Ray
    for w in plan.warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    for n in plan.notes:  # every repair or reinterpretation of the input is told, not hidden
        print(f"NOTE: {n}", file=sys.stderr)
    if progress:  # what a user sees first: the chip plan and the dates
        print(plan.stage.plan.summary(), flush=True)
        print(f"{len(plan.times)} date(s): {', '.join(str(t) for t in plan.times)}", flush=True)
    chip_ids = [c.id for c in plan.stage.plan.chips]
    todo = len(unaccounted(chip_ids, {} if cfg.overwrite else _committed(plan, storage_options), len(plan.times)))
    confirm_run(todo, len(chip_ids), len(plan.times), cfg, confirm)  # before anything is written
    refuse_live_lock(plan, storage_options)  # before the store is created or overwritten
    _open_or_create(plan, storage_options)
    chips = plan.stage.plan
    nt = len(plan.times)
    core = chips.chunk_size
    summary = MapSummary(store=plan.store, run_id=plan.run_id, engine=plan.engine, chips=len(chips),
                         n_times=nt, chip_dates=len(chips) * nt, chunk_km2=(core * chips.grid.output_resolution) ** 2 / 1e6,
                         aoi_km2=chips.aoi_area_km2, warnings=list(plan.warnings))
    with StoreLock(plan.store, plan.run_id, storage_options=storage_options) as lock:
        done = _committed(plan, storage_options)
        summary.resumed = sum(len(v & {c.id for c in chips.chips}) for v in done.values())
        items = work_items(plan, done)
        init_ray(cfg)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        env = _runtime_env()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        n_actors = cfg.num_actors or max(1, gpus)
        last_beat = time.monotonic()

        def beat() -> None:
            nonlocal last_beat
            if time.monotonic() - last_beat > HEARTBEAT_S:
                lock.heartbeat()
                last_beat = time.monotonic()

        pkw = predictor_kwargs(plan) if items else {}  # ONNX export (cached) before the clock starts
        t1 = time.perf_counter()
        remaining = summary.chip_dates - summary.resumed
        if items:
            used: dict[str, int] = {}
            # about one item per block keeps results streaming out per read block; capped for huge regions
            ds = ray.data.from_items(items, override_num_blocks=min(len(items), 4096))
            ds = ds.map_batches(ReadChips, fn_constructor_kwargs={"plan": chips, "granules": plan.stage.granules,
                                                                  "aux": plan.stage.aux},
                                batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cfg.read_actors),
                                num_cpus=cfg.read_cpus, runtime_env=env)
            ds = ds.map_batches(LSSRPredictor, fn_constructor_kwargs=pkw, batch_size=cfg.batch_size,
                                batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n_actors),
                                num_cpus=cfg.actor_cpus, num_gpus=1 if gpus else 0, runtime_env=env)
            ds = ds.map_batches(CommitPartials, fn_constructor_args=(plan.store,),
                                fn_constructor_kwargs={"storage_options": storage_options}, batch_size=cfg.batch_size,
                                batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
                                num_cpus=min(0.25, cfg.read_cpus), runtime_env=env)
            def so_far() -> str:
                return f" ({summary.computed} of {remaining} chip-dates of this run committed)"

            with _progress(remaining, "stage 1 chips", progress) as bar:
                for batch in stream_with_watchdog(lambda: ds.iter_batches(batch_size=None, batch_format="numpy"),
                                                  stall_s=cfg.stall_timeout_s, idle=beat, describe=so_far):
                    for i in range(len(batch["chip_id"])):
                        rec = {k: batch[k][i].item() if hasattr(batch[k][i], "item") else batch[k][i] for k in batch}
                        summary.computed += 1
                        if rec["status"] != "ok":
                            summary.skipped[rec["reason"]] = summary.skipped.get(rec["reason"], 0) + 1
                            if len(summary.skip_examples) < 20:
                                summary.skip_examples.append(
                                    f"{rec['chip_id']} {plan.labels[int(rec['ti'])]} {rec['reason']}: {rec['detail'][:160]}")
                        else:
                            for g in str(rec["granules"]).split(","):
                                used[g] = used.get(g, 0) + 1
                        if on_commit is not None:
                            on_commit(rec)
                        bar.update(1)
                    beat()
            if cfg.dates == "clearest":  # quicklook input: most-used granules first
                plan.granules_by_time[0].sort(key=lambda g: -used.get(str(g.id), 0))
        summary.stage1_s = time.perf_counter() - t1
        # completion is what the partials say, checked against the plan (not the executor's word)
        check_accounted(chip_ids, _committed(plan, storage_options), nt, plan.labels)

        t2 = time.perf_counter()
        chunks = [{"row": c.row, "col": c.col, "ti": ti} for ti in range(nt) for c in chips.chips]
        n_blend = max(1, min(8, int(ray.cluster_resources().get("CPU", 1)), len(chunks) // 16))
        ds2 = ray.data.from_items(chunks, override_num_blocks=max(1, min(len(chunks), 4 * n_blend)))
        ds2 = ds2.map_batches(BlendAndWrite, fn_constructor_args=(plan.store,),
                              fn_constructor_kwargs={"core": core, "halo": cfg.grid.overlap // 2 * chips.grid.scale,
                                                     "storage_options": storage_options},
                              batch_size=8, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n_blend),
                              num_cpus=cfg.read_cpus, runtime_env=env)
        with _progress(len(chunks), "stage 2 chunks", progress) as bar:
            for batch in ds2.iter_batches(batch_size=None, batch_format="numpy"):
                summary.chunks_written += int(np.asarray(batch["written"]).sum())
                bar.update(len(batch["written"]))
                beat()
        summary.stage2_s = time.perf_counter() - t2
        from lssr_ray.mapping.partials import summarize

        counts = {"chip_dates_ok": 0, "chip_dates_skipped": 0, "skip_reasons": {}}
        for ti in range(nt):
            s = summarize(time_partials(plan.store, ti), storage_options=storage_options)
            counts["chip_dates_ok"] += s["chips_ok"]
            counts["chip_dates_skipped"] += s["chips_skipped"]
            for k, v in s["skip_reasons"].items():
                counts["skip_reasons"][k] = counts["skip_reasons"].get(k, 0) + v
        finalize_store(plan.store, attrs={**counts, "chips": len(chips), "completed": True,
                                          "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")},
                       storage_options=storage_options)
        if cfg.quicklook:
            from lssr_ray.mapping.quicklook import write_quicklooks

            summary.quicklooks = write_quicklooks(plan.store, chips.grid, plan.granules_by_time,
                                                  labels=plan.labels, storage_options=storage_options)
        if clf_dir is None:
            print(f"NOTE: {clf_note}", file=sys.stderr)
            finalize_store(plan.store, attrs={"crop_type_note": clf_note}, storage_options=storage_options)
            summary.crop_type = None  # type: ignore[attr-defined]
        else:  # stage 3: classify the finished store into crop_type (+ area CSV and map PNG)
            summary.crop_type = classify_store(plan.store, clf_dir,  # type: ignore[attr-defined]
                                               storage_options=storage_options)
    summary.wall_s = time.perf_counter() - t0
    return summary


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


def config_from(cfg: MapConfig, **changes: Any) -> MapConfig:
    """A copy of ``cfg`` with ``changes`` (validated)."""
    return dataclasses.replace(cfg, **changes)


__all__ = [
    "FORWARDED_ENV_PREFIXES",
    "MapPlan",
    "check_s3",
    "config_from",
    "engine_throughput",
    "init_ray",
    "onnx_graph",
    "plan_map",
    "predictor_kwargs",
    "refuse_live_lock",
    "resume_advice",
    "run_identity",
    "run_map",
    "work_items",
]
