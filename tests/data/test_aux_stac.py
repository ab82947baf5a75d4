"""Aux layers from public STAC sources: recorded real cop-dem-glo-30, esa-worldcover and
sentinel-1-rtc items (data/samples/stac_aux/) whose asset hrefs are pointed at COGs made here."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.warp import transform_bounds

from lssr_ray.config import REPO_ROOT
from lssr_ray.data.aux import AuxSource, linear_to_db, read_aux, to_class_index
from lssr_ray.data.aux_stac import aux_from_stac, find_aux_items
from lssr_ray.errors import ConfigError

SAMPLES = REPO_ROOT / "data" / "samples" / "stac_aux"
DEM_ITEM = "cop-dem-glo-30_Copernicus_DSM_COG_10_N53_00_W115_00_DEM.json"
WC_ITEM = "esa-worldcover_ESA_WorldCover_10m_2021_v200_N00E006.json"
S1_ITEM = "sentinel-1-rtc_S1A_IW_GRDH_1SDV_20191215T003835_20191215T003904_030352_0378DC_rtc.json"


def _recorded(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


def _cog(path: Path, arr: np.ndarray, crs: str, transform: Affine, nodata: float | None) -> str:
    """A tiled, DEFLATE GeoTIFF with overviews standing in for the item's remote COG."""
    arr = arr if arr.ndim == 3 else arr[None]
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype=arr.dtype, crs=crs, transform=transform, nodata=nodata, tiled=True,
                       blockxsize=64, blockysize=64, compress="deflate") as dst:
        dst.write(arr)
        dst.build_overviews([2], rasterio.enums.Resampling.nearest)
    return str(path)


def _item_collection(tmp: Path, items: list[dict]) -> str:
    p = tmp / "aux_items.json"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return str(p)


def _utm_grid(lon: float, lat: float, epsg: int, n: int = 60, res: float = 10.0) -> tuple[str, Affine, dict]:
    """An n x n 10 m grid in ``epsg`` centred on (lon, lat) and its WGS 84 polygon."""
    crs = f"EPSG:{epsg}"
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    t = Affine(res, 0, round(x) - n * res / 2, 0, -res, round(y) + n * res / 2)
    w, s, e, nn = transform_bounds(crs, "EPSG:4326", t.c, t.f - n * res, t.c + n * res, t.f)
    poly = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, nn], [w, nn], [w, s]]]}
    return crs, t, poly


@pytest.fixture(scope="module")
def dem_tiles(tmp_path_factory):
    """The recorded N53 W115 GLO-30 item and its east neighbour N53 W114 (the same item moved by
    one degree, as the GLO-30 grid names it), each pointed at a COG of distinct heights."""
    d = tmp_path_factory.mktemp("glo30")
    west = _recorded(DEM_ITEM)
    east = copy.deepcopy(west)
    east["id"] = west["id"].replace("W115", "W114")
    east["bbox"] = [west["bbox"][0] + 1, west["bbox"][1], west["bbox"][2] + 1, west["bbox"][3]]
    east["geometry"]["coordinates"] = [[[x + 1, y] for x, y in west["geometry"]["coordinates"][0]]]
    east["properties"]["proj:transform"][2] += 1
    rows = np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 100), np.float32)
    for item, base in ((west, 1000.0), (east, 2000.0)):
        x0, y0 = item["bbox"][0], item["bbox"][3]
        item["assets"]["data"]["href"] = _cog(d / f"{item['id']}.tif", base + rows, "EPSG:4326",
                                              Affine(0.01, 0, x0, 0, -0.01, y0), None)
    return west, east


def test_chip_spanning_two_glo30_tiles_gets_both(dem_tiles, tmp_path):
    west, east = dem_tiles
    crs, t, poly = _utm_grid(west["bbox"][2], 53.5, 32611)  # straddles the W115 / W114 tile edge
    aux = aux_from_stac(_item_collection(tmp_path, [west, east]), poly, collections={"sar": "none"})
    assert sorted(aux.dem) == sorted([west["assets"]["data"]["href"], east["assets"]["data"]["href"]])
    where = transform_bounds(crs, "EPSG:4326", t.c, t.f - 600, t.c + 600, t.f)
    a = read_aux(aux.layers_for(None, where), crs, transform=t, shape=(60, 60), **aux.read_options())
    dem = a.dem[0]
    assert np.isfinite(dem).all() and a.present[0] == 1
    # 53.5 N is row 50 of both tiles: 1050 m west of the edge, 2050 m east of it
    assert abs(dem[30, 2] - 1050) < 1.5 and abs(dem[30, -3] - 2050) < 1.5
    # a block over the west tile only reads the west tile
    far_west = (west["bbox"][0] + 0.1, 53.4, west["bbox"][0] + 0.2, 53.6)
    assert aux.layers_for(None, far_west)["dem"] == (west["assets"]["data"]["href"],)


