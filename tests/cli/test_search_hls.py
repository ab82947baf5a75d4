"""``jobs/search_hls.py`` end to end, as a user runs it: a subprocess against the loopback replay of
recorded CMR-STAC documents (``stac_api`` fixture), writing a static catalog."""

from __future__ import annotations

import json
import subprocess
import sys

import pystac

from lssr_ray.config import REPO_ROOT
from lssr_ray.data.catalog import open_catalog
from lssr_ray.data.mgrs import tile_grid
from lssr_ray.data.stac_replay import RECORDINGS

JOB = str(REPO_ROOT / "jobs" / "search_hls.py")
LA = str(RECORDINGS / "aoi_los_angeles.geojson")
SOURCES = json.loads((RECORDINGS / "sources" / "granules.json").read_text())
RECORDED = SOURCES["recorded_search_summary"]["items"]
IOWA = SOURCES["named_granules"]["items"]
IOWA_AOI = json.loads((REPO_ROOT / "examples" / "iowa.geojson").read_text())


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, JOB, *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                          check=False)


def test_job_writes_a_catalog_of_the_clear_items_found(stac_api, tmp_path):
    out = tmp_path / "la" / "catalog.json"
    run = _run("--aoi", LA, "--start", "2025-01-01", "--end", "2025-01-07", "--max-cloud", "10",
               "--stac-url", stac_api.url, "--page-size", "2", "--out", str(out))
    assert run.returncode == 0, run.stderr
    clear = [r for r in RECORDED if r["eo:cloud_cover"] <= 10]
    n_l30 = sum(".L30." in r["id"] for r in clear)
    assert f"3 page(s), {len(clear)} item(s)" in run.stdout
    assert f"HLSL30_2.0: {n_l30}" in run.stdout and f"HLSS30_2.0: {len(clear) - n_l30}" in run.stdout
    assert "10 matched without it" in run.stdout
    assert f"catalog -> {out}" in run.stdout
    cat = pystac.Catalog.from_file(str(out))
    assert sorted(it.id for it in cat.get_items()) == sorted(r["id"] for r in clear)
    assert all("proj:" not in json.dumps(it.to_dict()) for it in cat.get_items())
    # the searches went to the replay (the server saw every page request, POST with a cursor)
    assert [s["method"] for s in stac_api.searches()][-3:] == ["POST"] * 3


def test_job_over_iowa_writes_a_catalog_of_the_real_iowa_granules_of_that_day(stac_api, tmp_path):
    """The README path: ``--aoi examples/iowa.geojson`` against the replay; 2017-06-16 has one
    recorded L30 and one S30 granule over Iowa (PROVENANCE.md: ids named in public code)."""
    out = tmp_path / "iowa" / "catalog.json"
    run = _run("--aoi", "examples/iowa.geojson", "--start", "2017-06-16", "--end", "2017-06-16",
               "--stac-url", stac_api.url, "--out", str(out))
    assert run.returncode == 0, run.stderr
    day = sorted(r["id"] for r in IOWA if ".2017167T" in r["id"])
    assert day == ["HLS.L30.T15TUG.2017167T165321.v2.0", "HLS.S30.T15TXG.2017167T170311.v2.0"]
    assert "1 page(s), 2 item(s)" in run.stdout
    assert "HLSL30_2.0: 1" in run.stdout and "HLSS30_2.0: 1" in run.stdout
    saved = [it.to_dict() for it in pystac.Catalog.from_file(str(out)).get_items()]
    assert sorted(d["id"] for d in saved) == day
    assert all(not any(k.startswith("proj:") for k in d["properties"]) for d in saved)
    # the saved catalog is what map_region reads: the grid comes from the tile id, equal to tile_grid
    granules = {g.id: g for g in open_catalog(out).search(IOWA_AOI, start="2017-06-16", end="2017-06-16")}
    assert sorted(granules) == day
    for g in granules.values():
        epsg, transform, shape = tile_grid(g.id.split(".")[2])
        assert (g.crs, g.transform, g.shape) == (f"EPSG:{epsg}", transform, shape) and shape == (3660, 3660)
        assert g.assets["B04"].startswith("https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/")
    assert open_catalog(out, asset_access="s3").get(day[1]).assets["B8A"].startswith("s3://lp-prod-protected/HLSS30.020/")


