"""Real CMR-STAC HLS v2.0 items read as they are: no ``proj:*``, ``_2.0`` collection ids,
``s3_`` twin assets, a saved ItemCollection (FeatureCollection) as the catalog, local or s3://.

The items are data/samples/cmr_stac/items (see its PROVENANCE.md: assembled from recorded CMR
granule records and a recorded CMR-STAC search summary).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling

from lssr_ray.config import REPO_ROOT, MapConfig
from lssr_ray.data import hls
from lssr_ray.data.catalog import granule_grid_from_header, open_catalog
from lssr_ray.data.grid import OutputGrid
from lssr_ray.data.readers import raster_header, read_lowres
from lssr_ray.errors import ConfigError, MissingDataError

CMR = REPO_ROOT / "data" / "samples" / "cmr_stac"
ITEMS = sorted((CMR / "items").glob("*.json"))
LA = json.loads((CMR / "aoi_los_angeles.geojson").read_text())


def _save_item_collection(path: Path) -> Path:
    """What pystac-client's ``ItemCollection.save_object`` writes for a search result."""
    items = [pystac.Item.from_file(str(p)) for p in ITEMS]
    pystac.ItemCollection(items).save_object(str(path))
    return path


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return open_catalog(_save_item_collection(tmp_path_factory.mktemp("cmr") / "search.json"))


def test_items_without_proj_get_the_grid_of_their_tile(real):
    assert len(real) == len(ITEMS) == 16
    assert real.collections == ("HLSL30_2.0", "HLSS30_2.0")
    g = real.get("HLS.S30.T11SLT.2025002T183751.v2.0")
    assert not any(k.startswith("proj:") for k in json.loads((CMR / "items" / f"{g.id}.json").read_text())["properties"])
    # 11SLT: zone 11, column L = 3rd of J..R -> x 300000; row T, band S -> north edge 3800000,
    # up to the 60 m lattice -> 3800040
    assert (g.crs, g.transform, g.shape) == ("EPSG:32611", (30.0, 0.0, 300000.0, 0.0, -30.0, 3800040.0), (3660, 3660))
    assert g.product == "S30" and real.get("HLS.L30.T40QCM.2020116T063954.v2.0").product == "L30"
    assert g.properties["eo:cloud_cover"] == 35
    assert g.datetime.isoformat() == "2025-01-02T18:45:02.738000+00:00"


@pytest.mark.parametrize("gid", ["HLS.L30.T40QCM.2020116T063954.v2.0", "HLS.L30.T37QGC.2013182T074521.v2.0"])
def test_recorded_cmr_footprints_lie_on_the_tile_grid(real, gid):
    # these two footprints are recorded CMR granule polygons (swath edges cut the tile): every
    # vertex is on the tile's edge or inside, and both tiles' north and south edges are touched
    g = real.get(gid)
    to_utm = Transformer.from_crs("EPSG:4326", g.crs, always_xy=True)
    x0, y1 = g.transform[2], g.transform[5]
    pts = np.array([to_utm.transform(x, y) for x, y in g.geometry["coordinates"][0]]) - (x0, y1 - 109_800)
    assert np.all(pts > -1.0) and np.all(pts < 109_801.0)
    assert np.isclose(pts[:, 1].min(), 0, atol=1.0) and np.isclose(pts[:, 1].max(), 109_800, atol=1.0)


def test_assets_plain_keys_and_the_s3_twin_choice(tmp_path):
    path = _save_item_collection(tmp_path / "search.json")
    https = open_catalog(path).get("HLS.S30.T11SLU.2025005T184751.v2.0")
    s3 = open_catalog(path, asset_access="s3").get(https.id)
    assert set(https.assets) == set(s3.assets)
    assert {"B01", "B8A", "B12", "Fmask", "SZA", "browse"} <= set(https.assets)
    assert not any(k.startswith("s3_") for k in https.assets)
    assert https.assets["B04"] == ("https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/HLSS30.020/"
                                   f"{https.id}/{https.id}.B04.tif")
    assert s3.assets["B04"] == f"s3://lp-prod-protected/HLSS30.020/{https.id}/{https.id}.B04.tif"
    assert s3.assets["Fmask"].startswith("s3://") and s3.assets["browse"] == https.assets["browse"]  # no twin
    with pytest.raises(ConfigError, match="asset_access"):
        open_catalog(path, asset_access="ftp")
    with pytest.raises(ConfigError, match="asset_access"):
        MapConfig(aoi="a.geojson", asset_access="ftp")
    assert MapConfig(aoi="a.geojson").asset_access == "https"


