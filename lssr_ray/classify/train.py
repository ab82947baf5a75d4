"""Train and score crop-type classifiers on a WorldCereal patch (the ``lssr-train-classifier`` job).

:func:`compare_on_patch` trains every feature source on one whole-field split of the patch and
writes the comparison; :func:`train_on_store` trains the classifier of map_region's crop_type
stage on a store's own features against a label raster on the store grid (a WorldCereal patch's
CT layer, or a USDA Cropland Data Layer GeoTIFF) and records where it applies.
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.classify.evaluate import compare_sources, format_comparison, repeat_comparison
from lssr_ray.classify.features import (
    SOURCES,
    available_sources,
    load_patch_series,
    season_features,
)
from lssr_ray.classify.labels import load_croptype_table, load_labels
from lssr_ray.classify.maps import plot_crop_map, write_area_csv
from lssr_ray.classify.scope import (
    MARGIN_KM,
    ClassifierScope,
    grid_bbox_wgs84,
    season_months,
    season_start,
)
from lssr_ray.classify.split import spatial_split
from lssr_ray.errors import MissingDataError

log = logging.getLogger(__name__)

SOURCE_ORDER = ("s2", "lssr", "bicubic", "nearest30")
"""The paper's comparison, best-resolved first (the order of the table rows)."""


def _label_file(patch: Path) -> str:
    """The patch's crop-type label layer (``OUTPUT_POLY-*_10m_*.nc``)."""
    files = sorted(glob.glob(str(patch / "OUTPUT_POLY-*_10m_*.nc")))
    if not files:
        raise MissingDataError(f"{patch} has no OUTPUT_POLY-*_10m_*.nc label file")
    return files[0]


def compare_on_patch(
    patch: str | Path,
    out: str | Path,
    *,
    sources: list[str] | None = None,
    season_start: str | None = None,
    n_months: int = 12,
    test_fraction: float = 0.3,
    seed: int = 0,
    num_boost_round: int = 150,
    s2_nir: str = "B8A",
    repeats: int = 1,
    executor: str = "local",
    sr=None,
) -> dict:
    """Train/evaluate ``sources`` (default: all available) on one split; write outputs under ``out``."""
    patch, out = Path(patch), Path(out)
    srcs = sources or sorted(available_sources(patch, sr=sr),
                             key=lambda s: SOURCE_ORDER.index(s) if s in SOURCE_ORDER else 99)
    if not srcs:
        raise MissingDataError(f"{patch} has no imagery for any source {list(SOURCES)}")
    series = {s: load_patch_series(patch, s, sr=sr, s2_nir=s2_nir) for s in srcs}
    first = next(iter(series.values()))
    table = load_croptype_table()
    lab = load_labels(_label_file(patch), table, crs=first.crs, transform=first.transform,
                      shape=first.reflectance.shape[2:])
    if season_start is None:  # the n_months ending with the last acquisition of any source
        last = max(s.dates.max() for s in series.values()).astype("datetime64[M]")
        season_start = str(last - np.timedelta64(n_months - 1, "M"))
    feats = {s: season_features(ps.reflectance, ps.dates, season_start=season_start, n_months=n_months)
             for s, ps in series.items()}
    split = spatial_split(lab.codes, test_fraction, seed=seed)
    results = compare_sources(feats, lab.codes, split, table=table, seed=seed, executor=executor,
                              num_boost_round=num_boost_round, return_models=True)
    models = results.pop("_models")
    log.info("trained %s on %s (season from %s, %d months)", ", ".join(models), patch.name, season_start, n_months)
    for s, clf in models.items():
        d = out / s
        clf.save(d / "model")
        ct = clf.predict_map(feats[s][0])
        write_area_csv(d / "area_ha.csv", ct, first.transform, table=table, crs=first.crs)
        plot_crop_map(d / "crop_type.png", ct, table=table, transform=first.transform,
                      title=f"{patch.name}: crop type from {s}")
    report = {
        "patch": patch.name, "season_start": season_start, "n_months": n_months, "seed": seed,
        "test_fraction": test_fraction, "unknown_codes": {str(k): v for k, v in lab.unknown_codes.items()},
        "label_warped": lab.warped, "split": split.summary(), "results": results,
    }
    table_md = format_comparison(results, split_summary=split.summary())
    if repeats > 1:  # the spread over field splits: one split of a few fields is noisy
        rep = repeat_comparison(feats, lab.codes, range(seed, seed + repeats), test_fraction=test_fraction,
                                table=table, num_boost_round=num_boost_round, executor=executor)
        report["repeats"] = rep
        lines = ["", f"Over {repeats} field splits (seeds {seed}..{seed + repeats - 1}):",
                 "| source | macro F1 mean ± std | OA mean ± std | test px (min-max) |", "|---|---|---|---|"]
        for s, r in rep.items():
            lines.append(f"| {s} | {r['macro_f1_mean']:.3f} ± {r['macro_f1_std']:.3f} | "
                         f"{r['oa_mean']:.3f} ± {r['oa_std']:.3f} | "
                         f"{min(r['test_pixels'])}-{max(r['test_pixels'])} |")
        table_md += "\n" + "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    (out / "comparison.md").write_text(table_md + "\n")
    report["table"] = table_md
    return report


