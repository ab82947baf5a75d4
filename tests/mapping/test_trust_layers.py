"""The trust layer in the store (consistency always, uncertainty with the switch) and the quicklooks.

Two real Ray runs over 2 x 2 Alabama chips with the bicubic engine (the model is not the point
here), one with ``uncertainty=True`` and one without; the LSSR engine's spread is checked on a
real Flanders chip without Ray.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT, MapConfig
from lssr_ray.data.aoi import write_box_aoi
from lssr_ray.errors import ConfigError

ALABAMA_BOX = (456015, 3396015, 458985, 3398985)  # EPSG:32616 metres: 2 x 2 chips, core 168, halo 12
FLANDERS = str(REPO_ROOT / "examples" / "flanders_31UDS.geojson")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import ray

    from lssr_ray.mapping.pipeline import run_map
    from lssr_ray.mapping.plan import plan_map

    tmp = tmp_path_factory.mktemp("trust")
    aoi = write_box_aoi(tmp / "al4.geojson", ALABAMA_BOX)
    common = {"aoi": aoi, "dates": "clearest", "engine": "bicubic", "classifier": "none", "keep_partials": True}
    with_u = MapConfig(**common, out=str(tmp / "with.zarr"), uncertainty=True)
    without = MapConfig(**common, out=str(tmp / "without.zarr"))
    try:
        s_with = run_map(with_u, progress=False)
        s_without = run_map(without, progress=False)
        yield {"with": (with_u, plan_map(with_u), s_with), "without": (without, plan_map(without), s_without)}
    finally:
        ray.shutdown()


def test_store_has_both_layers_with_crs_and_transform_for_xarray_and_gdal(runs):
    import rasterio

    from lssr_ray.mapping.store import gdal_path, open_store

    cfg, plan, _ = runs["with"]
    g = plan.stage.plan.grid
    ds = open_store(cfg.out)
    for name in ("consistency", "uncertainty"):
        v = ds[name]
        assert v.dims == ("time", "band", "y", "x") and v.shape == ds.reflectance.shape == (1, 6, 336, 336)
        assert v.encoding["dtype"] == np.int16 and v.encoding["scale_factor"] == pytest.approx(1e-4)
        assert {"long_name", "units", "description"} <= set(v.attrs) and v.attrs["units"] == "1"
        assert v.rio.crs.to_epsg() == 32616
        assert tuple(v.rio.transform())[:6] == pytest.approx(tuple(g.output_transform)[:6])
        ref = v.isel(time=0).values
        # written wherever reflectance is (this scene is ~62 % clear at 30 m)
        assert np.isfinite(ref).mean() > 0.5
        assert np.array_equal(np.isfinite(ref), np.isfinite(ds.reflectance.isel(time=0).values))
        with rasterio.open(gdal_path(cfg.out, name)) as src:
            assert src.crs.to_epsg() == 32616 and src.count == 6 and src.shape == (336, 336)
            assert tuple(src.transform)[:6] == pytest.approx(tuple(g.output_transform)[:6])
            got = src.read(masked=True)
            gd = np.where(got.mask, np.nan, got.data * src.scales[0] + src.offsets[0])
        np.testing.assert_allclose(gd, ref, atol=1e-6, equal_nan=True)
    assert "3x3" in ds.consistency.attrs["description"]  # each 30 m value sits on its 3 x 3 children
    assert json.loads(ds.attrs["run_config"])["uncertainty"] is True


def test_without_the_switch_there_is_no_uncertainty_and_resume_refuses_the_other_setting(runs):
    from lssr_ray.mapping.pipeline import run_map
    from lssr_ray.mapping.store import open_store

    cfg, _, _ = runs["without"]
    ds = open_store(cfg.out)
    assert "consistency" in ds and "uncertainty" not in ds
    assert json.loads(ds.attrs["run_config"])["uncertainty"] is False
    with pytest.raises(ConfigError, match="uncertainty"):  # the switch is part of the run identity
        run_map(MapConfig(**{**cfg.__dict__, "uncertainty": True}), progress=False)


def test_store_consistency_is_trust_consistency_of_each_chip_where_chips_do_not_overlap(runs):
    from lssr_ray.mapping.partials import load_partial
    from lssr_ray.mapping.plan import work_items
    from lssr_ray.mapping.store import open_store
    from lssr_ray.mapping.udfs import ReadChips
    from lssr_ray.model.trust import consistency

    for key in ("with", "without"):
        cfg, plan, _ = runs[key]
        chips = plan.stage.plan
        rows = ReadChips(chips, plan.stage.granules, aux=plan.stage.aux)(
            {k: np.asarray([it[k] for it in work_items(plan, {})]) for k in ("chips", "ti", "granules")})
        lr = dict(zip(rows["chip_id"], rows["lr"]))
        store = open_store(cfg.out).consistency.isel(time=0).values
        core, halo = chips.chunk_size, cfg.grid.overlap // 2 * chips.grid.scale
        for chip in chips.chips:
            p = load_partial(cfg.out, 0, chip.id)
            want = consistency(p.sr, lr[chip.id]).repeat(3, 1).repeat(3, 2)  # (6, 3h, 3w) on the chip
            np.testing.assert_allclose(p.layers["consistency"], want, atol=1e-6, equal_nan=True)
            # interior of the chip's core, [halo, core - halo) in chunk pixels: no neighbour's blend
            # weight reaches it; the chip's prediction starts halo pixels before its chunk
            y0, x0 = chip.row * core, chip.col * core
            got = store[:, y0 + halo : y0 + core - halo, x0 + halo : x0 + core - halo]
            exp = want[:, 2 * halo : core, 2 * halo : core]
            assert np.isfinite(exp).mean() > 0.5
            np.testing.assert_allclose(got, exp, atol=0.6e-4, equal_nan=True)  # int16, scale 1e-4
            assert np.nanmax(np.abs(exp)) > 1e-3  # bicubic is not PSF-consistent: a non-trivial check


def test_uncertainty_is_zero_for_the_flip_equivariant_bicubic_engine(runs):
    from lssr_ray.mapping.store import open_store

    ds = open_store(runs["with"][0].out)
    u = ds.uncertainty.isel(time=0).values
    assert np.isfinite(u).mean() > 0.5
    assert np.nanmax(u) <= 1e-4  # bicubic x3 commutes with flips and rotations; ignores the SAR flag


def test_quicklook_shows_input_bicubic_lssr_and_trust_panels(runs):
    import matplotlib.image as mpimg

    from lssr_ray.mapping.quicklook import render

    for key, panels in (("with", 4), ("without", 4)):
        (png,) = runs[key][2].quicklooks
        img = mpimg.imread(png)
        assert img.shape[1] > (panels - 0.5) * img.shape[0] * 0.9, img.shape  # panels side by side
    rng = np.random.default_rng(0)
    rgb30 = rng.uniform(0.02, 0.2, (3, 20, 20)).astype(np.float32)
    rgb10 = rgb30.repeat(3, 1).repeat(3, 2)
    _, titles = render(rgb30, rgb10, trust=np.abs(rng.normal(0, 0.01, (60, 60))), trust_name="uncertainty")
    assert [t.split(" ")[0] for t in titles] == ["input", "bicubic", "LSSR", "uncertainty"]
    _, titles = render(rgb30, rgb10)
    assert len(titles) == 3


@pytest.fixture(scope="module")
def flanders_chip():
    from lssr_ray.mapping.plan import plan_map, work_items
    from lssr_ray.mapping.udfs import ReadChips

    cfg = MapConfig(aoi=FLANDERS, start="2018-07-01", end="2018-07-01", dates="all", batch_size=1)
    plan = plan_map(cfg)
    rows = ReadChips(plan.stage.plan, plan.stage.granules, aux=plan.stage.aux)(
        {k: np.asarray([it[k] for it in work_items(plan, {})]) for k in ("chips", "ti", "granules")})
    assert list(rows["status"]) == ["ok"]
    return rows


def test_lssr_engine_has_positive_uncertainty_and_its_plain_output_is_unchanged(flanders_chip):
    from lssr_ray.config import DEFAULT_CHECKPOINT_DIR
    from lssr_ray.mapping.udfs import LSSRPredictor
    from lssr_ray.model.trust import consistency

    pred = LSSRPredictor(engine="torch", checkpoint=str(DEFAULT_CHECKPOINT_DIR), batch_size=1, uncertainty=True)
    out = pred(flanders_chip)
    plain = pred.predict({k: flanders_chip[k] for k in ("lr", "dem", "landcover", "sar", "month", "present")})
    np.testing.assert_allclose(out["sr"], plain, atol=1e-6, equal_nan=True)  # sr is the identity variant
    u = out["uncertainty"][0]
    assert u.shape == (6, 192, 192) and np.array_equal(np.isnan(u), np.isnan(out["sr"][0]))
    assert np.nanmean(u) > 1e-4, np.nanmean(u)  # a learned model is not exactly flip/rotation/SAR invariant
    want = consistency(out["sr"], flanders_chip["lr"]).repeat(3, 2).repeat(3, 3)
    np.testing.assert_allclose(out["consistency"], want, atol=1e-6, equal_nan=True)
    assert "uncertainty" not in LSSRPredictor(engine="bicubic", batch_size=1)(flanders_chip)