def test_search_real_collection_ids_old_names_and_cloud_filter(real):
    every = real.search(LA)
    assert {g.collection for g in every} == {"HLSL30_2.0", "HLSS30_2.0"} and len(every) == 10
    # the bundled archive's names mean the same products
    assert {g.id for g in real.search(LA, collections=("HLSS30",))} == {g.id for g in every if g.product == "S30"}
    assert {g.id for g in real.search(LA, collections=("HLSL30_2.0",))} == {g.id for g in every if g.product == "L30"}
    clear = real.search(LA, max_cloud=10)
    assert {g.id for g in clear} == {g.id for g in every if g.properties["eo:cloud_cover"] <= 10}
    assert 0 < len(clear) < len(every)
    with pytest.raises(ConfigError, match="max_cloud"):
        real.search(LA, max_cloud=150)


def test_bundled_archive_answers_the_real_collection_ids():
    cat = open_catalog(REPO_ROOT / "data" / "archive")
    flanders = json.loads((REPO_ROOT / "examples" / "flanders_31UDS.geojson").read_text())
    old = cat.search(flanders, start="2018-07-01", end="2018-07-31", collections=("HLSL30",))
    new = cat.search(flanders, start="2018-07-01", end="2018-07-31", collections=(hls.STAC_COLLECTIONS["L30"],))
    assert [g.id for g in new] == [g.id for g in old] and len(old) == 3


def test_item_collection_on_s3(s3_bucket, tmp_path):
    url, _, client = s3_bucket
    path = _save_item_collection(tmp_path / "search.json")
    bucket = url.removeprefix("s3://")
    client.upload_file(str(path), bucket, "runs/search.json")
    remote = open_catalog(f"{url}/runs/search.json", asset_access="s3")
    assert len(remote) == 16 and remote.get("HLS.L30.T11SLU.2025006T182824.v2.0").assets["B04"].startswith(
        "s3://lp-prod-protected/HLSL30.020/")


@pytest.mark.parametrize(("doc", "match"), [
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}}]}, "feature 0 lacks"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "id": "x", "assets": {}}]}, "not a readable"),
    ({"type": "FeatureCollection", "features": [{"type": "Polygon"}]}, "not all STAC Items"),
    ({"type": "FeatureCollection", "features": "x"}, "not all STAC Items"),
    ([1, 2], "neither a STAC Catalog"),
    ({"type": "Feature"}, "neither a STAC Catalog"),
])
def test_malformed_collections_are_clear_errors(tmp_path, doc, match):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(MissingDataError, match=match):
        open_catalog(p)
    p.write_text("{not json")
    with pytest.raises(MissingDataError, match="not JSON"):
        open_catalog(p)


def _write_hls_cog(path: Path, epsg: int, transform: tuple, shape: tuple[int, int], dn: np.ndarray | None = None,
                   **profile) -> None:
    """An HLS-format band COG: int16, tiled 512, DEFLATE, overviews, scale/fill tags as the real files."""
    h, w = shape
    data = np.zeros((h, w), np.int16) if dn is None else dn
    prof = {"driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "int16", "crs": f"EPSG:{epsg}",
            "transform": Affine(*transform), "tiled": True, "blockxsize": 512, "blockysize": 512,
            "compress": "deflate", "nodata": hls.NODATA, **profile}
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data, 1)
        dst.update_tags(1, scale_factor="0.0001", add_offset="0.0", _FillValue=str(hls.NODATA))
        dst.build_overviews([2, 4, 8], Resampling.average)


