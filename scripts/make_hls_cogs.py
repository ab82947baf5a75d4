#!/usr/bin/env python
"""Make full-size HLS v2.0-format granules (3660 x 3660 px COGs) for real MGRS tiles, a real-shaped
CMR-STAC catalog for them, and optionally put them on an S3 endpoint as ``lp-prod-protected``.

    python scripts/make_hls_cogs.py --out /tmp/hls                       # 15TVG + 15TWG, one day
    python scripts/make_hls_cogs.py --out /tmp/hls --tiles 15TVG --s3-endpoint http://127.0.0.1:9100

Writes ``OUT/lp-prod-protected/HLSL30.020/<id>/<id>.<band>.tif`` (the real bucket's key layout)
and ``OUT/catalog/catalog.json`` (a static STAC catalog of the items). ``--s3-endpoint`` uploads
``OUT/lp-prod-protected`` to bucket ``lp-prod-protected`` there (``lssr_ray.data.s3server``).

**The files are laid out like LP DAAC's HLS v2.0 COGs** (:data:`lssr_ray.data.cog.HLS_LAYOUT`):
3660 x 3660 px at 30 m on the tile's UTM grid (``lssr_ray.data.hls.tile_grid``); one band per
file; 256 x 256 tiles; DEFLATE with predictor 2 at GDAL's default level (rio-cogeo's ``deflate``
profile); four nearest-neighbour overviews 1830, 915, 458, 229 px in 128 x 128 tiles; reflectance
bands int16 with nodata -9999 and GDAL scale 0.0001; Fmask uint8 with nodata 255; band tags
``long_name`` (``Blue``, ``NIR``...), ``scale_factor`` = 0.0001, ``add_offset`` = 0.0, ``_FillValue``;
dataset tags ``NCOLS``/``NROWS`` 3660, ``SPATIAL_RESOLUTION`` 30, ``ULX``/``ULY``,
``HORIZONTAL_CS_CODE``, ``SENSING_TIME``, ``SENSOR``, ``cloud_coverage``, ``spatial_coverage``,
``OVR_RESAMPLING_ALG`` NEAREST. What was checked, and where:

* NASA-IMPACT/hls-hdf_to_cog, ``hls_hdf_to_cog/hls_hdf_to_cog.py`` at commit 039c5c29 (the
  converter that writes the HLS v2.0 COGs): rio-cogeo ``deflate`` profile, 256 blocks,
  ``predictor=2``, ``GDAL_TIFF_OVR_BLOCKSIZE=128``, ``overview_resampling="nearest"``, band tags
  and scales/offsets/nodata/descriptions forwarded from the HDF; L30 files B01-B07, B09, B10,
  B11, Fmask (+ SZA, SAA, VZA, VAA angle files); S30 B01-B12, B8A, Fmask.
* developmentseed/icechest design notes: the IFD chain read from a real HLSL30 B04 COG
  (3660 tile 256; 1830, 915, 458, 229 tile 128) and the asset keys of real items (B01-B07,
  B09-B11, Fmask, SZA, SAA, VZA, VAA, thumbnail).
* sertit/sertit-utils ``ci/test_xml.py``: the dataset tags of a real HLS S30 v2.0 file
  (``NCOLS``/``NROWS`` 3660, ``SPATIAL_RESOLUTION`` 30, ``ULX``/``ULY``, ``HORIZONTAL_CS_CODE``,
  ``cloud_coverage``, ``spatial_coverage``, ``OVR_RESAMPLING_ALG`` NEAREST, ``SENSING_TIME``...).

**Pixels** are real Landsat-8 data, not HLS: the bundled archive's Alabama granule
(``HLS.L30.T16RDV.2015216T161921.v2.0``: Landsat-8 L1T TOA reflectance of a 603 x 627 px crop,
int16 x 1e-4, with its BQA-derived Fmask; data/archive/PROVENANCE.md) is mirror-tiled over the
tile: the pixel at absolute UTM position (x, y) takes source pixel
(mirror(floor(-y / 30)), mirror(floor(x / 30))), mirror folding the index back and forth over the
source size. So the texture, value range and cloud pattern (about 6 % cloud, 16 % with the
adjacent ring: ``eo:cloud_cover``) are real and compress like real data (21-26 MB per int16 band),
and the overlap of two tiles of one zone shows the same pixels (tile corners lie on a 60 m
lattice, so neighbours of one zone share the 30 m lattice). B01 and the thermal, cirrus and angle
files are not made (the source has no such bands); items list only the bands made.

**Items** take their shape from a CMR-STAC HLSL30_2.0 item (``--item-template``, default the first
L30 item of data/samples/cmr_stac/items/, assembled there from recorded real CMR granule records
and CMR-STAC's source, see its PROVENANCE.md: ``stac_version`` 1.1.0, properties ``datetime``,
``eo:cloud_cover``, ``storage:schemes``; assets B01-B07, B09-B11, Fmask, SAA, SZA, VAA, VZA with
https hrefs and ``s3_<key>`` twins carrying ``storage:refs``, ``browse``, ``metadata``): every
field is kept, the template's granule id is replaced by the new one in the id and asset hrefs (https under
``data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected`` and ``s3_<key>`` twins under
``s3://lp-prod-protected``), ``datetime``/``start_datetime``/``end_datetime`` are set to the
sensing time, ``eo:cloud_cover`` from the Fmask, geometry/bbox from the tile footprint, and
assets of bands not made are dropped, and the links are the static catalog's. No
``proj:*`` is added: real items carry none.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lssr_ray.config import REPO_ROOT
from lssr_ray.data import hls
from lssr_ray.data.cog import HLS_LAYOUT, write_cog
from lssr_ray.errors import ConfigError, LssrError

SOURCE_GRANULE = REPO_ROOT / "data" / "archive" / "HLSL30" / "HLS.L30.T16RDV.2015216T161921.v2.0"
"""Bundled real Landsat-8 granule whose pixels are mirror-tiled over each tile."""
DEFAULT_TILES = ("15TVG", "15TWG")
"""Two neighbouring Iowa tiles in UTM zone 15 (one Landsat overpass covers both)."""
DEFAULT_TIME = "2021-06-29T16:53:11Z"
"""Sensing time: the day of the real item HLS.L30.T15TVG.2021180T165311.v2.0."""
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "Fmask")
"""Band files made: the six LSSR reflectance bands and Fmask (what the source granule has)."""
BUCKET = "lp-prod-protected"
COLLECTION_FOLDER = "HLSL30.020"
"""Key prefix of HLS L30 v2.0 in the bucket."""
LONG_NAMES = {"B01": "Coastal_Aerosol", "B02": "Blue", "B03": "Green", "B04": "Red", "B05": "NIR",
              "B06": "SWIR1", "B07": "SWIR2", "Fmask": "Fmask"}
"""HDF ``long_name`` of each L30 band (HLS v2.0 User Guide band table)."""
TEMPLATE_DIR = REPO_ROOT / "data" / "samples" / "cmr_stac" / "items"


def mirror_index(start: int, n: int, period: int) -> np.ndarray:
    """Indices ``start .. start+n-1`` folded back and forth over ``0 .. period-1``."""
    k = (start + np.arange(n)) % (2 * period)
    return np.where(k < period, k, 2 * period - 1 - k)


def tiled_pixels(source: np.ndarray, transform, shape: tuple[int, int]) -> np.ndarray:
    """``source`` mirror-tiled onto a grid by absolute 30 m lattice position (see docstring)."""
    res = abs(transform.a)
    rows = mirror_index(int(np.floor(-transform.f / res)), shape[0], source.shape[0])
    cols = mirror_index(int(np.floor(transform.c / res)), shape[1], source.shape[1])
    return source[np.ix_(rows, cols)]


def read_source(bands=BANDS) -> dict[str, np.ndarray]:
    import rasterio

    out = {}
    for band in bands:
        path = SOURCE_GRANULE / f"{SOURCE_GRANULE.name}.{band}.tif"
        if not path.is_file():
            raise ConfigError(f"source band {band} not found ({path}); bands made: {', '.join(BANDS)}")
        with rasterio.open(path) as src:
            out[band] = src.read(1)
    return out


def cloud_cover(fmask: np.ndarray) -> int:
    """Percent of non-fill pixels flagged cloud, adjacent or shadow (HLS ``cloud_coverage``)."""
    f = hls.decode_fmask(fmask)
    valid = ~f["fill"]
    bad = (f["cloud"] | f["adjacent"] | f["shadow"]) & valid
    return round(100.0 * bad.sum() / max(int(valid.sum()), 1))


def make_granule(tile: str, when: dt.datetime, out: Path, source: dict[str, np.ndarray]) -> dict:
    """Write one granule's band COGs under ``out``; returns its facts for the item."""
    from affine import Affine

    epsg, transform, shape = hls.tile_grid(tile)
    transform = Affine(*tuple(transform)[:6])
    gid = hls.format_name("L30", tile, when)
    folder = out / BUCKET / COLLECTION_FOLDER / gid
    folder.mkdir(parents=True, exist_ok=True)
    fmask = tiled_pixels(source["Fmask"], transform, shape)
    cover = cloud_cover(fmask)
    spatial = round(100.0 * float((fmask != hls.FMASK_FILL).mean()))
    tags = {"ACCODE": "none (Landsat-8 L1T TOA reflectance, see scripts/make_hls_cogs.py)",
            "cloud_coverage": cover, "HORIZONTAL_CS_CODE": f"EPSG:{epsg}", "NCOLS": shape[1], "NROWS": shape[0],
            "OVR_RESAMPLING_ALG": "NEAREST", "SENSING_TIME": when.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "SENSOR": "OLI", "spatial_coverage": spatial, "SPATIAL_RESOLUTION": 30,
            "ULX": f"{transform.c:.0f}", "ULY": f"{transform.f:.0f}",
            "NOTE": "lssr-ray scripts/make_hls_cogs.py: HLS v2.0 file layout, pixels mirror-tiled "
                    f"from {SOURCE_GRANULE.name} (real Landsat-8 TOA); not an HLS product"}

    def write(band: str) -> Path:
        arr = fmask if band == "Fmask" else tiled_pixels(source[band], transform, shape)
        path = folder / f"{gid}.{band}.tif"
        is_mask = band == "Fmask"
        write_cog(path, arr, crs=f"EPSG:{epsg}", transform=transform,
                  nodata=hls.FMASK_FILL if is_mask else hls.NODATA, scale=None if is_mask else hls.SCALE,
                  description=LONG_NAMES[band], tags=tags, layout=HLS_LAYOUT)
        return path

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # GDAL compresses without the GIL
        files = dict(zip(source, pool.map(write, source)))
    return {"id": gid, "tile": tile, "epsg": epsg, "transform": transform, "shape": shape, "when": when,
            "cloud_cover": cover, "files": files}


