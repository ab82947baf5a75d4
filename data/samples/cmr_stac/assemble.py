"""Rebuild this folder's CMR-STAC documents from the recorded public facts in ``sources/``.

Run from anywhere with the project installed: ``.venv/bin/python data/samples/cmr_stac/assemble.py``
(it uses ``lssr_ray.data.mgrs.tile_grid`` for tile footprints). It writes ``landing.json``,
``conformance.json``, ``items/<id>.json`` and ``aoi_los_angeles.geojson`` (the collections are
stored as recorded, see PROVENANCE.md). Every rule below is stated in PROVENANCE.md with its
source; the output is deterministic, so a rerun reproduces the committed files byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyproj import Transformer

from lssr_ray.data.hls import parse_name
from lssr_ray.data.mgrs import tile_grid

HERE = Path(__file__).resolve().parent
STAC_ROOT = "https://cmr.earthdata.nasa.gov/stac"
PROVIDER = "LPCLOUD"
CMR_URL = "https://cmr.earthdata.nasa.gov"
DATA_HOST = "https://data.lpdaac.earthdatacloud.nasa.gov"
STAC_VERSION = "1.1.0"  # the version the recorded collection documents carry
STORAGE_SCHEMES = {"aws": {"type": "aws-s3", "platform": "https://{bucket}.s3.{region}.amazonaws.com",
                           "bucket": "lp-prod-protected", "region": "us-west-2"}}
EXTENSIONS = ["https://stac-extensions.github.io/eo/v1.0.0/schema.json",
              "https://stac-extensions.github.io/storage/v2.0.0/schema.json"]
# Files of one granule: L30 as listed in the recorded ECHO10 records; S30 per the HLS v2.0 User
# Guide (13 bands, Fmask and 4 angle layers).
FILES = {
    "L30": ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09", "B10", "B11",
            "Fmask", "SAA", "SZA", "VAA", "VZA"],
    "S30": ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12", "Fmask", "SAA", "SZA", "VAA", "VZA"],
}
COLLECTION = {"L30": "HLSL30_2.0", "S30": "HLSS30_2.0"}
S3_DESCRIPTION = "This link provides direct download access via S3 to the granule"
# CMR-STAC provider conformance (nasa/cmr-stac src/domains/providers.ts).
CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0-rc.2/core",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search",
    "https://api.stacspec.org/v1.0.0-rc.2/ogcapi-features",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#fields",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#features",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#query",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#sort",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#context",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]


def dump(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def product_dir(item_id: str) -> tuple[str, str]:
    product = item_id.split(".")[1]
    return product, f"HLS{product}.020"


def assets(item_id: str) -> dict:
    product, folder = product_dir(item_id)
    out = {}
    for key in FILES[product]:
        name = f"{item_id}.{key}.tif"
        out[key] = {"href": f"{DATA_HOST}/lp-prod-protected/{folder}/{item_id}/{name}",
                    "title": f"Download {name}", "roles": ["data"]}
    for key in FILES[product]:
        name = f"{item_id}.{key}.tif"
        out[f"s3_{key}"] = {"href": f"s3://lp-prod-protected/{folder}/{item_id}/{name}",
                            "title": S3_DESCRIPTION, "storage:refs": ["aws"], "roles": ["data"]}
    out["browse"] = {"href": f"{DATA_HOST}/lp-prod-public/{folder}/{item_id}/{item_id}.jpg",
                     "type": "image/jpeg", "title": f"Download {item_id}.jpg", "roles": ["browse"]}
    out["metadata"] = {"href": f"{CMR_URL}/search/concepts/{item_id}.json", "title": "Metadata",
                       "type": "application/json"}
    return out


def links(item_id: str, collection: str) -> list[dict]:
    """The item links CMR-STAC adds (nasa/cmr-stac src/domains/items.ts, selfLinks)."""
    base = f"{STAC_ROOT}/{PROVIDER}"
    return [
        {"rel": "self", "href": f"{base}/collections/{collection}/items/{item_id}", "type": "application/geo+json"},
        {"rel": "parent", "href": f"{base}/collections/{collection}/", "type": "application/geo+json"},
        {"rel": "collection", "href": f"{base}/collections/{collection}/", "type": "application/geo+json"},
        {"rel": "root", "href": STAC_ROOT, "type": "application/json"},
        {"rel": "provider", "href": base, "type": "application/json"},
        {"rel": "via", "href": f"{CMR_URL}/search/concepts/{item_id}.json",
         "title": "CMR JSON metadata for item", "type": "application/json"},
        {"rel": "via", "href": f"{CMR_URL}/search/concepts/{item_id}.umm_json",
         "title": "CMR UMM_JSON metadata for item", "type": "application/vnd.nasa.cmr.umm+json"},
    ]


def polygon(ring_lonlat: list[list[float]]) -> dict:
    ring = [list(p) for p in ring_lonlat]
    # GeoJSON exterior rings run counter-clockwise (ECHO10 GPolygon boundaries run clockwise).
    area2 = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring, ring[1:] + ring[:1]))
    if area2 < 0:
        ring.reverse()
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


def bbox(geometry: dict) -> list[float]:
    xs = [p[0] for p in geometry["coordinates"][0]]
    ys = [p[1] for p in geometry["coordinates"][0]]
    return [min(xs), min(ys), max(xs), max(ys)]


def mgrs_tile_ring(tile: str) -> list[list[float]]:
    """Corners of the HLS tile's 3660 x 3660 30 m square in its UTM zone (``tile_grid``), in lon/lat."""
    epsg, (res, _, x0, _, neg_res, y1), (rows, cols) = tile_grid(tile)
    x1, y0 = x0 + res * cols, y1 + neg_res * rows
    to_ll = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    return [[round(c, 8) for c in to_ll.transform(x, y)] for x, y in ((x0, y1), (x0, y0), (x1, y0), (x1, y1))]


