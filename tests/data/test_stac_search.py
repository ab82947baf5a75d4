"""HLS search with pystac-client against the loopback replay of recorded CMR-STAC documents
(``stac_api`` fixture, ``data/samples/cmr_stac``), and the static catalog it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
from pystac_client import Client

from lssr_ray.data.aoi import parse_aoi, read_aoi
from lssr_ray.data.catalog import stac_io
from lssr_ray.data.stac_replay import RECORDINGS
from lssr_ray.data.stac_search import CATALOG_ID, run_search, search_hls, write_catalog
from lssr_ray.errors import ConfigError, StorageUnreachableError


def _same_properties(got: dict, recorded: dict) -> bool:
    """Equal properties; pystac writes the same ``datetime`` instant with microseconds."""
    from pystac.utils import str_to_datetime

    when = {k for k in recorded if k.endswith("datetime")}
    return ({k: v for k, v in got.items() if k not in when} == {k: v for k, v in recorded.items() if k not in when}
            and all(str_to_datetime(got[k]) == str_to_datetime(recorded[k]) for k in when))


LA = RECORDINGS / "aoi_los_angeles.geojson"
RECORDED = json.loads((RECORDINGS / "sources" / "granules.json").read_text())["recorded_search_summary"]["items"]
WEEK = ("2025-01-01", "2025-01-07")
FAST = {"backoff_factor": 0.01}


def _box(x0, y0, x1, y1):
    return parse_aoi({"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]})


def test_replayed_api_is_a_stac_api_pystac_client_can_open(stac_api):
    client = Client.open(stac_api.url)
    assert client.id == "LPCLOUD"
    assert sorted(c.id for c in client.get_collections()) == ["HLSL30_2.0", "HLSS30_2.0"]
    assert client.conforms_to("ITEM_SEARCH") and client.conforms_to("QUERY")
    coll = client.get_collection("HLSS30_2.0")
    assert coll.extra_fields["storage:schemes"]["aws"]["bucket"] == "lp-prod-protected"
    # links lead back to loopback, never to the real host
    assert all(link.href.startswith(stac_api.origin) for link in client.links if link.rel in ("self", "search"))


def test_search_covers_both_collections_and_follows_every_page(stac_api):
    res = run_search(read_aoi(LA), *WEEK, stac_url=stac_api.url, page_size=3, **FAST)
    assert sorted(it.id for it in res.items) == sorted(r["id"] for r in RECORDED)
    assert res.per_collection == {"HLSL30_2.0": 4, "HLSS30_2.0": 6}
    assert res.pages == 4  # 10 items, 3 a page
    searches = stac_api.searches()
    assert len(searches) == 4
    assert [s["body"].get("cursor") for s in searches] == [None, "3", "6", "9"]
    assert searches[0]["body"]["collections"] == ["HLSL30_2.0", "HLSS30_2.0"]
    assert searches[0]["body"]["intersects"]["type"] == "Polygon"


def test_items_come_back_as_recorded_with_no_proj_fields(stac_api):
    items = search_hls(read_aoi(LA), *WEEK, stac_url=stac_api.url, **FAST)
    for item in items:
        recorded = json.loads((RECORDINGS / "items" / f"{item.id}.json").read_text())
        assert item.to_dict()["assets"] == recorded["assets"]
        assert _same_properties(item.properties, recorded["properties"])
        assert not [k for k in json.dumps(item.to_dict()).split('"') if k.startswith("proj:")]
        assert item.assets["s3_B04"].href.startswith("s3://lp-prod-protected/")


def test_cloud_filter_runs_on_the_server_and_keeps_exactly_the_clear_items(stac_api):
    res = run_search(read_aoi(LA), *WEEK, stac_url=stac_api.url, max_cloud=10, **FAST)
    assert sorted(it.id for it in res.items) == sorted(r["id"] for r in RECORDED if r["eo:cloud_cover"] <= 10)
    assert len(res.items) == 6 and res.matched_before_cloud == 10 and res.cloud_dropped == 0
    assert stac_api.searches()[-1]["body"]["query"] == {"eo:cloud_cover": {"lte": 10}}


def test_cloud_filter_is_checked_again_when_the_server_ignores_it(stac_api, monkeypatch):
    select = stac_api.recordings.select
    monkeypatch.setattr(stac_api.recordings, "select", lambda p: select({k: v for k, v in p.items() if k != "query"}))
    res = run_search(read_aoi(LA), *WEEK, stac_url=stac_api.url, max_cloud=10, **FAST)
    assert len(res.items) == 6 and res.cloud_dropped == 4
    assert all(it.properties["eo:cloud_cover"] <= 10 for it in res.items)


def test_aoi_and_dates_change_the_results(stac_api):
    url = stac_api.url
    north_tile_only = _box(-118.8, 34.5, -118.5, 34.9)  # inside T11SLU, north of T11SLT
    ids = [it.id for it in search_hls(north_tile_only, *WEEK, stac_url=url, **FAST)]
    assert ids and all(".T11SLU." in i for i in ids) and len(ids) == 5
    one_day = [it.id for it in search_hls(read_aoi(LA), "2025-01-05", "2025-01-05", stac_url=url, **FAST)]
    assert sorted(one_day) == sorted(r["id"] for r in RECORDED if r["datetime"].startswith("2025-01-05"))
    uae = [it.id for it in search_hls(_box(55.8, 23.8, 55.9, 23.9), "2020-04-25", "2020-04-25", stac_url=url, **FAST)]
    assert uae == ["HLS.L30.T40QCM.2020116T063954.v2.0"]
    assert len(search_hls(read_aoi("examples/iowa.geojson"), *WEEK, stac_url=url, **FAST)) == 0


IOWA = json.loads((RECORDINGS / "sources" / "granules.json").read_text())["named_granules"]["items"]


def test_iowa_search_finds_the_recorded_iowa_granules_by_day_and_sensor(stac_api):
    iowa, url = read_aoi("examples/iowa.geojson"), stac_api.url
    res = run_search(iowa, "2017-01-01", "2024-12-31", stac_url=url, **FAST)
    assert sorted(it.id for it in res.items) == sorted(r["id"] for r in IOWA)
    assert res.per_collection == {"HLSL30_2.0": 2, "HLSS30_2.0": 2}
    by_day = {d: sorted(it.id for it in search_hls(iowa, d, d, stac_url=url, **FAST))
              for d in ("2017-06-16", "2023-05-01", "2024-08-03", "2024-08-04")}
    assert by_day == {"2017-06-16": ["HLS.L30.T15TUG.2017167T165321.v2.0", "HLS.S30.T15TXG.2017167T170311.v2.0"],
                      "2023-05-01": ["HLS.L30.T15TWH.2023121T164646.v2.0"],
                      "2024-08-03": ["HLS.S30.T15TXF.2024216T165849.v2.0"], "2024-08-04": []}
    # only L30: the S30 item of the same day is left out
    assert [it.id for it in search_hls(iowa, "2017-06-16", "2017-06-16", stac_url=url,
                                       collections=("HLSL30_2.0",), **FAST)] == ["HLS.L30.T15TUG.2017167T165321.v2.0"]
    # the site of the recorded T15TXF search (41.19 N, 91.48 W) is in T15TXF, south of T15TXG (41.44 N)
    site = [it.id for it in search_hls(_box(-91.49, 41.19, -91.48, 41.20), "2017-01-01", "2024-12-31",
                                       stac_url=url, **FAST)]
    assert site == ["HLS.S30.T15TXF.2024216T165849.v2.0"]


def _utm_corners(item: dict) -> list[tuple[float, float]]:
    from pyproj import Transformer

    from lssr_ray.data.mgrs import tile_grid

    epsg = tile_grid(item["id"].split(".")[2])[0]
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    return [to_utm.transform(x, y) for x, y in item["geometry"]["coordinates"][0][:-1]]


@pytest.mark.parametrize("gid", ["HLS.S30.T11SLT.2025002T183751.v2.0", "HLS.L30.T11SLU.2025006T182824.v2.0",
                                 "HLS.L30.T15TUG.2017167T165321.v2.0", "HLS.S30.T15TXF.2024216T165849.v2.0"])
def test_footprints_not_recorded_are_the_tile_grid_square(gid):
    """The assembled footprints (no recorded polygon) are the 3660 x 3660 30 m tile in its UTM zone."""
    from lssr_ray.data.mgrs import tile_grid

    item = json.loads((RECORDINGS / "items" / f"{gid}.json").read_text())
    _, (res, _, x0, _, neg, y1), (rows, cols) = tile_grid(gid.split(".")[2])
    want = [(x0, y1), (x0, y1 + neg * rows), (x0 + res * cols, y1 + neg * rows), (x0 + res * cols, y1)]
    assert np.allclose(_utm_corners(item), want, atol=0.01)
    if ".T11SLT." in gid:  # north edge 3 800 000 rounded up onto the 60 m lattice
        assert y1 == 3_800_040


def test_assemble_reproduces_the_committed_documents(tmp_path):
    """assemble.py is deterministic and the committed items are its output (nothing hand-edited)."""
    import importlib.util
    import shutil

    for sub in ("sources", "collections"):
        shutil.copytree(RECORDINGS / sub, tmp_path / sub)
    spec = importlib.util.spec_from_file_location("cmr_stac_assemble", RECORDINGS / "assemble.py")
    assemble = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(assemble)
    assemble.HERE = tmp_path
    assemble.main()
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json") if p.parts[-2] != "sources"
                  and p.parent.name != "collections") + [Path("aoi_los_angeles.geojson")]
    committed = sorted(p.relative_to(RECORDINGS) for p in (RECORDINGS / "items").glob("*.json"))
    assert sorted(p for p in made if p.parts[0] == "items") == committed
    assert len(committed) == 16
    for rel in made:
        assert (tmp_path / rel).read_bytes() == (RECORDINGS / rel).read_bytes(), rel


def test_rate_limit_is_retried_and_the_search_succeeds(stac_api):
    stac_api.fail(429, times=2, retry_after=0)
    res = run_search(read_aoi(LA), *WEEK, stac_url=stac_api.url, page_size=5, **FAST)
    assert len(res.items) == 10 and res.pages == 2
    assert len(stac_api.searches()) == 2 + 2  # two refused, then the two pages


def test_persistent_server_error_gives_one_clear_line(stac_api):
    stac_api.fail(503, times=None)
    with pytest.raises(StorageUnreachableError) as err:
        run_search(read_aoi(LA), *WEEK, stac_url=stac_api.url, max_retries=2, **FAST)
    msg = str(err.value)
    assert stac_api.url in msg and "HTTP 503" in msg and "2 retries" in msg and "\n" not in msg
    assert len(stac_api.searches()) == 3  # the request and its two retries


def test_unreachable_api_and_refused_search_are_told_apart(stac_api, unused_port):
    with pytest.raises(StorageUnreachableError, match=f"127.0.0.1:{unused_port}"):
        run_search(read_aoi(LA), *WEEK, stac_url=f"http://127.0.0.1:{unused_port}/stac", max_retries=1, **FAST)
    stac_api.fail(400)
    with pytest.raises(ConfigError, match="refused the search \\(HTTP 400\\)"):
        run_search(read_aoi(LA), *WEEK, stac_url=stac_api.url, **FAST)


def test_bad_search_settings_are_config_errors():
    aoi = read_aoi(LA)
    with pytest.raises(ConfigError, match="max_cloud"):
        run_search(aoi, *WEEK, max_cloud=120)
    with pytest.raises(ConfigError, match="after end"):
        run_search(aoi, "2025-02-01", "2025-01-01")
    with pytest.raises(ConfigError, match="not an ISO date"):
        run_search(aoi, "yesterday", "2025-01-01")


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_written_catalog_opens_with_pystac_and_keeps_the_items(stac_api, tmp_path):
    items = search_hls(read_aoi(LA), *WEEK, stac_url=stac_api.url, max_cloud=10, **FAST)
    href = write_catalog(items, tmp_path / "hls" / "catalog.json")
    cat = pystac.Catalog.from_file(href)
    assert cat.id == CATALOG_ID
    got = {it.id: it for it in cat.get_items()}
    assert sorted(got) == sorted(it.id for it in items)
    for item_id, item in got.items():
        recorded = json.loads((RECORDINGS / "items" / f"{item_id}.json").read_text())
        d = item.to_dict()
        assert (d["assets"], d["geometry"], d["collection"]) == (recorded["assets"], recorded["geometry"],
                                                                 recorded["collection"])
        assert _same_properties(d["properties"], recorded["properties"])
        assert "proj:" not in json.dumps(d)

    # a rerun replaces the whole catalog: no item of the first run is left behind
    href2 = write_catalog(items[:2], tmp_path / "hls")
    assert href2 == href
    assert sorted(p.name for p in (tmp_path / "hls").iterdir()) == sorted(["catalog.json", items[0].id, items[1].id])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hls"]  # no staging or old folders left


def test_catalog_is_not_written_over_a_folder_it_did_not_write(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    items = pystac.ItemCollection([pystac.Item.from_file(str(next((RECORDINGS / "items").glob("*.json"))))])
    with pytest.raises(ConfigError, match="does not hold a catalog written by lssr-search-hls"):
        write_catalog(items, other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_catalog_written_to_s3_reads_back(stac_api, s3_bucket):
    url, _, client = s3_bucket
    items = search_hls(read_aoi(LA), *WEEK, stac_url=stac_api.url, **FAST)
    href = write_catalog(items, f"{url}/search/run1")
    assert href == f"{url}/search/run1/catalog.json"
    cat = pystac.Catalog.from_file(href, stac_io=stac_io())
    assert sorted(it.id for it in cat.get_items()) == sorted(it.id for it in items)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=url[5:])["Contents"]]
    assert len(keys) == len(items) + 1


def test_get_searches_page_by_cursor_links_and_a_static_catalog_is_served(tmp_path):
    """The GET form of the search (next = the search URL with a cursor, as CMR-STAC writes it) and
    the ``/static/`` folder: a catalog written here opens over HTTP."""
    from lssr_ray.data.stac_replay import StacReplayServer

    s30 = sorted((r for r in RECORDED if ".S30." in r["id"]), key=lambda r: (r["datetime"], r["id"]))
    items = [pystac.Item.from_file(str(RECORDINGS / "items" / f"{r['id']}.json")) for r in s30]
    write_catalog(items, tmp_path / "cat")
    with StacReplayServer(static_dir=tmp_path) as srv:
        search = Client.open(srv.url).search(collections=["HLSS30_2.0"], bbox=[-119.0, 34.0, -118.4, 34.3],
                                             datetime="2025-01-01/2025-01-07", limit=4, method="GET")
        assert [it.id for page in search.pages() for it in page.items] == [r["id"] for r in s30]
        gets = srv.searches()
        assert [g["method"] for g in gets] == ["GET", "GET"] and "cursor=4" in gets[1]["query"]
        served = pystac.Catalog.from_file(f"{srv.origin}/static/cat/catalog.json")
        assert sorted(it.id for it in served.get_items()) == sorted(r["id"] for r in s30)