def default_template() -> Path:
    found = sorted(p for p in TEMPLATE_DIR.rglob("*.json") if _l30_item(p) is not None) if TEMPLATE_DIR.is_dir() else []
    if not found:
        raise ConfigError(f"no recorded real HLSL30_2.0 item under {TEMPLATE_DIR}; give one with --item-template")
    return found[0]


def _l30_item(path: Path) -> dict | None:
    """The first HLSL30 item in a JSON file (an item, an ItemCollection or a /search page)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    feats = doc.get("features", [doc]) if isinstance(doc, dict) else []
    for f in feats:
        if isinstance(f, dict) and f.get("type") == "Feature" and str(f.get("id", "")).startswith("HLS.L30."):
            return f
    return None


def item_for(granule: dict, template: dict) -> dict:
    """A real-shaped CMR-STAC item for ``granule`` from a real ``template`` item (see docstring)."""
    from odc.geo.geobox import GeoBox

    old = template["id"]
    new = granule["id"]
    text = json.dumps(template).replace(old, new)
    item = json.loads(text)
    stamp = granule["when"].strftime("%Y-%m-%dT%H:%M:%S.000Z")
    props = item.setdefault("properties", {})
    for key in ("datetime", "start_datetime", "end_datetime"):
        if key in props or key == "datetime":
            props[key] = stamp
    props["eo:cloud_cover"] = granule["cloud_cover"]
    box = GeoBox(granule["shape"], granule["transform"], f"EPSG:{granule['epsg']}")
    footprint = box.extent.to_crs("EPSG:4326", resolution=box.extent.boundingbox.span_x / 4)  # metres per segment
    item["geometry"] = json.loads(json.dumps(footprint.json))
    lon0, lat0, lon1, lat1 = footprint.boundingbox
    item["bbox"] = [round(v, 7) for v in (lon0, lat0, lon1, lat1)]
    made = set(granule["files"])
    band_key = re.compile(r"^(?:s3_)?(B\d\d|B8A|Fmask|SZA|SAA|VZA|VAA)$")
    item["assets"] = {k: a for k, a in item.get("assets", {}).items()
                      if not (m := band_key.match(k)) or m.group(1) in made}
    missing = made - {k for k in item["assets"] if not k.startswith("s3_")}
    if missing:
        raise ConfigError(f"template item {old} has no assets for {sorted(missing)}")
    return item


def write_catalog(items: list[dict], folder: Path) -> Path:
    """A static STAC catalog of ``items``, each written byte for byte as given (no pystac round
    trip: that would rewrite ``stac_version`` and extension schema versions), with only its
    links replaced by root/parent/self links of the catalog."""
    folder.mkdir(parents=True, exist_ok=True)
    links = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
    for d in items:
        rel = f"./{d['id']}/{d['id']}.json"
        links.append({"rel": "item", "href": rel, "type": "application/geo+json"})
        d = {**d, "links": [{"rel": "root", "href": "../catalog.json", "type": "application/json"},
                            {"rel": "parent", "href": "../catalog.json", "type": "application/json"}]}
        (folder / d["id"]).mkdir(exist_ok=True)
        (folder / rel).write_text(json.dumps(d, indent=1))
    catalog = {"type": "Catalog", "id": "hls-generated", "stac_version": "1.0.0",
               "description": "Full-size HLS v2.0-format granules made by scripts/make_hls_cogs.py; "
                              "items in the real CMR-STAC shape", "links": links}
    (folder / "catalog.json").write_text(json.dumps(catalog, indent=1))
    return folder / "catalog.json"


def make(out: Path, *, tiles=DEFAULT_TILES, when: str = DEFAULT_TIME, template: Path | None = None,
         s3_endpoint: str | None = None, log=print) -> dict:
    """Make the granules, the catalog and (with ``s3_endpoint``) upload; returns a summary."""
    out = Path(out)
    try:
        t = dt.datetime.fromisoformat(when)
    except ValueError:
        raise ConfigError(f"--time {when!r} is not an ISO 8601 time (e.g. {DEFAULT_TIME})") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    tiles = [tile.removeprefix("T") for tile in tiles]
    for tile in tiles:  # every tile id checked before anything is written
        hls.tile_grid(tile)
    template = Path(template) if template else default_template()
    if not template.is_file():
        raise ConfigError(f"item template not found: {template}")
    tmpl = _l30_item(template)
    if tmpl is None:
        raise ConfigError(f"{template} holds no HLSL30 item (id starting 'HLS.L30.')")
    source = read_source()
    granules, t0 = [], time.perf_counter()
    for tile in tiles:
        g = make_granule(tile, t, out, source)
        size = sum(p.stat().st_size for p in g["files"].values())
        log(f"{g['id']}: {len(g['files'])} COGs, {size / 1e6:.1f} MB, cloud {g['cloud_cover']} % "
            f"({time.perf_counter() - t0:.1f} s)")
        granules.append(g)
    catalog = write_catalog([item_for(g, tmpl) for g in granules], out / "catalog")
    log(f"catalog: {catalog} (item shape from {template})")
    uploaded = 0
    if s3_endpoint:
        from lssr_ray.data.s3server import upload_folder

        uploaded = upload_folder(out / BUCKET, BUCKET, endpoint_url=s3_endpoint)
        log(f"uploaded {uploaded} files to s3://{BUCKET}/{COLLECTION_FOLDER}/ at {s3_endpoint}")
    return {"granules": granules, "catalog": catalog, "uploaded": uploaded, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--tiles", nargs="+", default=list(DEFAULT_TILES), help="MGRS tile ids (default 15TVG 15TWG)")
    ap.add_argument("--time", default=DEFAULT_TIME, help="sensing time, ISO 8601 UTC")
    ap.add_argument("--item-template", type=Path, help="a real CMR-STAC HLSL30_2.0 item (JSON item, "
                    "ItemCollection or /search page); default: the first L30 item under data/samples/cmr_stac/items/")
    ap.add_argument("--s3-endpoint", help="upload OUT/lp-prod-protected to this S3 endpoint's bucket lp-prod-protected")
    a = ap.parse_args(argv)
    try:
        make(a.out, tiles=a.tiles, when=a.time, template=a.item_template, s3_endpoint=a.s3_endpoint)
    except LssrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