def test_job_over_iowa_finds_every_recorded_iowa_granule_and_nothing_outside_their_dates(stac_api, tmp_path):
    run = _run("--aoi", "examples/iowa.geojson", "--start", "2017-01-01", "--end", "2024-12-31",
               "--stac-url", stac_api.url, "--page-size", "3", "--out", str(tmp_path / "all"))
    assert run.returncode == 0, run.stderr
    assert f"2 page(s), {len(IOWA)} item(s)" in run.stdout and "HLSL30_2.0: 2" in run.stdout
    assert sorted(it.id for it in pystac.Catalog.from_file(str(tmp_path / "all" / "catalog.json")).get_items()) \
        == sorted(r["id"] for r in IOWA)
    # a week with no recorded Iowa granule: a clear refusal, nothing written
    out = tmp_path / "iowa-2025"
    run = _run("--aoi", "examples/iowa.geojson", "--start", "2025-01-01", "--end", "2025-01-07",
               "--stac-url", stac_api.url, "--out", str(out))
    assert run.returncode == 2
    assert "error: no items of HLSL30_2.0, HLSS30_2.0 over examples/iowa.geojson" in run.stderr
    assert not out.exists()


def test_job_cloud_limit_drops_iowa_granules_whose_cloud_cover_is_unknown(stac_api, tmp_path):
    """No cloud cover was recorded for the Iowa ids, so their items carry no ``eo:cloud_cover``;
    a server-side cloud query does not match such items (the replay's rule, as CMR-STAC's)."""
    run = _run("--aoi", "examples/iowa.geojson", "--start", "2017-06-16", "--end", "2017-06-16",
               "--max-cloud", "100", "--stac-url", stac_api.url, "--out", str(tmp_path / "x"))
    assert run.returncode == 2 and "with eo:cloud_cover <= 100" in run.stderr
    assert stac_api.searches()[-1]["body"]["query"] == {"eo:cloud_cover": {"lte": 100}}


def test_job_reports_an_unreachable_api_in_one_line(stac_api, tmp_path):
    stac_api.fail(503, times=None)
    run = _run("--aoi", LA, "--start", "2025-01-01", "--end", "2025-01-07", "--stac-url", stac_api.url,
               "--max-retries", "1", "--backoff", "0.01", "--out", str(tmp_path / "x"))
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HTTP 503" in errors[0] and stac_api.url in errors[0]


def test_map_region_stac_url_searches_once_and_a_rerun_reuses_the_saved_search(stac_api, tmp_path):
    """``lssr-map --stac-url``: the search is saved next to the store, so a resumed run keeps its inputs."""
    import dataclasses

    import pytest

    from lssr_ray.cli.map_region import searched_catalog
    from lssr_ray.config import MapConfig
    from lssr_ray.errors import ConfigError

    cfg = MapConfig(aoi=LA, stac_url=stac_api.url, start="2025-01-01", end="2025-01-07",
                    out=str(tmp_path / "la.zarr"))
    got = searched_catalog(cfg)
    assert got.catalog == str(tmp_path / "la.zarr.search" / "catalog.json")
    assert len(list(pystac.Catalog.from_file(got.catalog).get_items())) == len(RECORDED)
    searched = len(stac_api.searches())
    assert searched >= 1
    assert searched_catalog(cfg).catalog == got.catalog and len(stac_api.searches()) == searched
    searched_catalog(dataclasses.replace(cfg, overwrite=True))
    assert len(stac_api.searches()) > searched
    with pytest.raises(ConfigError, match="needs --start and --end"):
        searched_catalog(dataclasses.replace(cfg, start=None))