LABEL_TABLES = {"worldcereal": "croptype_codes.csv", "cdl": "cdl_codes.csv"}
"""Bundled label tables (``--label-table``): WorldCereal crop-type codes, USDA CDL class values."""
SCHEMES = {"worldcereal": "WorldCereal crop type", "cdl": "USDA CDL"}
"""Label scheme recorded in a classifier's scope for each bundled table."""
IGNORED_CDL_CODES = (81,)
"""CDL values that are not a label: 81 "Clouds/No Data" (0, background, is the raster's nodata)."""


def label_table(name: str) -> tuple[Any, str, tuple[int, ...]]:
    """``--label-table`` (``worldcereal``, ``cdl`` or a ``code,name`` CSV) -> (table, scheme, ignored codes)."""
    if name in LABEL_TABLES:
        table = load_croptype_table(Path(__file__).with_name(LABEL_TABLES[name]))
        return table, SCHEMES[name], IGNORED_CDL_CODES if name == "cdl" else ()
    return load_croptype_table(name), Path(name).stem, ()


def train_on_store(
    store: str | Path,
    labels: str | Path,
    save_model: str | Path,
    *,
    out: str | Path,
    table: str = "worldcereal",
    seed: int = 0,
    num_boost_round: int = 150,
    test_fraction: float = 0.3,
    n_months: int = 12,
    margin_km: float = MARGIN_KM,
) -> dict:
    """Train the crop_type stage's classifier on the store's own season features.

    Labels: ``labels`` is a WorldCereal patch folder (its CT layer) or a label raster (GeoTIFF,
    e.g. a USDA Cropland Data Layer clip in EPSG:5070 at 30 m), put on the store's 10 m grid by
    :func:`~lssr_ray.classify.labels.load_labels`; ``table`` names its codes (:func:`label_table`).
    Pixels with a label and at least one valid observation are used. A whole-field split
    (``test_fraction``) gives held-out scores; the saved model is then refit on every labelled
    pixel, with ``meta["features"]`` recording the feature settings the stage must reproduce and
    ``meta["scope"]`` the region (WGS84 bbox of the labelled pixels, + ``margin_km``), season
    and classes it applies to (:mod:`lssr_ray.classify.scope`).
    """
    from lssr_ray.classify.evaluate import classification_scores
    from lssr_ray.classify.model import CropClassifier
    from lssr_ray.config import portable_ref
    from lssr_ray.mapping.classify_stage import FEATURE_SETTINGS, store_features
    from lssr_ray.mapping.store import open_store

    labels, out = Path(labels), Path(out)
    tab, scheme, ignored = label_table(table)
    ds = open_store(str(store))
    q = tuple(FEATURE_SETTINGS["quantiles"])
    times = ds["time"].values
    season = season_start(times, n_months)
    feats, names, any_valid = store_features(ds, season_start=season, n_months=n_months, quantiles=q)
    src = _label_file(labels) if labels.is_dir() else labels
    lab = load_labels(src, tab, crs=ds.rio.crs, transform=ds.rio.transform(), shape=any_valid.shape)
    codes = np.where(any_valid & ~np.isin(lab.codes, ignored), lab.codes, 0).astype(np.uint16)
    if not codes.any():
        raise MissingDataError(f"no labelled pixel of {labels.name} has a valid observation in {store}")
    split = spatial_split(codes, test_fraction, seed=seed)
    clf = CropClassifier.fit(feats[:, split.train].T, codes[split.train], feature_names=names, table=tab,
                             num_boost_round=num_boost_round, seed=seed)
    pred = clf.predict(feats[:, split.test].T)
    scores = classification_scores(codes[split.test], pred, table=tab)
    final = CropClassifier.fit(feats[:, codes > 0].T, codes[codes > 0], feature_names=names, table=tab,
                               num_boost_round=num_boost_round, seed=seed)
    scope = _training_scope(ds, codes > 0, times, season, n_months, scheme, final.table, margin_km)
    final.meta.update(features={"n_months": n_months, "quantiles": list(q), "season": "starts in "
                                "scope.season.start_month, holding the store's last date"},
                      trained_on={"store": portable_ref(store), "labels": portable_ref(labels),
                                  "season_start": season, "pixels": int((codes > 0).sum())},
                      heldout={k: scores[k] for k in ("overall_accuracy", "macro_f1", "n_pixels")},
                      scope=scope.to_dict())
    final.save(save_model)
    report = {"store": portable_ref(store), "labels": portable_ref(labels), "season_start": season,
              "split": split.summary(), "scores": scores, "train_pixels": int((codes > 0).sum()),
              "unknown_codes": {str(k): v for k, v in lab.unknown_codes.items()}, "scope": scope.to_dict()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1, default=str))
    report["table"] = (f"store features ({store}), {int((codes > 0).sum())} labelled px, held-out fields: "
                       f"OA {scores['overall_accuracy']:.3f}, macro F1 {scores['macro_f1']:.3f} "
                       f"({scores['n_pixels']} test px); model refit on all labelled px\n"
                       f"applies to: {scope.describe()}")
    return report


def _training_scope(ds: Any, mask: np.ndarray, times: np.ndarray, season: str, n_months: int, scheme: str,
                    table: Any, margin_km: float) -> ClassifierScope:
    """The scope of a classifier trained on the ``mask`` pixels of store ``ds``: their WGS84
    bbox, the calendar months with a valid observation of them inside the season, the classes."""
    valid = np.asarray(ds["valid"].values).astype(bool)[:, mask].any(axis=1)
    inside, months = season_months(times, season, n_months)
    used = valid & inside
    days = np.asarray(times, "datetime64[D]")[used]
    return ClassifierScope(
        bbox=grid_bbox_wgs84(ds.rio.crs, ds.rio.transform(), mask.shape, mask),
        start_month=int(np.datetime64(season, "M").astype(np.int64)) % 12 + 1, n_months=n_months,
        observed_months=tuple(sorted({int(v) for v in months[used]})), scheme=scheme,
        codes=tuple(table.codes), names=tuple(table.names), margin_km=float(margin_km),
        trained_dates=(str(days.min()), str(days.max())) if days.size else None)


__all__ = ["IGNORED_CDL_CODES", "LABEL_TABLES", "SOURCE_ORDER", "compare_on_patch", "label_table", "train_on_store"]
