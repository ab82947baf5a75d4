"""``jobs/search_hls.py`` end to end, as a user runs it: a subprocess against the loopback replay of
recorded CMR-STAC documents (``stac_api`` fixture), writing a static catalog."""

from __future__ import annotations

import json
import subprocess
import sys

import pystac

from lssr_ray.config import REPO_ROOT
from lssr_ray.data.stac_replay import RECORDINGS

JOB = str(REPO_ROOT / "jobs" / "search_hls.py")
LA = str(RECORDINGS / "aoi_los_angeles.geojson")
RECORDED = json.loads((RECORDINGS / "sources" / "granules.json").read_text())["recorded_search_summary"]["items"]


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


def test_job_over_an_aoi_without_granules_says_so_and_writes_nothing(stac_api, tmp_path):
    """The replay holds no Iowa granule (data/samples/cmr_stac/PROVENANCE.md): a clear refusal."""
    out = tmp_path / "iowa"
    run = _run("--aoi", "examples/iowa.geojson", "--start", "2025-01-01", "--end", "2025-01-07",
               "--stac-url", stac_api.url, "--out", str(out))
    assert run.returncode == 2
    assert "error: no items of HLSL30_2.0, HLSS30_2.0 over examples/iowa.geojson" in run.stderr
    assert not out.exists()


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
