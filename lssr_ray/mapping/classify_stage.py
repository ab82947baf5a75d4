"""The last stage of map_region: classify the super-resolved store into a ``crop_type`` layer.

After the store is finalized, every output chunk's pixel time series (the store's
``reflectance`` over its whole time axis, NaN where ``valid == 0``) becomes season features
(:func:`lssr_ray.classify.features.season_features`, the same function and settings the
bundled classifier was trained with), a LightGBM :class:`~lssr_ray.classify.model.CropClassifier`
predicts WorldCereal crop-type codes, and the result is written into the same Zarr:

    crop_type   uint16 (y, x) on the reflectance grid, chunks (C, C), CF ``grid_mapping``
                ``spatial_ref``; 0 = nodata (no valid input on any date); attribute
                ``class_table`` = JSON ``{"codes": [...], "names": [...], "nodata": 0}``

with one chunk-aligned region write per chunk, then the metadata is consolidated again.
Next to the store (``<store without .zarr>_croptype/``): ``crop_area_ha.csv`` (per-class
pixels and hectares, :func:`lssr_ray.classify.maps.write_area_csv_from_counts`) and
``crop_type.png`` (map with legend). GDAL opens the layer as ``ZARR:"<store>":/crop_type``.

The chunks are classified by a Ray Data stage (:mod:`lssr_ray.mapping.stage_classify`); the
driver keeps no array the size of the map (a state's map is gigabytes): the area table is reduced
from the chunks' per-class counts and the PNG drawn from a decimated overview of at most
:data:`~lssr_ray.mapping.stage_classify.MAP_MAX_PX` pixels on its long side.

Season: the classifier's ``meta["features"]`` records ``n_months`` and ``quantiles``; its
``meta["scope"]`` records the region, season and classes it was trained on
(:mod:`lssr_ray.classify.scope`). Before any pixel the stage checks the store against that scope
(outside it: a ``ConfigError`` for the bundled default, a ``crop_type_warnings`` entry for an
explicit ``--classifier``) and takes the season starting in the classifier's first month that
holds the store's last date, so a store of another year or of a few months fills the slots of
its calendar months. A model without a scope keeps the old rule (``n_months`` ending with the
store's last date) and is applied with a warning.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lssr_ray.classify.scope import (
    check_classifier_applies,
    check_scope,
    grid_bbox_wgs84,
    read_scope,
)
from lssr_ray.classify.scope import (
    season_start as season_start_for,  # the one season rule, kept under this name
)
from lssr_ray.config import CROP_CLASSIFIER_DIR, MapConfig, portable_ref
from lssr_ray.errors import MissingDataError
from lssr_ray.fileio import filesystem, settings_for, zarr_store
from lssr_ray.mapping.stage_classify import (
    CROP_TYPE_VAR,
    MAP_MAX_PX,
    check_feature_names,
    store_features,
)

log = logging.getLogger(__name__)

__all__ = [
    "CROP_TYPE_VAR",
    "FEATURE_SETTINGS",
    "ClassifyResult",
    "classify_store",
    "resolve_classifier",
    "season_start_for",
    "store_features",
]

FEATURE_SETTINGS: dict[str, Any] = {"n_months": 12, "quantiles": [0.1, 0.5, 0.9]}
"""Default season-feature settings (a model's ``meta["features"]`` overrides them)."""


@dataclass
class ClassifyResult:
    """What :func:`classify_store` wrote."""

    store: str
    """The store (now holding ``crop_type``)."""
    classifier: str
    """Classifier folder used."""
    season_start: str
    """First month of the season, ``YYYY-MM``."""
    area_csv: str
    """Per-class area CSV (hectares)."""
    png: str
    """Map PNG with legend."""
    classified_px: int = 0
    """Pixels given a class (non-zero crop_type)."""
    classes: dict[str, int] = field(default_factory=dict)
    """Pixels per class name."""
    warnings: list[str] = field(default_factory=list)
    """Scope warnings recorded in the store (``crop_type_warnings``)."""


def resolve_classifier(option: str | None, *, grid: Any = None,
                       times: Any = None) -> tuple[str | None, str | None]:
    """``--classifier`` value -> (folder or None, note or None).

    ``None``: the bundled :data:`CROP_CLASSIFIER_DIR` if present, else skip with a note;
    ``"none"``: skip with a note; a folder: must hold a saved classifier (``model.txt``).
    With the run's output ``grid`` (``crs``, ``output_transform``, ``output_shape``) and
    ``times``, the classifier's recorded region and season are checked before any work
    (:func:`lssr_ray.classify.scope.check_scope`): the bundled one outside them is a
    :class:`ConfigError`; an explicit one is logged here and recorded by the stage.
    """
    if option is not None and str(option).lower() == "none":
        return None, "crop_type stage skipped: --classifier none"
    if option is None:
        if not (CROP_CLASSIFIER_DIR / "model.txt").is_file():
            return None, f"crop_type stage skipped: no bundled classifier at {portable_ref(CROP_CLASSIFIER_DIR)}"
        folder = str(CROP_CLASSIFIER_DIR)
    elif not (Path(option) / "model.txt").is_file():
        raise MissingDataError(
            f"classifier folder {option} not found (no model.txt); train one with "
            "`python jobs/train_classifier.py --store STORE --labels LABELS.tif --save-model DIR`, "
            f"use the bundled {CROP_CLASSIFIER_DIR}, or pass 'none' to skip the crop_type stage"
        )
    else:
        folder = str(option)
    if grid is not None and times is not None and len(times):
        bbox = grid_bbox_wgs84(grid.crs, grid.output_transform, tuple(grid.output_shape))
        scope = check_scope(read_scope(folder), name=portable_ref(folder), bbox=bbox, times=times,
                            n_months=int(FEATURE_SETTINGS["n_months"]), explicit=option is not None)
        for i, w in enumerate(scope.warnings):  # dates left out are noted quietly here; the stage records them
            (log.debug if i >= len(scope.warnings) - scope.notes else log.warning)("%s", w)
    return folder, None


def _put(local: Path, url: str, storage_options: Mapping[str, Any] | None) -> None:
    fs, path = filesystem(url, storage_options)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(local), path)


