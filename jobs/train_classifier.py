"""Train and evaluate the crop-type classifier on a WorldCereal patch.

    python jobs/train_classifier.py --patch data/samples/worldcereal_flanders_31UDS_2018 \
        --source s2 --out runs/ct_s2
    python jobs/train_classifier.py --patch data/samples/worldcereal_flanders_31UDS_2018 \
        --compare --out runs/ct_compare

Labels: the patch's ``OUTPUT_POLY-*_10m_*.nc`` CT layer. Split: whole fields (connected same-code
regions) go to train or test, never both. ``--compare`` trains every available source on the same
split and prints one table (OA, macro F1, per-class F1) and writes ``metrics.json``.
Outputs per source: ``<out>/<source>/model/`` (model.txt, classes.json, features.json, meta.json),
``crop_type.png`` and ``area_ha.csv`` of the whole patch classified. ``--repeats N`` adds the
mean/std over N field splits; ``--executor ray`` trains the sources as parallel Ray tasks.
The ``lssr`` source super-resolves the patch's Landsat-8 30 m cells with ``--lssr-checkpoint``
(default models/lssr-adapters-cpu-v3; ``none`` leaves the source out).

The classifier of map_region's crop_type stage is trained on a map_region store's own features
(:func:`lssr_ray.mapping.classify_stage.store_features`) against the patch labels on the store grid:

    python jobs/train_classifier.py --patch data/samples/worldcereal_flanders_31UDS_2018 \
        --store out/flanders_31UDS.zarr --save-model models/croptype-lgbm --out runs/ct_store
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lssr_ray.classify.evaluate import compare_sources, format_comparison, repeat_comparison
from lssr_ray.classify.features import (
    SOURCES,
    available_sources,
    load_patch_series,
    season_features,
)
from lssr_ray.classify.labels import load_croptype_table, load_labels
from lssr_ray.classify.maps import plot_crop_map, write_area_csv
from lssr_ray.classify.split import spatial_split
from lssr_ray.errors import ConfigError, LssrError, MissingDataError


def run(
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
    order = ("s2", "lssr", "bicubic", "nearest30")  # the paper's comparison, best-resolved first
    srcs = sources or sorted(available_sources(patch, sr=sr), key=lambda s: order.index(s) if s in order else 99)
    if not srcs:
        raise MissingDataError(f"{patch} has no imagery for any source {list(SOURCES)}")
    series = {s: load_patch_series(patch, s, sr=sr, s2_nir=s2_nir) for s in srcs}
    first = next(iter(series.values()))
    label_files = sorted(glob.glob(str(patch / "OUTPUT_POLY-*_10m_*.nc")))
    if not label_files:
        raise MissingDataError(f"{patch} has no OUTPUT_POLY-*_10m_*.nc label file")
    table = load_croptype_table()
    lab = load_labels(label_files[0], table, crs=first.crs, transform=first.transform,
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


def train_on_store(
    store: str | Path,
    patch: str | Path,
    save_model: str | Path,
    *,
    out: str | Path,
    seed: int = 0,
    num_boost_round: int = 150,
    test_fraction: float = 0.3,
    n_months: int = 12,
) -> dict:
    """Train the crop_type stage's classifier on the store's own season features.

    Labels: the patch's CT layer warped onto the store's 10 m grid; pixels with a label and at
    least one valid observation are used. A whole-field split (``test_fraction``) gives held-out
    scores; the saved model is then refit on every labelled pixel, with ``meta["features"]``
    recording the feature settings the stage must reproduce.
    """
    from lssr_ray.classify.evaluate import classification_scores
    from lssr_ray.classify.model import CropClassifier
    from lssr_ray.mapping.classify_stage import FEATURE_SETTINGS, season_start_for, store_features
    from lssr_ray.mapping.store import open_store

    patch, out = Path(patch), Path(out)
    ds = open_store(str(store))
    q = tuple(FEATURE_SETTINGS["quantiles"])
    season = season_start_for(ds["time"].values, n_months)
    feats, names, any_valid = store_features(ds, season_start=season, n_months=n_months, quantiles=q)
    label_files = sorted(glob.glob(str(patch / "OUTPUT_POLY-*_10m_*.nc")))
    if not label_files:
        raise MissingDataError(f"{patch} has no OUTPUT_POLY-*_10m_*.nc label file")
    table = load_croptype_table()
    lab = load_labels(label_files[0], table, crs=ds.rio.crs, transform=ds.rio.transform(), shape=any_valid.shape)
    codes = np.where(any_valid, lab.codes, 0).astype(np.uint16)
    if not codes.any():
        raise MissingDataError(f"no labelled pixel of {patch.name} has a valid observation in {store}")
    split = spatial_split(codes, test_fraction, seed=seed)
    clf = CropClassifier.fit(feats[:, split.train].T, codes[split.train], feature_names=names, table=table,
                             num_boost_round=num_boost_round, seed=seed)
    pred = clf.predict(feats[:, split.test].T)
    scores = classification_scores(codes[split.test], pred, table=table)
    final = CropClassifier.fit(feats[:, codes > 0].T, codes[codes > 0], feature_names=names, table=table,
                               num_boost_round=num_boost_round, seed=seed)
    final.meta.update(features={"n_months": n_months, "quantiles": list(q), "season": "n_months ending at the "
                                "store's last date"}, trained_on={"store": str(store), "patch": patch.name,
                                "season_start": season, "pixels": int((codes > 0).sum())},
                      heldout={k: scores[k] for k in ("overall_accuracy", "macro_f1", "n_pixels")})
    final.save(save_model)
    report = {"store": str(store), "patch": patch.name, "season_start": season, "split": split.summary(),
              "scores": scores, "train_pixels": int((codes > 0).sum())}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1, default=str))
    report["table"] = (f"store features ({store}), {int((codes > 0).sum())} labelled px, held-out fields: "
                       f"OA {scores['overall_accuracy']:.3f}, macro F1 {scores['macro_f1']:.3f} "
                       f"({scores['n_pixels']} test px); model refit on all labelled px")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patch", required=True, help="WorldCereal patch folder (NetCDF layers + labels)")
    ap.add_argument("--out", required=True, help="output folder")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--source", choices=SOURCES, help="one feature source")
    g.add_argument("--compare", action="store_true", help="every available source, same split")
    g.add_argument("--store", help="train on this map_region store's features (the crop_type stage's "
                                   "classifier); needs --save-model")
    ap.add_argument("--save-model", help="with --store: folder for the trained classifier")
    ap.add_argument("--lssr-checkpoint", default=None,
                    help="LSSR checkpoint of the lssr source (default models/lssr-adapters-cpu-v3; 'none': no lssr)")
    ap.add_argument("--season-start", default=None, help="YYYY-MM; default: n-months ending at the last date")
    ap.add_argument("--months", type=int, default=12, help="season length in months (monthly composites)")
    ap.add_argument("--test-fraction", type=float, default=0.3, help="target share of each class in test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=150, help="LightGBM boosting rounds")
    ap.add_argument("--s2-nir", default="B8A", choices=("B8A", "B08"), help="NIR band of the s2 source")
    ap.add_argument("--repeats", type=int, default=1, help="also report mean/std over this many field splits")
    ap.add_argument("--executor", default="local", choices=("local", "ray"),
                    help="'ray': train the sources as parallel Ray tasks (for large regions)")
    a = ap.parse_args(argv)
    try:
        if a.store:
            if not a.save_model:
                raise ConfigError("--store needs --save-model DIR (where the classifier is written)")
            rep = train_on_store(a.store, a.patch, a.save_model, out=a.out, seed=a.seed, num_boost_round=a.rounds,
                                 test_fraction=a.test_fraction, n_months=a.months)
            print(rep["table"])
            print(f"model: {a.save_model}; metrics: {Path(a.out) / 'metrics.json'}")
            return 0
        sr = None
        want_lssr = a.compare or a.source == "lssr"
        if want_lssr and (a.lssr_checkpoint or "").lower() != "none":
            from lssr_ray.classify.features import lssr_sr_for_patch

            sr = lssr_sr_for_patch(a.patch, checkpoint=a.lssr_checkpoint)
        rep = run(a.patch, a.out, sources=None if a.compare else [a.source], season_start=a.season_start,
                  n_months=a.months, test_fraction=a.test_fraction, seed=a.seed,
                  num_boost_round=a.rounds, s2_nir=a.s2_nir, repeats=a.repeats, executor=a.executor, sr=sr)
    except LssrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(rep["table"])
    print(f"season {rep['season_start']} + {rep['n_months']} months; metrics: {Path(a.out) / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
