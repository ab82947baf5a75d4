"""The crop_type stage of map_region on a tiny real run (2 x 2 Alabama chips, one date).

The classifier is the bundled Flanders model (models/croptype-lgbm): its classes mean little in
Alabama, but the stage's mechanics (grid, chunk placement, nodata, areas) do not depend on that.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from lssr_ray.config import CROP_CLASSIFIER_DIR, MapConfig
from lssr_ray.data.aoi import write_box_aoi as write_utm_aoi

ALABAMA_BOX = (456015, 3396015, 458985, 3398985)  # EPSG:32616 metres, 2 x 2 chips (as test_pipeline)




@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import ray

    from lssr_ray.mapping.pipeline import run_map

    tmp = tmp_path_factory.mktemp("ct")
    cfg = MapConfig(aoi=write_utm_aoi(tmp / "al4.geojson", ALABAMA_BOX), out=str(tmp / "al4.zarr"),
                    dates="clearest", quicklook=False, classifier=str(CROP_CLASSIFIER_DIR))
    try:
        yield cfg, run_map(cfg, progress=False)
    finally:
        ray.shutdown()


def test_crop_type_layer_is_georeferenced_like_reflectance(run):
    import rasterio

    from lssr_ray.mapping.store import gdal_path, open_store

    cfg, summary = run
    ds = open_store(cfg.out)
    ct = ds["crop_type"]
    assert ct.dims == ("y", "x") and ct.dtype == np.uint16 and ct.shape == (336, 336)
    assert ct.encoding["chunks"] == (168, 168) and ct.encoding["grid_mapping"] == "spatial_ref"
    table = json.loads(ct.attrs["class_table"])
    assert table == json.loads((CROP_CLASSIFIER_DIR / "classes.json").read_text())
    with rasterio.open(gdal_path(cfg.out, "crop_type")) as src, rasterio.open(gdal_path(cfg.out)) as ref:
        assert src.crs == ref.crs and src.crs.to_epsg() == 32616
        assert tuple(src.transform)[:6] == pytest.approx(tuple(ref.transform)[:6])
        assert src.shape == ref.shape == (336, 336) and src.count == 1 and src.dtypes[0] == "uint16"
        np.testing.assert_array_equal(src.read(1), ct.values)
    assert summary.crop_type.classified_px == int((ct.values > 0).sum())
    # the stage adds to the store: the run's own attributes survive it
    assert ds.attrs["completed"] is True and ds.attrs["chip_dates_ok"] == 4
    assert ds.attrs["source_granules"] == ["HLS.L30.T16RDV.2015216T161921.v2.0"]
    assert ds.attrs["crop_type_season_start"] == summary.crop_type.season_start


def test_nodata_where_no_valid_input_and_classes_elsewhere(run):
    from lssr_ray.mapping.store import open_store

    cfg, _ = run
    ds = open_store(cfg.out)
    ct = ds["crop_type"].values
    any_valid = ds["valid"].values.astype(bool).any(axis=0)
    assert 0.3 < any_valid.mean() < 1.0  # partly cloudy: both cases occur
    assert (ct[~any_valid] == 0).all()
    codes = set(json.loads(ds["crop_type"].attrs["class_table"])["codes"])
    assert (ct[any_valid] > 0).all() and set(np.unique(ct[any_valid]).tolist()) <= codes


def test_chunks_hold_their_own_pixels(run):
    """Pixels sampled from all four chunks, classified from the whole store at once (another
    read path, no chunking) must equal the chunk-wise written layer."""
    from lssr_ray.classify.features import season_features
    from lssr_ray.classify.model import CropClassifier
    from lssr_ray.mapping.store import open_store

    cfg, summary = run
    ds = open_store(cfg.out)
    refl = ds["reflectance"].values.astype(np.float32)
    refl[~np.broadcast_to(ds["valid"].values.astype(bool)[:, None], refl.shape)] = np.nan
    rng = np.random.default_rng(0)
    rr, cc = rng.integers(0, 336, 400), rng.integers(0, 336, 400)
    feats, _ = season_features(refl[:, :, rr, cc][..., None], ds["time"].values,
                               season_start=summary.crop_type.season_start)
    want = CropClassifier.load(CROP_CLASSIFIER_DIR).predict(feats[:, :, 0].T)
    np.testing.assert_array_equal(ds["crop_type"].values[rr, cc], want)


def test_area_csv_and_png(run):
    import matplotlib.image as mpimg

    from lssr_ray.mapping.store import open_store

    cfg, summary = run
    ct = open_store(cfg.out)["crop_type"].values
    with open(summary.crop_type.area_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    classes = [r for r in rows if r["code"] != "0"]
    codes, counts = np.unique(ct[ct > 0], return_counts=True)
    assert {int(r["code"]): int(r["pixels"]) for r in classes} == dict(zip(codes.tolist(), counts.tolist()))
    # 10 m pixels: 100 m2 = 0.01 ha each
    assert sum(float(r["area_ha"]) for r in classes) == pytest.approx((ct > 0).sum() * 0.01, abs=1e-3)
    (nd,) = [r for r in rows if r["code"] == "0"]
    assert int(nd["pixels"]) == int((ct == 0).sum())
    img = mpimg.imread(summary.crop_type.png)
    assert img.ndim == 3 and min(img.shape[:2]) > 200


def test_classifier_option():
    from lssr_ray.errors import MissingDataError
    from lssr_ray.mapping.classify_stage import resolve_classifier

    assert resolve_classifier("none")[0] is None and "skipped" in resolve_classifier("none")[1]
    assert resolve_classifier(None) == (str(CROP_CLASSIFIER_DIR), None)
    with pytest.raises(MissingDataError, match="no model.txt"):
        resolve_classifier("/nonexistent/clf")


def _chunk_loop_reference(url: str, season: str) -> np.ndarray:
    """The crop_type the stage's old driver loop wrote: chunk by chunk, in this process, no Ray."""
    from lssr_ray.classify.model import CropClassifier
    from lssr_ray.mapping.classify_stage import store_features
    from lssr_ray.mapping.store import open_store, read_layout

    clf = CropClassifier.load(CROP_CLASSIFIER_DIR)
    ds, lay = open_store(url), read_layout(url)
    (h, w), c = lay.shape, lay.chunk
    full = np.zeros((h, w), np.uint16)
    for r0 in range(0, h, c):
        for c0 in range(0, w, c):
            rs, cs = slice(r0, min(r0 + c, h)), slice(c0, min(c0 + c, w))
            if int(ds["valid"].isel(y=rs, x=cs).max()) > 0:
                feats, _, any_valid = store_features(ds, rows=rs, cols=cs, season_start=season)
                full[rs, cs] = clf.predict_map(feats, valid=any_valid)
    return full