def test_tile_grid_agrees_with_the_header_of_an_hls_cog(tmp_path):
    # the georeferencing recorded for HLS.L30.T20JKP.2026004T142004.v2.0 (EPSG 32620, UL 199980, -3099960)
    recorded = (32620, (30.0, 0.0, 199980.0, 0.0, -30.0, -3099960.0), (3660, 3660))
    cog = tmp_path / "HLS.L30.T20JKP.2026004T142004.v2.0.B04.tif"
    _write_hls_cog(cog, *recorded)
    assert granule_grid_from_header(str(cog)) == ("EPSG:32620", recorded[1], recorded[2])
    assert hls.tile_grid("20JKP") == recorded
    # an item whose id names no tile gets its grid from that header (read once, then cached)
    for gid in ("HLS.L30.T20JKP.2026004T142004.v2.0", "granule-with-no-tile"):
        item = pystac.Item(gid, {"type": "Point", "coordinates": [-63.0, -28.0]}, [-63.0, -28.0, -63.0, -28.0],
                           None, {"start_datetime": "2026-01-04T14:20:04Z", "end_datetime": "2026-01-04T14:20:28Z"},
                           collection="HLSL30_2.0")
        item.add_asset("B04", pystac.Asset(str(cog), media_type=pystac.MediaType.COG))
        pystac.ItemCollection([item]).save_object(str(tmp_path / f"{gid}.json"))
    before = raster_header.cache_info().hits
    by_tile = open_catalog(tmp_path / "HLS.L30.T20JKP.2026004T142004.v2.0.json").granules[0]
    by_header = open_catalog(tmp_path / "granule-with-no-tile.json").granules[0]
    assert (by_tile.crs, by_tile.transform, by_tile.shape) == (by_header.crs, by_header.transform, by_header.shape)
    open_catalog(tmp_path / "granule-with-no-tile.json")
    assert raster_header.cache_info().hits > before


def test_reader_takes_scale_and_nodata_from_the_file(tmp_path):
    # a granule whose files state scale 0.0002 and fill -1 (not HLS's 0.0001 / -9999)
    epsg, transform = 32615, (30.0, 0.0, 399960.0, 0.0, -30.0, 4700040.0)
    dn = np.full((64, 64), 2500, np.int16)
    dn[0, :8] = -1
    assets = {}
    gid = "HLS.L30.T15TVG.2021180T165311.v2.0"
    for bid in ("B02", "B03", "B04", "B05", "B06", "B07"):
        p = tmp_path / f"{gid}.{bid}.tif"
        _write_hls_cog(p, epsg, transform, (64, 64), dn, nodata=-1)
        with rasterio.open(p, "r+") as dst:
            dst.scales = (0.0002,)
        assets[bid] = str(p)
    fm = tmp_path / f"{gid}.Fmask.tif"
    with rasterio.open(fm, "w", driver="GTiff", height=64, width=64, count=1, dtype="uint8", crs=f"EPSG:{epsg}",
                       transform=Affine(*transform), nodata=255) as dst:
        dst.write(np.zeros((64, 64), np.uint8), 1)
    assets["Fmask"] = str(fm)
    item = pystac.Item(gid, {"type": "Point", "coordinates": [-93.0, 42.0]}, [-93.0, 42.0, -93.0, 42.0], None,
                       {"start_datetime": "2021-06-29T16:53:11Z", "end_datetime": "2021-06-29T16:53:35Z"},
                       collection="HLSL30_2.0")
    for k, v in assets.items():
        item.add_asset(k, pystac.Asset(v))
    pystac.ItemCollection([item]).save_object(str(tmp_path / "c.json"))
    g = open_catalog(tmp_path / "c.json").granules[0]
    assert raster_header(assets["B04"]).scale == pytest.approx(0.0002) and raster_header(assets["B04"]).nodata == -1
    lo = read_lowres(g, OutputGrid(f"EPSG:{epsg}", Affine(*transform), (64, 64)), window=(0, 0, 16, 16))
    assert np.allclose(lo.lr[:, 1:, :], 0.5)  # 2500 * 0.0002, not 0.25
    assert np.isnan(lo.lr[:, 0, :8]).all() and not lo.observed[0, :8].any() and lo.observed[1:].all()


def test_header_falls_back_to_the_netcdf_style_tags(tmp_path):
    # no GDAL nodata/scale, only the scale_factor/_FillValue/add_offset tags HLS COGs carry
    p = tmp_path / "tags_only.tif"
    with rasterio.open(p, "w", driver="GTiff", height=8, width=8, count=1, dtype="int16", crs="EPSG:32615",
                       transform=Affine(30, 0, 399960, 0, -30, 4700040)) as dst:
        dst.write(np.zeros((8, 8), np.int16), 1)
        dst.update_tags(1, scale_factor="0.0003", add_offset="0.01", _FillValue="-5")
    hdr = raster_header(str(p))
    assert (hdr.scale, hdr.offset, hdr.nodata) == (pytest.approx(0.0003), pytest.approx(0.01), -5.0)
    assert hdr.shape == (8, 8) and hdr.crs == "EPSG:32615" and hdr.dtype == "int16"
