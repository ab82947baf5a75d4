"""Train and evaluate the crop-type classifier on a WorldCereal patch.

    lssr-train-classifier --patch data/samples/worldcereal_flanders_31UDS_2018 --source s2 --out runs/ct_s2
    lssr-train-classifier --patch data/samples/worldcereal_flanders_31UDS_2018 --compare --out runs/ct_compare

Labels: the patch's OUTPUT_POLY-*_10m_*.nc CT layer. Split: whole fields (connected same-code
regions) go to train or test, never both. --compare trains every available source on the same
split and prints one table (OA, macro F1, per-class F1) and writes metrics.json.
Outputs per source: <out>/<source>/model/ (model.txt, classes.json, features.json, meta.json),
crop_type.png and area_ha.csv of the whole patch classified. --repeats N adds the
mean/std over N field splits; --executor ray trains the sources as parallel Ray tasks.
The lssr source super-resolves the patch's Landsat-8 30 m cells with --lssr-checkpoint
(default models/lssr-adapters-cpu-v3; none leaves the source out).

The classifier of map_region's crop_type stage is trained on a map_region store's own features
(lssr_ray.mapping.classify_stage.store_features) against labels on the store grid: a WorldCereal
patch (--patch) or a label raster (--labels), e.g. a USDA Cropland Data Layer GeoTIFF clipped to
the store (uint8 class values, EPSG:5070 Albers, 30 m; --label-table cdl names them):

    lssr-train-classifier --patch data/samples/worldcereal_flanders_31UDS_2018 \\
        --store out/flanders_31UDS.zarr --save-model models/croptype-lgbm --out runs/ct_store
    lssr-train-classifier --labels CDL_2018_clip.tif --store out/iowa.zarr \\
        --save-model models/croptype-iowa --out runs/ct_iowa

The saved model records the region (WGS84 bbox of the labelled pixels + --margin-km), season
and classes it was trained on; map_region refuses to apply it by default outside them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from lssr_ray.classify.features import SOURCES
from lssr_ray.cli.args import add_config_args, config_from_args, configure_logging
from lssr_ray.errors import ConfigError, LssrError


@dataclass(frozen=True)
class ClassifierJobConfig:
    """One ``lssr-train-classifier`` run: exactly one of ``source``, ``compare``, ``store``."""

    out: str
    """Output folder."""
    patch: str | None = None
    """WorldCereal patch folder (NetCDF layers + labels); needed by --source and --compare."""
    labels: str | None = None
    """With --store: a label raster (GeoTIFF, e.g. a USDA CDL clip) instead of --patch."""
    label_table: str | None = None
    """Names of the label codes: worldcereal, cdl or a code,name CSV (default cdl with --labels, else worldcereal)."""
    margin_km: float = 50.0
    """With --store: how far beyond the labelled pixels the saved classifier is taken to apply."""
    source: str | None = None
    """One feature source."""
    compare: bool = False
    """Every available source, same split."""
    store: str | None = None
    """Train on this map_region store's features (the crop_type stage's classifier); needs --save-model."""
    save_model: str | None = None
    """With --store: folder for the trained classifier."""
    lssr_checkpoint: str | None = None
    """LSSR checkpoint of the lssr source (default models/lssr-adapters-cpu-v3; 'none': no lssr)."""
    season_start: str | None = None
    """YYYY-MM; default: n_months ending at the last date."""
    n_months: int = 12
    """Season length in months (monthly composites)."""
    test_fraction: float = 0.3
    """Target share of each class in test."""
    seed: int = 0
    """Seed of the field split and of LightGBM."""
    num_boost_round: int = 150
    """LightGBM boosting rounds."""
    s2_nir: str = "B8A"
    """NIR band of the s2 source."""
    repeats: int = 1
    """Also report mean/std over this many field splits."""
    executor: str = "local"
    """'ray': train the sources as parallel Ray tasks (for large regions)."""

    def __post_init__(self) -> None:
        if sum((self.source is not None, self.compare, self.store is not None)) != 1:
            raise ConfigError("give exactly one of --source, --compare, --store")
        if self.store and not self.save_model:
            raise ConfigError("--store needs --save-model DIR (where the classifier is written)")
        if self.store and (self.patch is None) == (self.labels is None):
            raise ConfigError("--store needs exactly one of --patch (WorldCereal labels) or --labels RASTER")
        if not self.store and (self.patch is None or self.labels is not None):
            raise ConfigError("--source and --compare need --patch (and take no --labels)")


FLAGS = {"n_months": "--months", "num_boost_round": "--rounds"}
"""Options whose name is not the field's (kept from before the options were generated)."""
CHOICES = {"source": SOURCES, "s2_nir": ("B8A", "B08"), "executor": ("local", "ray")}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(ap, ClassifierJobConfig, flags=FLAGS, choices=CHOICES, exclusive=("source", "compare", "store"))
    ap.add_argument("--debug", action="store_true", help="debug log messages")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    configure_logging(a.debug)
    from lssr_ray.classify.train import compare_on_patch, train_on_store

    try:
        cfg = config_from_args(a, ClassifierJobConfig)
        if cfg.store:
            table = cfg.label_table or ("cdl" if cfg.labels else "worldcereal")
            rep = train_on_store(cfg.store, cfg.labels or cfg.patch, cfg.save_model, out=cfg.out, table=table,
                                 seed=cfg.seed, num_boost_round=cfg.num_boost_round,
                                 test_fraction=cfg.test_fraction, n_months=cfg.n_months, margin_km=cfg.margin_km)
            print(rep["table"])
            print(f"model: {cfg.save_model}; metrics: {Path(cfg.out) / 'metrics.json'}")
            return 0
        sr = None
        if (cfg.compare or cfg.source == "lssr") and (cfg.lssr_checkpoint or "").lower() != "none":
            from lssr_ray.classify.features import lssr_sr_for_patch

            sr = lssr_sr_for_patch(cfg.patch, checkpoint=cfg.lssr_checkpoint)
        rep = compare_on_patch(cfg.patch, cfg.out, sources=None if cfg.compare else [cfg.source],
                               season_start=cfg.season_start, n_months=cfg.n_months, test_fraction=cfg.test_fraction,
                               seed=cfg.seed, num_boost_round=cfg.num_boost_round, s2_nir=cfg.s2_nir,
                               repeats=cfg.repeats, executor=cfg.executor, sr=sr)
    except LssrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(rep["table"])
    print(f"season {rep['season_start']} + {rep['n_months']} months; metrics: {Path(cfg.out) / 'metrics.json'}")
    return 0
