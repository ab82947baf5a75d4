"""The Iowa dry run's machinery: the tile list, the synthetic-pixel granules, and one small run
(one tile, 64 chips) through plan -> Ray Data stage 1 -> partials -> blend -> store."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from lssr_ray.config import MapConfig
from tests._jobs import load_bench

dry = load_bench("iowa_dry_run")


def _iowa():
    from lssr_ray.data.aoi import read_aoi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Iowa spans two UTM zones: read_aoi says so
        return read_aoi(dry.IOWA)


def test_iowa_tiles_are_real_and_cover_the_state():
    import shapely
    from affine import Affine
    from odc.geo.geobox import GeoBox

    from lssr_ray.data import hls

    aoi = _iowa()
    tiles = dry.iowa_tiles(aoi)
    # tiles of real HLS items over Iowa (recorded samples and scripts/make_hls_cogs.py)
    assert {"15TVG", "15TWG", "15TUG", "15TWH"} <= set(tiles)
    assert {t[:2] for t in tiles} == {"14", "15"}  # Iowa reaches 96.6 W, west of the 96 W zone edge
    prints = {}
    for t in tiles:
        epsg, transform, shape = hls.tile_grid(t)
        prints[t] = GeoBox(shape, Affine(*transform), f"EPSG:{epsg}").extent.to_crs("EPSG:4326").geom
        assert prints[t].intersects(aoi.geometry), t
    covered = aoi.geometry.difference(shapely.union_all(list(prints.values())))
    assert covered.area < 1e-9 * aoi.geometry.area  # every part of Iowa lies in some tile
    # each tile is needed: without it some of Iowa (or of the tile's own zone) would be uncovered
    assert 30 <= len(tiles) <= 40


def test_synthetic_granules_read_the_source_pixels_on_the_tile_grid(tmp_path):
    import rasterio

    from lssr_ray.data import hls
    from lssr_ray.data.catalog import open_catalog
    from lssr_ray.data.readers import read_raster

    path = dry.make_catalog(tmp_path / "cat", ["15TVG"], dates=2)
    cat = open_catalog(path)
    assert len(cat) == 2 and {g.datetime.day for g in cat.granules} == {29, 15}
    g = cat.granules[0]
    epsg, transform, shape = hls.tile_grid("15TVG")
    assert (g.crs, tuple(g.transform), g.shape) == (f"EPSG:{epsg}", tuple(transform), shape)
    item = json.loads((tmp_path / "cat" / g.id / f"{g.id}.json").read_text())
    assert item["stac_version"] == "1.1.0" and "eo:cloud_cover" in item["properties"]
    assert item["assets"]["B04"]["href"] == f"./{g.id}.B04.vrt" and item["assets"]["s3_B04"]["href"].startswith("s3://")
    with rasterio.open(dry.SOURCE / f"{dry.SOURCE.name}.B04.tif") as src:
        red = src.read(1)
    # a window across a repeat seam of the 603 x 627 px source
    from affine import Affine

    r0, c0, h, w = 590, 620, 30, 20
    t = Affine(*transform) * Affine.translation(c0, r0)
    got = read_raster(g.assets["B04"], f"EPSG:{epsg}", transform=t, shape=(h, w), fill=hls.NODATA, dtype="int16")[0]
    rows = (r0 + np.arange(h)) % red.shape[0]
    cols = (c0 + np.arange(w)) % red.shape[1]
    np.testing.assert_array_equal(got, red[np.ix_(rows, cols)])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("iowa-dry")
    saved: list[dict] = []
    sec = dry.dry_run(work, run_chips=[64], tiles=["15TVG"], log=lambda *_: None, on_run=saved.append)
    return work, sec, saved


def test_small_dry_run_plans_the_tile_and_writes_the_block(small_run):
    from lssr_ray.mapping.partials import done_chip_ids, parse_chip_id
    from lssr_ray.mapping.store import open_store

    work, sec, _ = small_run
    p, (r,) = sec["planned"], sec["runs"]
    # one tile: the AOI is clipped to its footprint; 109.8 km / 1.68 km cores ~ 65 x 65 chips
    assert 3500 < p["chips"] < 4500 and p["granules"] == 1
    # one read item per block x block square of the lattice (edge squares hold fewer chips)
    assert p["chips"] / sec["block"] ** 2 <= p["work_items"] < 1.2 * p["chips"] / sec["block"] ** 2 + 2 * 66 / sec["block"]
    assert r["chips"] == r["chip_dates"] == 64 and r["computed"] == 64 and r["ok"] + sum(r["skipped"].values()) == 64
    assert r["chunks_written"] == r["ok"] > 0
    assert r["driver_ms_per_chip_stage1"] > 0 and r["peak_rss_mb"]["driver"] > 100
    assert set(r["actor_ms_per_chip"]) == {"read", "infer", "commit"} and r["actor_ms_per_chip"]["infer"] > 0
    assert "lssr_actor" in r["peak_rss_mb"] and "blend_actor" in r["peak_rss_mb"]
    print(dry.table(sec))  # the table renders from the section
    store = work / "run64.zarr"
    done = sorted(done_chip_ids(str(store), 0))
    assert len(done) == 64
    rows, cols = zip(*(parse_chip_id(c) for c in done))
    assert max(rows) - min(rows) == max(cols) - min(cols) == 7  # a square 8 x 8 block
    ds = open_store(str(store))
    assert tuple(ds.reflectance.shape[2:]) == tuple(p["output_shape"])  # the whole tile's grid
    c = ds.attrs["chunk_size_px"]
    inside = ds.valid[0, rows[0] * c:(rows[0] + 1) * c, cols[0] * c:(cols[0] + 1) * c].values
    outside = ds.valid[0, (max(rows) + 2) * c:(max(rows) + 3) * c, cols[0] * c:(cols[0] + 1) * c].values
    assert inside.mean() > 0.5 and outside.max() == 0  # only the block was run


def test_small_dry_run_reflectance_follows_the_synthetic_input(small_run):
    """The store holds the synthetic input x3 bicubic: red averaged back to 30 m ~ the granule's red."""
    from affine import Affine

    from lssr_ray.data import hls
    from lssr_ray.data.readers import read_raster
    from lssr_ray.mapping.partials import done_chip_ids, parse_chip_id
    from lssr_ray.mapping.store import open_store

    work, _, _ = small_run
    ds = open_store(str(work / "run64.zarr"))
    c = ds.attrs["chunk_size_px"]
    row, col = parse_chip_id(sorted(done_chip_ids(str(work / "run64.zarr"), 0))[27])
    out = ds.reflectance[0, list(ds.band.values).index("red"), row * c:(row + 1) * c, col * c:(col + 1) * c]
    a, _, x0, _, e, y0 = ds.rio.transform()[:6]
    gid = ds.granules.values[0].split(",")[0]
    t = Affine(30.0, 0, x0 + col * c * a, 0, -30.0, y0 + row * c * e)
    href = str(work / "catalog" / gid / f"{gid}.B04.vrt")
    dn = read_raster(href, str(ds.rio.crs), transform=t, shape=(c // 3, c // 3), fill=hls.NODATA, dtype="int16")[0]
    ref = np.where(dn == hls.NODATA, np.nan, dn * hls.SCALE)
    k = c // 3
    blocks = out.values.reshape(k, 3, k, 3)  # each 30 m input pixel is 3 x 3 output pixels
    seen = np.isfinite(blocks).all(axis=(1, 3)) & np.isfinite(ref)
    assert seen.mean() > 0.5
    mean3 = blocks.mean(axis=(1, 3))[seen]
    # bicubic x3 reproduces the 30 m pixels it came from, up to its overshoot at edges
    assert abs(mean3.mean() - ref[seen].mean()) < 0.005
    assert np.corrcoef(mean3, ref[seen])[0, 1] > 0.95


def test_dry_run_saves_its_section_before_each_run_size(small_run):
    import ray.data

    _, sec, saved = small_run
    (before,) = saved  # one run size: saved once, after planning, before the run
    assert before["runs"] == [] and before["planned"] == sec["planned"] and len(sec["runs"]) == 1
    assert (sec["block"], sec["batch_size"]) == (MapConfig.block, MapConfig.batch_size) == (8, 4)  # the job's defaults
    # stage 1 turned Ray Data's own progress bars off (the job counts chips itself)
    ctx = ray.data.DataContext.get_current()
    assert not (ctx.enable_progress_bars or ctx.enable_operator_progress_bars or ctx.execution_options.verbose_progress)


def test_larger_read_blocks_commit_the_same_partials(small_run, tmp_path_factory):
    """The default block 8 (64 chips per read, one LSSR and one commit call per block) against
    --block 2: the same chips committed with the same pixels, through fewer read items."""
    from lssr_ray.mapping.partials import done_chip_ids, load_partial

    work, sec, _ = small_run
    work2 = tmp_path_factory.mktemp("iowa-dry-b2")
    sec2 = dry.dry_run(work2, run_chips=[64], tiles=["15TVG"], block=2, log=lambda *_: None)
    assert sec2["block"] == 2 and sec["planned"]["work_items"] < sec2["planned"]["work_items"] / 8
    s2, s4 = str(work2 / "run64.zarr"), str(work / "run64.zarr")
    ids = sorted(done_chip_ids(s2, 0))
    assert len(ids) == 64 and sorted(done_chip_ids(s4, 0)) == ids
    for cid in ids:
        a, b = load_partial(s2, 0, cid), load_partial(s4, 0, cid)
        assert a.record["status"] == b.record["status"] and a.record.get("window") == b.record.get("window"), cid
        if a.sr is None:
            assert b.sr is None, cid
            continue
        np.testing.assert_array_equal(a.sr, b.sr, err_msg=cid)
        assert a.layers.keys() == b.layers.keys()
        for k in a.layers:
            np.testing.assert_array_equal(a.layers[k], b.layers[k], err_msg=f"{cid} {k}")


def test_markdown_reads_the_named_section(small_run, tmp_path, capsys):
    """``--section`` keeps an all-chip run apart from the 1k / 10k rows; ``--markdown`` prints the one named."""
    _, sec, _ = small_run
    other = {**sec, "runs": []}
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"iowa_dry_run": other, "iowa_dry_run_all": sec}))
    assert dry.main(["--markdown", "--results", str(results), "--section", "iowa_dry_run_all"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| 64 |")]
    assert len(rows) == 1
    assert dry.main(["--markdown", "--results", str(results)]) == 0
    assert not [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| 64 |")]