def classify_store(
    url: str,
    classifier: str | Path,
    *,
    out: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    explicit: bool = True,
    cfg: MapConfig | None = None,
    map_px: int = MAP_MAX_PX,
) -> ClassifyResult:
    """Write ``crop_type`` into the finished store ``url`` and the area CSV + map PNG.

    Args:
        url: finalized store (local path or ``s3://``), reflectance (time, band, y, x).
        classifier: a :meth:`CropClassifier.save` folder whose features are season features.
        out: folder for ``crop_area_ha.csv`` and ``crop_type.png`` (default
            ``<store without .zarr>_croptype``, local or ``s3://``).
        explicit: the user chose ``classifier`` (``--classifier``): outside its recorded region
            or season it is applied with a warning recorded in the store (``crop_type_warnings``);
            ``False`` (the bundled default): a :class:`ConfigError` before any pixel.
        cfg: the mapping run's settings (Ray address, ``actor_cpus`` of the stage's actors);
            None: the defaults. Without a running Ray a local one is started
            (:func:`~lssr_ray.mapping.ray_env.init_ray`) and shut down at the end.
        map_px: the map PNG is drawn from crop_type decimated to at most this many pixels on
            its long side (every n-th pixel, so classes stay classes).

    Pixels with no valid observation on any date stay 0 (nodata). Raises
    :class:`~lssr_ray.errors.ConfigError` if the classifier expects other features.
    """
    with warnings.catch_warnings():
        # _partials/ and _lock.json are ours, not Zarr nodes; zarr warns and skips them
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        return _classify(url, classifier, out, dict(storage_options or {}), explicit,
                         cfg or MapConfig(aoi="unused: classify_store maps no AOI"), map_px)


