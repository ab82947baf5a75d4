"""End to end on the real HLS format: jobs/map_region.py --catalog <real-shaped CMR-STAC items>
--asset-access s3 over a full-size 3660 x 3660 granule on loopback S3 writes the store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests._jobs import load_job


@pytest.fixture(scope="module")
def ray_session():
    import ray

    yield
    ray.shutdown()


def test_map_region_on_real_shaped_items_and_full_size_cogs_over_s3(hls_full_granule, s3_env, ray_session,
                                                                     tmp_path, capsys):
    from lssr_ray.data import hls
    from lssr_ray.data.aoi import write_box_aoi
    from lssr_ray.mapping.store import open_store

    g = hls_full_granule["granules"][0]
    epsg, t, _ = hls.tile_grid(g["tile"])
    x0, y1 = t[2] + 60_000.0, t[5] - 30_000.0  # 2 x 2 chips well inside the tile
    aoi = write_box_aoi(tmp_path / "aoi.geojson", (x0, y1 - 2970.0, x0 + 2970.0, y1), f"EPSG:{epsg}")
    out, summary_json = tmp_path / "iowa.zarr", tmp_path / "summary.json"
    rc = load_job("map_region").main([
        "--aoi", aoi, "--catalog", str(hls_full_granule["catalog"]), "--asset-access", "s3", "--out", str(out),
        "--engine", "bicubic", "--dates", "clearest", "--classifier", "none", "--no-quicklook", "--no-progress",
        "--yes", "--summary-json", str(summary_json)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    summary = json.loads(summary_json.read_text())
    assert summary["chips"] == 4 and summary["computed"] == 4 and not summary["skipped"], summary
    ds = open_store(str(out))
    assert ds.rio.crs.to_epsg() == epsg
    # the grid snaps to the granule's 30 m lattice, known from the tile id alone (the items have no proj:*)
    assert (ds.rio.transform().c - t[2]) % 30 == pytest.approx(0, abs=1e-6)
    assert (ds.rio.transform().f - t[5]) % 30 == pytest.approx(0, abs=1e-6)
    assert [str(d)[:10] for d in ds.time.values] == ["2021-06-29"]
    refl = ds.reflectance.values  # (time, band, y, x), decoded, NaN fill
    valid = np.broadcast_to(ds.valid.values.astype(bool)[:, None], refl.shape)
    assert valid.mean() > 0.5  # the source is about 6 % cloud (16 % with the adjacent ring)
    assert np.isfinite(refl[valid]).all() and not np.isfinite(refl[~valid]).any()
    assert 0.0 < float(np.nanmedian(refl)) < 0.6  # reflectance, not raw int16 DN
