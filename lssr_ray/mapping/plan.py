"""Step 1 of a mapping run, **plan**: everything decided before any pixel is read.

:func:`plan_map` validates the inputs and fixes the run: AOI, catalog search, chips, the store's
time axis, the model identity and the run id; nothing is written and Ray is not started.
:func:`work_items` turns a plan and what is already committed into stage 1's work items.

The store records the run identity (:func:`run_identity`: AOI file hash, catalog, dates, grid,
batch size, seed, base and adapter hashes, engine kind, the ``--uncertainty`` switch, store
format, software version) in its ``run_config`` attribute; resuming with a different identity is refused. The run
id is the first 16 hex digits of the sha256 of that identity (JSON, sorted keys), so a killed run
and its resumption share the id and the resumed run takes over the killed run's store lock
(:class:`~lssr_ray.mapping.lock.StoreLock`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.config import MapConfig
from lssr_ray.fileio import check_reachable


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
    """Store time axis (day precision): local solar days (:func:`lssr_ray.data.mosaic.solar_day`)."""
    granules_by_time: dict[int, list[Any]]
    """Granules each time step fuses (one solar day's), or all for ``clearest`` (each chip then
    takes its clearest day's mosaic)."""
    engine: str
    """Concrete engine kind."""
    checkpoint: str | None
    """Adapter checkpoint folder, or None for the untrained fallback."""
    identity: dict[str, Any]
    """Run identity (see :func:`run_identity`)."""
    warnings: list[str] = field(default_factory=list)
    """Warnings to tell and record in the store."""
    notes: list[str] = field(default_factory=list)
    """How the inputs were read (AOI repairs, antimeridian, outside coverage): told and
    recorded in the store's ``aoi_notes`` attribute."""

    @property
    def run_id(self) -> str:
        """sha256 of the run identity (JSON, sorted keys), first 16 hex digits."""
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def labels(self) -> dict[int, str]:
        """``{ti: "YYYY-MM-DD"}``."""
        return {i: str(t) for i, t in enumerate(self.times)}

    @property
    def time_coords(self) -> dict[str, list[str]]:
        """Store coordinates along ``time``: ``sensor`` and ``granules`` feeding each step's mosaic."""
        from lssr_ray.data.mosaic import time_provenance

        return time_provenance(self.granules_by_time)

    @property
    def chip_ids(self) -> list[str]:
        """Ids of the planned chips, plan order."""
        return [c.id for c in self.stage.plan.chips]


def run_identity(cfg: MapConfig, *, aoi_bytes: bytes, base_sha256: str, adapter_sha256: str,
                 engine: str, root: Path | None = None) -> dict[str, Any]:
    """The settings that decide the output bytes (hashed into the run id, stored in the store).

    Local paths enter as :func:`~lssr_ray.config.portable_ref` (relative to the checkout
    ``root``, default the repository), so moving the checkout does not change the run id.
    """
    import lssr_ray
    from lssr_ray.config import portable_ref
    from lssr_ray.mapping.output_target import STORE_FORMAT_VERSION
    from lssr_ray.model.lssr import GRAPH_REVISION

    aux = {}  # only when set, so runs on the archive's own aux layers keep their run id
    if cfg.aux_stac:
        aux = {"aux_stac": portable_ref(cfg.aux_stac, root=root), "aux_collections": cfg.aux_collections()}
    if cfg.precision != "auto":  # a reduced GPU precision changes the output bytes (auto keeps old run ids)
        aux["precision"] = cfg.precision
    return {
        **aux,
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
        "store_format": STORE_FORMAT_VERSION,  # the store's layout and encodings (crop_type fill, overviews)
        "software_version": lssr_ray.__version__,
    }


def data_stage(cfg: MapConfig, aoi: Any) -> Any:
    """The catalog search over ``aoi`` with the run's dates, asset access, grid and aux sources:
    a :class:`~lssr_ray.data.cube.DataStage` (the one place a config becomes a data stage)."""
    from lssr_ray.data.catalog import open_catalog
    from lssr_ray.data.cube import plan_data_stage

    return plan_data_stage(aoi, open_catalog(cfg.catalog, asset_access=cfg.asset_access), config=cfg.grid,
                           start=cfg.start, end=cfg.end, aux_stac=cfg.aux_stac,
                           aux_collections=cfg.aux_collections())


def plan_map(cfg: MapConfig) -> MapPlan:
    """Validate the inputs and plan the run: AOI, catalog search, chips, dates, model identity.

    Raises :class:`~lssr_ray.errors.AOIError`, :class:`CoverageError` (AOI outside the catalog),
    :class:`StorageUnreachableError` (S3 endpoint down) or :class:`MissingDataError`.
    """
    from lssr_ray.data.aoi import read_aoi
    from lssr_ray.data.mosaic import group_by_solar_day
    from lssr_ray.infer.factory import resolve_kind
    from lssr_ray.model.checkpoint import resolve_checkpoint

    check_reachable(cfg.catalog, cfg.out)
    aoi = read_aoi(cfg.aoi)
    stage = data_stage(cfg, aoi)
    by_day = group_by_solar_day(stage.granules)  # a time step is a local solar day, not a UTC date
    if cfg.dates == "all":
        days = list(by_day)
        by_time = {i: grans for i, grans in enumerate(by_day.values())}
    else:
        days = [next(iter(by_day))]
        by_time = {0: list(stage.granules)}
    ref = resolve_checkpoint(cfg.checkpoint, base=cfg.base, seed=cfg.seed)
    checkpoint, warn = ref.path, ref.warning
    adapter, base_sha = ref.adapter_sha256(), ref.base_sha256()
    engine = resolve_kind(cfg.engine)  # "auto" means the exported graph: onnx_graph() makes it
    store = cfg.out or str(Path.cwd() / "out" / f"{aoi.name}.zarr")
    ident = run_identity(cfg, aoi_bytes=Path(cfg.aoi).read_bytes(), base_sha256=base_sha,
                         adapter_sha256=adapter, engine=engine)
    notes = [*stage.aoi.notes, *filter(None, [stage.coverage_note()])]
    return MapPlan(cfg=cfg, stage=stage, store=store, times=[np.datetime64(d, "D") for d in days],
                   granules_by_time=by_time, engine=engine, checkpoint=checkpoint, identity=ident,
                   warnings=[warn] if warn else [], notes=notes)


def committed_at(plan: MapPlan, ti: int, storage_options: Mapping[str, Any] | None, *,
                 with_retryable: bool = False) -> set[str]:
    """Ids of chips done at time step ``ti``: a committed partial, ok or skipped, but not a skip a
    resumed run retries (``transient_read``) unless ``with_retryable`` (accounting: every planned
    chip-date has a partial). One date's set: a run asks date by date."""
    from lssr_ray.mapping.partials import done_chip_ids, retryable_chip_ids

    done = done_chip_ids(plan.store, ti, storage_options=storage_options)
    if not with_retryable:
        done -= retryable_chip_ids(plan.store, ti, storage_options=storage_options)
    return done


def committed(plan: MapPlan, storage_options: Mapping[str, Any] | None, *,
              with_retryable: bool = False) -> dict[int, set[str]]:
    """``{ti: ids of chips done}`` for every time step (:func:`committed_at` of each date; small
    runs and tests: a run's driver asks date by date)."""
    return {ti: committed_at(plan, ti, storage_options, with_retryable=with_retryable) for ti in range(len(plan.times))}


def retryable(plan: MapPlan, storage_options: Mapping[str, Any] | None) -> dict[int, set[str]]:
    """``{ti: ids of chips skipped for a transient read error}``: a resumed run reads them again."""
    from lssr_ray.mapping.partials import retryable_chip_ids

    return {ti: retryable_chip_ids(plan.store, ti, storage_options=storage_options) for ti in range(len(plan.times))}


def pending_chip_dates(plan: MapPlan, storage_options: Mapping[str, Any] | None) -> tuple[int, int]:
    """``(chip-dates to compute, of them transient skips to retry)``, counted date by date."""
    from lssr_ray.mapping.partials import retryable_chip_ids

    todo = retry = 0
    for ti in range(len(plan.times)):
        again = len(retryable_chip_ids(plan.store, ti, storage_options=storage_options))
        todo += len(plan.chip_ids) - len(committed_at(plan, ti, storage_options, with_retryable=True)) + again
        retry += again
    return todo, retry


def date_work_items(groups: Sequence[Sequence[Any]], ti: int, done: Container[str]) -> Iterator[dict[str, Any]]:
    """Stage-1 items ``{"chips", "ti"}`` of one time step: one per read block (``groups``:
    :func:`~lssr_ray.data.grid.group_chips`) with chips not in ``done``, streamed."""
    for group in groups:
        todo = [c.id for c in group if c.id not in done]
        if todo:
            yield {"chips": ",".join(todo), "ti": int(ti)}


def work_items(plan: MapPlan, done: Mapping[int, set[str]]) -> list[dict[str, Any]]:
    """Read items ``{"chips", "ti", "granules"}``: one per read block and date, chips in ``done``
    (:func:`committed`: transient skips are not done, so they are read again) left out. A list
    for small runs and tests; a run streams :func:`date_work_items` into the store's manifest
    (:mod:`lssr_ray.mapping.manifest`)."""
    from lssr_ray.data.grid import group_chips

    groups = group_chips(plan.stage.plan, block=plan.cfg.block)
    return [{**item, "granules": ",".join(str(g.id) for g in grans)}
            for ti, grans in plan.granules_by_time.items() for item in date_work_items(groups, ti, done.get(ti, set()))]


__all__ = ["MapPlan", "committed", "committed_at", "data_stage", "date_work_items", "pending_chip_dates", "plan_map",
           "retryable", "run_identity", "work_items"]