def test_ray_stage_writes_what_the_driver_loop_wrote(run, tmp_path):
    """crop_type, the class counts, the area CSV and the PNG of the Ray Data stage equal those of
    the whole-map driver loop it replaced (computed here from the store in-process)."""
    import matplotlib.image as mpimg

    from lssr_ray.classify.maps import plot_crop_map, write_area_csv
    from lssr_ray.classify.model import CropClassifier
    from lssr_ray.mapping.store import open_store

    cfg, summary = run
    res = summary.crop_type
    full = _chunk_loop_reference(cfg.out, res.season_start)
    ds = open_store(cfg.out)
    np.testing.assert_array_equal(ds["crop_type"].values, full)
    table = CropClassifier.load(CROP_CLASSIFIER_DIR).table
    want = {table.name(int(k)): int(n) for k, n in zip(*np.unique(full, return_counts=True)) if k}
    assert ds.attrs["crop_type_classes"] == res.classes == want and len(want) >= 2
    assert res.classified_px == int((full > 0).sum())
    ref_csv = write_area_csv(tmp_path / "ref.csv", full, ds.rio.transform(), table=table, crs=ds.rio.crs)
    with open(res.area_csv, "rb") as got:
        assert got.read() == ref_csv.read_bytes()
    # 336 px < MAP_MAX_PX: the overview is the whole map, so the PNG is the one drawn from it
    ref_png = plot_crop_map(tmp_path / "ref.png", full, table=table, transform=ds.rio.transform(),
                            title=f"crop type, season {res.season_start} + 12 months")
    np.testing.assert_array_equal(mpimg.imread(res.png), mpimg.imread(ref_png))