def _classify(url: str, classifier: str | Path, out: str | None, so: dict[str, Any],
              explicit: bool, cfg: MapConfig, map_px: int) -> ClassifyResult:
    import dask.array as da
    import ray
    import xarray as xr
    from affine import Affine

    from lssr_ray.classify.maps import plot_crop_map, write_area_csv_from_counts
    from lssr_ray.classify.model import CropClassifier
    from lssr_ray.mapping.ray_env import init_ray
    from lssr_ray.mapping.stage_classify import classify_chunks
    from lssr_ray.mapping.store import finalize_store, open_store, read_layout

    clf = CropClassifier.load(classifier)
    fset = {**FEATURE_SETTINGS, **clf.meta.get("features", {})}
    n_months, quantiles = int(fset["n_months"]), tuple(float(q) for q in fset["quantiles"])
    lay = read_layout(url, storage_options=so)
    ds = open_store(url, storage_options=so)
    scope = check_classifier_applies(clf, portable_ref(classifier), ds, n_months=n_months, explicit=explicit)
    season = scope.season_start
    for w in scope.warnings:
        log.warning("%s", w)
    (h, w), c = lay.shape, lay.chunk
    # feature names depend on the season settings and the time axis only: one pixel checks them
    # before anything is written (the workers check every chunk again)
    check_feature_names(store_features(ds, rows=slice(0, 1), cols=slice(0, 1), season_start=season,
                                       n_months=n_months, quantiles=quantiles)[1], clf, classifier)
    attrs = {
        "long_name": f"crop type ({clf.meta.get('scope', {}).get('classes', {}).get('scheme', 'WorldCereal crop type')}"
                     " code), 0 = no valid input", "units": "1",
        "flag_values": [int(v) for v in clf.table.codes],
        "flag_meanings": " ".join(n.replace(" ", "_") for n in clf.table.names),
        "class_table": json.dumps(clf.table.to_dict(), ensure_ascii=False), "nodata": 0,
    }
    import zarr

    if CROP_TYPE_VAR not in ds:
        # xarray's append replaces the group attributes with the (empty) template's: keep them
        root_attrs = dict(zarr.open_group(zarr_store(url, so), mode="r", zarr_format=2).attrs)
        tmpl = xr.Dataset({CROP_TYPE_VAR: (("y", "x"), da.zeros((h, w), dtype="uint16", chunks=(c, c)))})
        tmpl[CROP_TYPE_VAR].attrs.update(attrs)
        # _FillValue 0: GDAL/QGIS show class 0 as nodata; open_store keeps the layer uint16
        enc = {CROP_TYPE_VAR: {"_FillValue": 0, "chunks": (c, c), "grid_mapping": "spatial_ref"}}
        tmpl.to_zarr(str(url), mode="a", compute=False, zarr_format=2, consolidated=False, encoding=enc,
                     storage_options=settings_for(url, so) or None)
        zarr.open_group(zarr_store(url, so), mode="r+", zarr_format=2).attrs.update(root_attrs)
    else:  # a rerun (resume) may use another classifier: its class table replaces the old one
        zarr.open_group(zarr_store(url, so), mode="r+", zarr_format=2)[CROP_TYPE_VAR].attrs.update(attrs)
    started = init_ray(cfg)
    try:
        totals = classify_chunks(str(url), clf, str(classifier), season_start=season, n_months=n_months,
                                 quantiles=quantiles, cfg=cfg, storage_options=so, max_px=map_px)
    finally:
        if started:
            ray.shutdown()
    transform, crs = ds.rio.transform(), ds.rio.crs
    classes = {clf.table.name(k): n for k, n in totals.counts.items() if k}
    finalize_store(url, attrs={"crop_type_classifier": portable_ref(classifier), "crop_type_season_start": season,
                               "crop_type_classes": classes, "crop_type_warnings": scope.warnings},
                   storage_options=so)
    out = out or str(url).rstrip("/").removesuffix(".zarr") + "_croptype"
    csv_url, png_url = f"{out.rstrip('/')}/crop_area_ha.csv", f"{out.rstrip('/')}/crop_type.png"
    with tempfile.TemporaryDirectory() as tmp:
        csv_p = write_area_csv_from_counts(Path(tmp) / "crop_area_ha.csv", totals.counts, transform,
                                           table=clf.table, crs=crs)
        png_p = plot_crop_map(Path(tmp) / "crop_type.png", totals.overview, table=clf.table,
                              transform=transform * Affine.scale(totals.step),
                              title=f"crop type, season {season} + {n_months} months")
        _put(csv_p, csv_url, so)
        _put(png_p, png_url, so)
    return ClassifyResult(store=str(url), classifier=str(classifier), season_start=season, area_csv=csv_url,
                          png=png_url, classified_px=sum(n for k, n in totals.counts.items() if k), classes=classes,
                          warnings=scope.warnings)
