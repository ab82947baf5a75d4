"""The last step of a mapping run, **finalize**: the store's books and completion mark, the
quicklooks, the crop_type stage (:mod:`lssr_ray.mapping.classify_stage`), the analyst views
(overviews, time-series copy: :mod:`lssr_ray.mapping.views`) and, last, ``_partials/`` removed."""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lssr_ray.mapping.classify_stage import ClassifyResult
from lssr_ray.mapping.plan import MapPlan
from lssr_ray.mapping.summary import MapSummary, modality_warnings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinalizeResult:
    """What the finalize step wrote besides the store's attributes."""

    quicklooks: list[str] = field(default_factory=list)
    """Quicklook PNGs written."""
    crop_type: ClassifyResult | None = None
    """The crop_type stage's result, or None when it was skipped (the reason is noted in the
    store's ``crop_type_note`` attribute)."""
    modalities: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per date label, predicted chips and how many had each aux layer (store ``modalities``)."""
    modality_warnings: list[str] = field(default_factory=list)
    """One line per aux layer some chips ran without (logged, and the store's ``modality_warnings``)."""


def finalize_run(plan: MapPlan, *, granule_use: Mapping[str, int], classifier: tuple[str | None, str | None],
                 storage_options: dict[str, Any]) -> FinalizeResult:
    """Mark the store completed with its chip-date counts (read from the partials), write the
    quicklooks (``cfg.quicklook``) and classify the store into ``crop_type``.

    Args:
        granule_use: chip-dates predicted from each granule id (stage 1); with ``--dates
            clearest`` the quicklook shows the most-used granules first.
        classifier: :func:`~lssr_ray.mapping.classify_stage.resolve_classifier`'s (folder or
            None, note or None).
    """
    from lssr_ray.mapping.classify_stage import classify_store
    from lssr_ray.mapping.manifest import summarize_parallel
    from lssr_ray.mapping.store import finalize_store

    cfg, chips = plan.cfg, plan.stage.plan
    counts = summarize_parallel(plan.store, len(plan.times), chips_per_date=len(chips), storage_options=storage_options)
    modalities = {plan.labels[ti]: m for ti, m in sorted(counts.pop("modalities_by_time").items())}
    missing = modality_warnings(modalities)
    for line in missing:
        log.warning("%s", line)
    finalize_store(plan.store, attrs={**counts, "modalities": modalities, "modality_warnings": missing,
                                      "chips": len(chips), "completed": True,
                                      "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")},
                   storage_options=storage_options)
    quicklooks: list[str] = []
    if cfg.quicklook:
        from lssr_ray.mapping.quicklook import write_quicklooks

        by_time = dict(plan.granules_by_time)
        if cfg.dates == "clearest":  # quicklook input: most-used granules first
            by_time[0] = sorted(by_time[0], key=lambda g: -granule_use.get(str(g.id), 0))
        quicklooks = write_quicklooks(plan.store, chips.grid, by_time, labels=plan.labels,
                                      storage_options=storage_options)
    clf_dir, clf_note = classifier
    crop = None
    if clf_dir is None:
        log.info("NOTE: %s", clf_note)
        finalize_store(plan.store, attrs={"crop_type_note": clf_note}, storage_options=storage_options)
    else:  # stage 3: classify the finished store into crop_type (+ area CSV and map PNG)
        crop = classify_store(plan.store, clf_dir, storage_options=storage_options,
                              explicit=cfg.classifier is not None, cfg=cfg)
    finish_store(plan, storage_options)
    return FinalizeResult(quicklooks=quicklooks, modalities=modalities, modality_warnings=missing, crop_type=crop)


def finish_store(plan: MapPlan, storage_options: dict[str, Any]) -> None:
    """The completed store's analyst views (:mod:`lssr_ray.mapping.views`): overviews, the
    time-series copy with ``cfg.timeseries_copy``; then ``_partials/`` removed (unless
    ``cfg.keep_partials``), last, so a run stopped before this point is still resumable."""
    from lssr_ray.config import portable_ref
    from lssr_ray.mapping.partials import remove_partials
    from lssr_ray.mapping.plan import retryable
    from lssr_ray.mapping.store import finalize_store
    from lssr_ray.mapping.views import build_overviews, write_timeseries_copy

    attrs = build_overviews(plan.store, storage_options=storage_options)
    if plan.cfg.timeseries_copy:
        attrs["timeseries_copy"] = portable_ref(write_timeseries_copy(plan.store, storage_options=storage_options))
    finalize_store(plan.store, attrs=attrs, storage_options=storage_options)
    pending = sum(len(ids) for ids in retryable(plan, storage_options).values())
    if pending:  # --resume must still find these chips' partials to read them again
        log.warning("kept %s/_partials: %d chip-date(s) were skipped for transient read errors; "
                    "rerun with --resume to retry them", plan.store, pending)
    elif not plan.cfg.keep_partials and remove_partials(plan.store, storage_options=storage_options):
        log.info("removed %s/_partials (the run is complete; --keep-partials keeps them)", plan.store)


def finished_summary(plan: MapPlan, storage_options: dict[str, Any]) -> MapSummary | None:
    """The summary of a store this run's settings already completed (``completed`` attribute,
    ``_partials/`` removed): nothing is left to compute, so a resumed run reports every chip-date
    as resumed and writes nothing. None for any other store (and with ``--overwrite``); the
    caller still checks that the run identity matches
    (:func:`~lssr_ray.mapping.pipeline.open_or_create_store`)."""
    from lssr_ray.mapping.output_target import OURS, output_state
    from lssr_ray.mapping.partials import partials_present
    from lssr_ray.mapping.store import open_store

    if plan.cfg.overwrite or output_state(plan.store, storage_options=storage_options) != OURS:
        return None
    if partials_present(plan.store, storage_options=storage_options):
        return None
    attrs = open_store(plan.store, storage_options=storage_options).attrs
    if attrs.get("completed") is not True:
        return None
    chips, nt = plan.stage.plan, len(plan.times)
    return MapSummary(store=plan.store, run_id=plan.run_id, engine=plan.engine, chips=len(chips), n_times=nt,
                      chip_dates=len(chips) * nt,
                      resumed=int(attrs.get("chip_dates_ok", 0)) + int(attrs.get("chip_dates_skipped", 0)),
                      chunk_km2=(chips.chunk_size * chips.grid.output_resolution) ** 2 / 1e6,
                      aoi_km2=chips.aoi_area_km2, warnings=list(attrs.get("warnings", [])),
                      modalities=dict(attrs.get("modalities", {})))


__all__ = ["FinalizeResult", "finalize_run", "finish_store", "finished_summary"]