def id_datetime(item_id: str) -> str:
    """The acquisition time in the granule id, as RFC 3339 (see PROVENANCE.md: what it is per sensor)."""
    return parse_name(item_id).datetime.strftime("%Y-%m-%dT%H:%M:%SZ")


def item(item_id: str, geometry: dict, properties: dict) -> dict:
    product, _ = product_dir(item_id)
    collection = COLLECTION[product]
    return {"type": "Feature", "id": item_id, "stac_version": STAC_VERSION, "stac_extensions": EXTENSIONS,
            "properties": {**properties, "storage:schemes": STORAGE_SCHEMES},
            "geometry": geometry, "bbox": bbox(geometry), "assets": assets(item_id),
            "links": links(item_id, collection), "collection": collection}


def main() -> None:
    src = json.loads((HERE / "sources" / "granules.json").read_text())
    out = []
    for rec in src["echo10_records"]:
        geom = polygon(rec["GPolygon_lon_lat"])
        out.append(item(rec["GranuleUR"], geom, {
            "datetime": rec["BeginningDateTime"], "start_datetime": rec["BeginningDateTime"],
            "end_datetime": rec["EndingDateTime"], "eo:cloud_cover": rec["CLOUD_COVERAGE"]}))
    for rec in src["recorded_search_summary"]["items"]:
        tile = rec["id"].split(".")[2][1:]
        out.append(item(rec["id"], polygon(mgrs_tile_ring(tile)),
                        {"datetime": rec["datetime"], "eo:cloud_cover": rec["eo:cloud_cover"]}))
    # Ids named in public code (Iowa): only the id is recorded; time from the id, tile footprint.
    for rec in src["named_granules"]["items"]:
        tile = rec["id"].split(".")[2][1:]
        out.append(item(rec["id"], polygon(mgrs_tile_ring(tile)), {"datetime": id_datetime(rec["id"])}))
    for it in out:
        dump(it, HERE / "items" / f"{it['id']}.json")

    base = f"{STAC_ROOT}/{PROVIDER}"
    collections = [json.loads(p.read_text()) for p in sorted((HERE / "collections").glob("*.json"))]
    dump({"type": "Catalog", "id": PROVIDER, "title": f"{PROVIDER} STAC Catalog", "stac_version": STAC_VERSION,
          "description": f"Root STAC catalog for {PROVIDER}", "conformsTo": CONFORMANCE,
          "links": [
              {"rel": "self", "href": base, "type": "application/geo+json", "title": "Provider Catalog"},
              {"rel": "root", "href": STAC_ROOT, "type": "application/geo+json", "title": "Root Catalog"},
              {"rel": "data", "href": f"{base}/collections", "type": "application/json", "title": "Provider Collections"},
              {"rel": "search", "href": f"{base}/search", "type": "application/geo+json",
               "title": "Provider Item Search", "method": "GET"},
              {"rel": "search", "href": f"{base}/search", "type": "application/geo+json",
               "title": "Provider Item Search", "method": "POST"},
              {"rel": "conformance", "href": f"{base}/conformance", "type": "application/json",
               "title": "Conformance Classes"},
              {"rel": "service-desc", "href": "https://api.stacspec.org/v1.0.0-beta.1/openapi.yaml",
               "type": "application/vnd.oai.openapi;version=3.0", "title": "OpenAPI Doc"},
              {"rel": "service-doc", "href": "https://api.stacspec.org/v1.0.0-beta.1/index.html",
               "type": "text/html", "title": "HTML documentation"},
          ] + [{"rel": "child", "href": f"{base}/collections/{c['id']}", "title": c["title"],
                "type": "application/json"} for c in collections]},
         HERE / "landing.json")
    dump({"conformsTo": CONFORMANCE}, HERE / "conformance.json")
    x0, y0, x1, y1 = src["recorded_search_summary"]["request_bbox"]
    dump({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "Los Angeles (recorded CMR-STAC request bbox)"},
        "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}}]},
        HERE / "aoi_los_angeles.geojson")


if __name__ == "__main__":
    main()