def test_worldcover_codes_mapped_to_class_indices(tmp_path):
    item = _recorded(WC_ITEM)
    codes = np.full((300, 300), 40, np.uint8)  # 6..9 E, 0..3 N at 0.01 deg: cropland west of 7.5 E
    codes[:, 150:] = 80  # permanent water east of 7.5 E
    codes[:20] = 0  # nodata strip in the north
    item["assets"]["map"]["href"] = _cog(tmp_path / "wc.tif", codes, "EPSG:4326",
                                         Affine(0.01, 0, 6.0, 0, -0.01, 3.0), 0)
    crs, t, poly = _utm_grid(7.5, 1.5, 32632)
    aux = aux_from_stac(_item_collection(tmp_path, [item]), poly, collections={"dem": "none", "sar": "none"})
    assert aux.landcover_codes == "esa-worldcover"
    a = read_aux(aux.layers_for(None), crs, transform=t, shape=(60, 60), **aux.read_options())
    lc = a.landcover[0]
    assert lc.dtype == np.int64 and a.present[1] == 1
    assert set(np.unique(lc[:, :20])) == {8} and set(np.unique(lc[:, -20:])) == {12}  # cropland, water
    np.testing.assert_array_equal(to_class_index(np.array([0, 10, 95, 100, 15, 255]), {10: 5, 95: 14, 100: 15}),
                                  [0, 5, 14, 15, 0, 0])


@pytest.fixture
def s1_scene(tmp_path):
    """The recorded sentinel-1-rtc item with vv/vh pointed at linear-gamma0 COGs (UTM 14N, 20 m,
    -32768 nodata in the first 10 rows), and a 10 m grid over the COGs' top-left corner."""
    item = _recorded(S1_ITEM)
    t20 = Affine(20, 0, 744000, 0, -20, 1447000)
    for pol, value in (("vv", 0.1), ("vh", 0.01)):
        arr = np.full((100, 100), value, np.float32)
        arr[:10] = -32768
        item["assets"][pol]["href"] = _cog(tmp_path / f"{pol}.tif", arr, "EPSG:32614", t20, -32768)
    t10 = Affine(10, 0, 744000, 0, -10, 1447000)
    w, s, e, n = transform_bounds("EPSG:32614", "EPSG:4326", 744000, 1447000 - 600, 744600, 1447000)
    poly = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    return item, t10, poly


def test_sentinel1_rtc_linear_gamma0_read_as_db(s1_scene, tmp_path):
    item, t10, poly = s1_scene
    aux = aux_from_stac(_item_collection(tmp_path, [item]), poly, start="2019-12-10", end="2019-12-20",
                        collections={"dem": "none", "landcover": "none"})
    assert len(aux.sar) == 1 and aux.sar_units == "linear"
    when = dt.datetime(2019, 12, 16, tzinfo=dt.UTC)
    a = read_aux(aux.layers_for(when), "EPSG:32614", transform=t10, shape=(60, 60), **aux.read_options())
    assert a.present[2] == 1
    np.testing.assert_allclose(a.sar[0, 25:], -10.0, atol=1e-4)  # 10 log10(0.1)
    np.testing.assert_allclose(a.sar[1, 25:], -20.0, atol=1e-4)
    assert np.isnan(a.sar[:, :15]).all()  # -32768 nodata rows stay missing, never log10 of a fill
    # a Landsat date beyond sar_max_gap_days gets no SAR at all
    assert aux.layers_for(dt.datetime(2020, 3, 1, tzinfo=dt.UTC))["sar"] is None
    # outside the searched window the scene is not even found
    late = aux_from_stac(_item_collection(tmp_path, [item]), poly, start="2020-06-01", end="2020-06-30",
                         collections={"dem": "none", "landcover": "none"})
    assert late.sar == ()


def test_linear_to_db_and_bad_conventions():
    np.testing.assert_allclose(linear_to_db(np.array([1.0, 0.01, 0.0, -1.0, np.nan], np.float32)),
                               [0.0, -20.0, np.nan, np.nan, np.nan])
    with pytest.raises(ConfigError):
        AuxSource(sar_units="amplitude")


def test_stac_api_search_through_pystac_client(dem_tiles, tmp_path):
    """The two GLO-30 items served by the loopback STAC API (stac_replay, with the recorded CMR-STAC
    landing page and conformance): pystac-client's real search path finds both."""
    import shutil

    from lssr_ray.data.stac_replay import RECORDINGS, StacReplayServer

    rec = tmp_path / "aux_api"
    (rec / "items").mkdir(parents=True)
    (rec / "collections").mkdir()
    for name in ("landing.json", "conformance.json"):
        shutil.copy(RECORDINGS / name, rec / name)
    for item in dem_tiles:  # as an API returns them: links absolute, not ../collection.json
        api_item = {**item, "links": [lk for lk in item["links"] if not lk["href"].startswith("..")]}
        (rec / "items" / f"{item['id']}.json").write_text(json.dumps(api_item))
    west, east = dem_tiles
    _, _, poly = _utm_grid(west["bbox"][2], 53.5, 32611)
    with StacReplayServer(rec) as srv:
        found = find_aux_items(srv.url, poly, "cop-dem-glo-30")
        assert sorted(a.id for a in found) == sorted([west["id"], east["id"]])
        (search,) = srv.searches()
        assert "cop-dem-glo-30" in json.dumps(search) and "Polygon" in json.dumps(search)
        srv.fail(503, times=2)  # transient errors are retried with backoff by the shared client
        assert len(find_aux_items(srv.url, poly, "cop-dem-glo-30")) == 2
        assert find_aux_items(srv.url, poly, "esa-worldcover") == []