def test_map_overview_is_every_nth_pixel_of_the_store_lattice(run, tmp_path):
    """With a small overview limit the driver gets every 5th pixel (global lattice: the second
    168 px chunk starts 2 px into its own tiles) and the totals of the whole map."""
    import matplotlib.image as mpimg

    from lssr_ray.classify.model import CropClassifier
    from lssr_ray.mapping.classify_stage import classify_store
    from lssr_ray.mapping.stage_classify import classify_chunks, overview_step
    from lssr_ray.mapping.store import open_store

    cfg, summary = run
    ct = open_store(cfg.out)["crop_type"].values
    assert overview_step(ct.shape, 70) == 5 and overview_step(ct.shape, 336) == 1
    clf = CropClassifier.load(CROP_CLASSIFIER_DIR)
    totals = classify_chunks(cfg.out, clf, str(CROP_CLASSIFIER_DIR), season_start=summary.crop_type.season_start,
                             n_months=12, quantiles=(0.1, 0.5, 0.9), cfg=cfg, storage_options={}, max_px=70)
    assert totals.step == 5 and totals.overview.shape == (68, 68)
    np.testing.assert_array_equal(totals.overview, ct[::5, ::5])
    assert totals.counts == {int(k): int(n) for k, n in zip(*np.unique(ct, return_counts=True))}
    res = classify_store(cfg.out, CROP_CLASSIFIER_DIR, out=str(tmp_path / "small"), cfg=cfg, map_px=70)
    with open(res.area_csv, "rb") as a, open(summary.crop_type.area_csv, "rb") as b:
        assert a.read() == b.read()  # the table never depends on the overview
    img = mpimg.imread(res.png)
    assert img.ndim == 3 and min(img.shape[:2]) > 200
    np.testing.assert_array_equal(open_store(cfg.out)["crop_type"].values, ct)  # a rerun writes the same


def test_feature_mismatch_is_a_config_error_from_driver_and_worker(run, tmp_path):
    """A classifier trained on other season features: classify_store refuses it before writing
    anything; the same check in a Ray worker reaches the caller as the same ConfigError."""
    from lssr_ray.classify.model import CropClassifier
    from lssr_ray.errors import ConfigError
    from lssr_ray.mapping.classify_stage import classify_store
    from lssr_ray.mapping.stage_classify import classify_chunks
    from lssr_ray.mapping.store import open_store

    cfg, summary = run
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(5)]
    other = CropClassifier.fit(rng.random((60, 5), dtype=np.float32), np.repeat([1200, 9120], 30),
                               feature_names=names, num_boost_round=3).save(tmp_path / "other")
    before = open_store(cfg.out)["crop_type"].values.copy()
    with pytest.raises(ConfigError, match="expects 5 features .*retrain it on store features"):
        classify_store(cfg.out, other, out=str(tmp_path / "o"), cfg=cfg)
    with pytest.raises(ConfigError, match="expects 5 features .*retrain it on store features"):
        classify_chunks(cfg.out, CropClassifier.load(other), str(other), season_start=summary.crop_type.season_start,
                        n_months=12, quantiles=(0.1, 0.5, 0.9), cfg=cfg, storage_options={})
    ds = open_store(cfg.out)
    np.testing.assert_array_equal(ds["crop_type"].values, before)
    assert json.loads(ds["crop_type"].attrs["class_table"]) == json.loads((CROP_CLASSIFIER_DIR / "classes.json").read_text())


def test_classify_pool_grows_with_chunks_up_to_the_cluster_cpus():
    from lssr_ray.mapping.resources import ClusterResources, classify_pool

    cfg, two = MapConfig(aoi="unused.geojson"), MapConfig(aoi="unused.geojson", actor_cpus=2.0)
    big = ClusterResources(cpus=64, gpus=4)
    assert classify_pool(cfg, big, 4) == classify_pool(cfg, big, 0)  # one actor for a demo store
    assert (classify_pool(cfg, big, 4).min_size, classify_pool(cfg, big, 4).max_size) == (1, 1)
    assert classify_pool(cfg, big, 320).max_size == 20  # one actor per 16 chunks
    state = classify_pool(cfg, big, 51_000)  # Iowa: ~51k chunks of 168 px
    assert (state.max_size, state.num_cpus, state.num_gpus) == (64, 1.0, 0.0)  # LightGBM runs on CPUs
    assert classify_pool(two, big, 51_000).max_size == 32
