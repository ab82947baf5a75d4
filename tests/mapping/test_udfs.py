"""The pipeline's UDFs on hand-made batches of real chips (no Ray), and engine parity."""

from __future__ import annotations

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT, MapConfig
from lssr_ray.mapping.blend import blend_chunk
from lssr_ray.mapping.partials import load_neighbourhood, load_partial
from lssr_ray.mapping.plan import plan_map, work_items
from lssr_ray.mapping.stage_infer import predictor_kwargs
from lssr_ray.mapping.udfs import (
    BlendAndWrite,
    CommitPartials,
    LSSRPredictor,
    ReadChips,
)

FLANDERS = str(REPO_ROOT / "examples" / "flanders_31UDS.geojson")


def _items_batch(items):
    return {k: np.asarray([it[k] for it in items]) for k in items[0]}


@pytest.fixture(scope="module")
def flanders():
    """Flanders plan over 4 dates (1 chip each) and the read rows of every date."""
    cfg = MapConfig(aoi=FLANDERS, start="2018-07-01", end="2018-07-23", dates="all", batch_size=4)
    plan = plan_map(cfg)
    reader = ReadChips(plan.stage.plan, plan.stage.granules, aux=plan.stage.aux)
    rows = reader(_items_batch(work_items(plan, {})))
    return cfg, plan, rows


def test_read_chips_follows_the_batch_contract(flanders):
    _, plan, rows = flanders
    assert [str(d) for d in plan.times] == ["2018-07-01", "2018-07-17", "2018-07-18", "2018-07-23"]
    b = len(plan.times)
    assert rows["lr"].shape == (b, 6, 64, 64) and rows["lr"].dtype == np.float32
    assert rows["dem"].shape == (b, 1, 192, 192) and rows["landcover"].dtype == np.int64
    assert rows["sar"].shape == (b, 2, 192, 192) and rows["present"].shape == (b, 3)
    assert list(rows["ti"]) == [0, 1, 2, 3]
    assert set(rows["status"]) == {"ok"}
    # the granule of each date is used (L30 on 07-01/07-17, S30 on 07-18/07-23)
    assert [g.split(".")[1] for g in rows["granules"]] == ["L30", "L30", "S30", "S30"]
    assert list(rows["month"]) == [7, 7, 7, 7]
    chip = plan.stage.plan.chips[0]
    assert tuple(rows["window"][0]) == chip.output_window
    # clear 30 m pixels hold HLS reflectance in [-0.01, 1.6], cloud/nodata NaN
    lr = rows["lr"][0]
    assert np.isfinite(lr).any() and np.nanmin(lr) >= -0.01 and np.nanmax(lr) <= 1.6


@pytest.fixture(scope="module")
def predictors(flanders):
    cfg, plan, _ = flanders
    ort = LSSRPredictor(**predictor_kwargs(plan))
    torch_plan = plan_map(MapConfig(**{**cfg.__dict__, "engine": "torch"}))
    tor = LSSRPredictor(**predictor_kwargs(torch_plan))
    return ort, tor


def test_torch_and_onnxruntime_agree_on_real_chips(flanders, predictors):
    _, _, rows = flanders
    ort, tor = predictors
    assert (ort.kind, tor.kind) == ("onnxruntime", "torch")
    a, b = ort(rows), tor(rows)
    assert a["sr"].shape == (4, 6, 192, 192) and a["sr"].dtype == np.float32
    nan_a, nan_b = np.isnan(a["sr"]), np.isnan(b["sr"])
    assert np.array_equal(nan_a, nan_b)
    # nodata in -> nodata out: each NaN 30 m pixel gives NaN on its 3x3 children
    invalid30 = ~np.isfinite(rows["lr"]).all(axis=1)
    assert np.array_equal(nan_a[:, 0], invalid30.repeat(3, 1).repeat(3, 2))
    diff = np.nanmax(np.abs(a["sr"] - b["sr"]))
    assert diff < 1e-4, diff  # reflectance units; measured ~1e-6


def test_predictor_passes_skipped_rows_through(flanders, predictors):
    _, _, rows = flanders
    ort, _ = predictors
    batch = {k: v.copy() for k, v in rows.items()}
    batch["status"] = np.asarray(["ok", "skipped", "ok", "ok"])
    out = ort(batch)
    assert np.isnan(out["sr"][1]).all()
    ref = ort({k: v[[0]] for k, v in rows.items()})["sr"][0]
    np.testing.assert_array_equal(out["sr"][0], ref)  # a row does not depend on its batch mates
    assert "lr" not in out and list(out["chip_id"]) == list(rows["chip_id"])


def test_commit_then_blend_and_write(tmp_path, flanders, predictors):
    from lssr_ray.mapping.store import create_store, open_store

    _, plan, rows = flanders
    ort, _ = predictors
    g = plan.stage.plan.grid
    store = str(tmp_path / "s.zarr")
    create_store(store, crs=g.crs, transform=tuple(g.output_transform)[:6], shape=g.output_shape,
                 chunk=plan.stage.plan.chunk_size, times=plan.times)
    pred = ort(rows)
    pred["status"] = np.asarray(["ok", "ok", "skipped", "ok"])
    pred["reason"] = np.asarray(["", "", "all_cloud", ""])
    out = CommitPartials(store)(pred)
    assert list(out["status"]) == ["ok", "ok", "skipped", "ok"] and "sr" not in out
    p0 = load_partial(store, 0, "r0000c0000")
    np.testing.assert_array_equal(p0.sr, pred["sr"][0])
    assert p0.record["granules"] == [rows["granules"][0]] and p0.record["window"] == list(rows["window"][0])
    assert load_partial(store, 2, "r0000c0000").record["reason"] == "all_cloud"

    bw = BlendAndWrite(store, core=168, halo=12)
    res = bw({"row": np.array([0, 0]), "col": np.array([0, 0]), "ti": np.array([0, 2])})
    assert list(res["written"]) == [True, False]  # nothing to blend for the skipped date
    ds = open_store(store)
    want = blend_chunk(load_neighbourhood(store, 0, 0, 0), core=168, halo=12)
    got = ds.reflectance.isel(time=0).values
    fin = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), fin)
    # int16 x 1e-4, clipped only to HLS's valid range (-0.01 .. 1.6): negative predictions keep their sign
    np.testing.assert_allclose(got[fin], np.clip(want[fin], -0.01, 1.6), atol=0.5e-4 + 1e-7)
    assert ds.valid.isel(time=2).values.max() == 0


def test_uncertainty_layer_is_engine_independent(flanders, predictors):
    """The trust layer goes through each engine's own predict: onnxruntime and torch agree."""
    _, _, rows = flanders
    one = {k: np.asarray(v)[:1] for k, v in rows.items()}
    ort, tor = predictors
    try:
        ort.uncertainty = tor.uncertainty = True
        a, b = ort(one), tor(one)
    finally:
        ort.uncertainty = tor.uncertainty = False
    assert a["uncertainty"].shape == a["consistency"].shape == (1, 6, 192, 192)
    assert np.nanmean(a["uncertainty"]) > 1e-4  # the learned model is not variant-invariant
    for k in ("sr", "consistency", "uncertainty"):
        assert np.nanmax(np.abs(a[k] - b[k])) < 1e-4, k