def _moved(item: dict, dlon: float, dlat: float, new_id: str) -> dict:
    """The recorded item moved to another tile of its grid (id, bbox, footprint)."""
    out = copy.deepcopy(item)
    out["id"] = new_id
    b = item["bbox"]
    out["bbox"] = [b[0] + dlon, b[1] + dlat, b[2] + dlon, b[3] + dlat]
    out["geometry"]["coordinates"] = [[[x + dlon, y + dlat] for x, y in item["geometry"]["coordinates"][0]]]
    return out


def test_data_stage_reads_stac_aux_into_every_chip(tmp_path):
    """plan_data_stage(aux_stac=...) -> read_chips: the recorded GLO-30 and WorldCover items, moved
    to the tiles over the bundled Flanders AOI (N50 E003, N48 E003), give every chip a DEM and
    mapped land-cover classes; SAR switched off is reported absent."""
    from lssr_ray.config import GridConfig
    from lssr_ray.data.aoi import read_aoi
    from lssr_ray.data.catalog import open_catalog
    from lssr_ray.data.cube import plan_data_stage, read_chips

    dem = _moved(_recorded(DEM_ITEM), 118.0, -3.0, "Copernicus_DSM_COG_10_N50_00_E003_00_DEM")
    dem["assets"]["data"]["href"] = _cog(tmp_path / "dem.tif", np.full((100, 100), 12.5, np.float32), "EPSG:4326",
                                         Affine(0.01, 0, dem["bbox"][0], 0, -0.01, dem["bbox"][3]), None)
    wc = _moved(_recorded(WC_ITEM), -3.0, 48.0, "ESA_WorldCover_10m_2021_v200_N48E003")
    wc["assets"]["map"]["href"] = _cog(tmp_path / "wc.tif", np.full((300, 300), 40, np.uint8), "EPSG:4326",
                                       Affine(0.01, 0, 3.0, 0, -0.01, 51.0), 0)
    source = _item_collection(tmp_path, [dem, wc])
    aoi = read_aoi(REPO_ROOT / "examples" / "flanders_31UDS.geojson")
    stage = plan_data_stage(aoi, open_catalog(REPO_ROOT / "data" / "archive" / "catalog.json"),
                            config=GridConfig(chip_size=16, overlap=4), aux_stac=source,
                            aux_collections={"sar": "none"})
    assert stage.aux.origin == f"STAC {source}" and stage.aux.sar == ()
    n = 0
    for rec, x in read_chips(stage.plan, stage.granules[:3], aux=stage.aux):
        if x is None:
            continue
        n += 1
        assert rec.present == (1.0, 1.0, 0.0)
        np.testing.assert_allclose(x["dem"], 12.5)
        assert set(np.unique(x["landcover"])) == {8}  # WorldCover 40 cropland -> class index 8
    assert n == len(stage.plan.chips)


def test_sar_frames_of_one_pass_are_mosaicked_and_far_scenes_filtered():
    t0 = dt.datetime(2021, 7, 3, 0, 38, 35, tzinfo=dt.UTC)
    frame1, frame2, other = ("a_vv", "a_vh"), ("b_vv", "b_vh"), ("c_vv", "c_vh")
    aux = AuxSource(sar=((t0, frame1), (t0 + dt.timedelta(seconds=25), frame2), (t0 + dt.timedelta(days=1), other)),
                    footprints=(("a_vv", (-94, 41, -93, 42)), ("b_vv", (-94, 40, -93, 41)), ("c_vv", (-96, 41, -95, 42))))
    when = t0 + dt.timedelta(hours=5)
    assert aux.layers_for(when)["sar"] == (frame1, frame2)  # consecutive frames of the nearest pass
    assert aux.layers_for(when, (-93.8, 41.2, -93.6, 41.4))["sar"] == frame1  # only the frame over the block
    assert aux.layers_for(when, (-95.8, 41.2, -95.6, 41.4))["sar"] == other  # the pass that covers it
    assert aux.layers_for(when, (10, 10, 11, 11))["sar"] is None


def test_stac_source_without_an_item_warns(tmp_path, caplog):
    source = _item_collection(tmp_path, [_recorded(DEM_ITEM)])
    _, _, poly = _utm_grid(7.5, 1.5, 32632)  # far from the recorded DEM tile
    with caplog.at_level("WARNING", logger="lssr_ray.data.aux_stac"):
        aux = aux_from_stac(source, poly, collections={"sar": "none"})
    assert aux.dem is None and aux.landcover is None
    assert "no usable dem item (cop-dem-glo-30)" in caplog.text and "no usable landcover item" in caplog.text
    with pytest.raises(ConfigError, match="unknown aux kinds"):
        aux_from_stac(source, poly, collections={"ndvi": "x"})
