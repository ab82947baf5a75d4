"""Search the archive's STAC catalog (local folder or ``s3://``) for granules and aux layers.

``open_catalog(href)`` reads ``catalog.json`` and every item once (pystac; on ``s3://`` through
:mod:`lssr_ray.fileio`, which picks the endpoint and credentials). Asset hrefs are resolved
against the item they belong to, so a catalog on ``s3://bucket/archive/`` yields ``s3://bucket/archive/...`` hrefs
and a local one yields absolute local paths.

The catalog may also be an ItemCollection / FeatureCollection JSON file (what pystac-client's
``ItemCollection.save_object`` writes, e.g. a saved CMR-STAC search). Items are read as they are:

- the pixel grid comes from ``proj:code``/``proj:epsg`` + ``proj:transform`` + ``proj:shape`` where
  an item has them (the bundled archive), else from the MGRS tile in an HLS item id
  (:func:`lssr_ray.data.hls.tile_grid`; real CMR-STAC items carry no ``proj:*``), else from the
  header of the item's first data file (:func:`granule_grid_from_header`, read once per process);
- collection ids ``HLSL30_2.0``/``HLSS30_2.0`` (CMR-STAC) and ``HLSL30``/``HLSS30`` (bundled
  archive) are both HLS: :attr:`Granule.product` says ``L30``/``S30``;
- real items have each data asset twice, ``B04`` (https) and ``s3_B04`` (``s3://``, us-west-2
  only); ``asset_access="s3"`` picks the ``s3_`` twin where present. :attr:`Granule.assets` is
  keyed by the plain key either way.

``Catalog.search`` returns reflectance granules whose WGS 84 footprint overlaps a geometry within
a time range (optionally ``eo:cloud_cover <= max_cloud``); ``Catalog.aux_items`` does the same for
the aux collections (``dem``, ``landcover``, ``sentinel1``, ``croptype``, ``s2_reference``). Both
return ``[]`` outside coverage; callers raise :class:`lssr_ray.errors.CoverageError`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lssr_ray.config import ASSET_ACCESS
from lssr_ray.data import hls
from lssr_ray.errors import ConfigError, LssrError, MissingDataError, StorageUnreachableError
from lssr_ray.fileio import atomic_put, endpoint_for, filesystem

_PRODUCT_OF_COLLECTION = {"HLSL30": "L30", "HLSS30": "S30", **{c: p for p, c in hls.STAC_COLLECTIONS.items()}}
GRANULE_COLLECTIONS = tuple(_PRODUCT_OF_COLLECTION)
"""HLS collection ids: the bundled archive's ``HLSL30``/``HLSS30`` and CMR-STAC's ``HLSL30_2.0``/
``HLSS30_2.0``. Searching for either name of a product finds items of both."""
AUX_KINDS = ("dem", "landcover", "sentinel1", "croptype", "s2_reference")
_S3_TWIN = "s3_"


@dataclass(frozen=True)
class Granule:
    """One STAC item of the archive, flattened for readers."""

    id: str
    """Item id, e.g. ``HLS.L30.T31UDS.2018214T103944.v2.0``."""
    collection: str
    datetime: _dt.datetime
    """Acquisition time, UTC (aux items without one: their ``start_datetime``)."""
    crs: str
    """``"EPSG:xxxx"`` of the pixel grid (UTM)."""
    bbox: tuple[float, float, float, float]
    """WGS 84 (lon_min, lat_min, lon_max, lat_max)."""
    transform: tuple[float, float, float, float, float, float]
    """Affine (a, b, c, d, e, f) of the item's main grid, CRS units (m)."""
    shape: tuple[int, int]
    """(rows, cols) of the main grid."""
    assets: Mapping[str, str]
    """Band id / asset key (``"B04"``, ``"Fmask"``, ``"elevation"``, ``"VV"``) -> absolute href."""
    geometry: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """WGS 84 GeoJSON footprint."""
    asset_info: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, compare=False)
    """Asset key -> {``nodata``, ``scale``, ``offset``, ``data_type``, ``transform``, ``shape``}
    (``transform``/``shape`` only where an asset's grid differs from the item's)."""
    properties: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """The remaining STAC properties (``eo:cloud_cover``, ``end_datetime``, ...)."""

    def __hash__(self) -> int:
        return hash((self.collection, self.id))

    @property
    def epsg(self) -> int:
        """EPSG code as int."""
        return int(self.crs.split(":")[1])

    @property
    def product(self) -> str | None:
        """``"L30"``/``"S30"`` for HLS granules, else None."""
        return _PRODUCT_OF_COLLECTION.get(self.collection)


def stac_io():
    """A pystac ``StacIO`` that reads and writes ``s3://`` through :mod:`lssr_ray.fileio` (endpoint
    and credentials of the URL's prefix; writes are one atomic PUT) and everything else as usual."""
    from pystac.stac_io import DefaultStacIO

    class _S3StacIO(DefaultStacIO):

        def read_text(self, source, *args, **kwargs) -> str:
            href = str(source)
            if href.startswith("s3://"):
                fs, path = filesystem(href)
                try:
                    with fs.open(path, "r") as fh:
                        return fh.read()
                except FileNotFoundError as exc:
                    raise MissingDataError(f"STAC document not found: {href}") from exc
                except (OSError, ConnectionError) as exc:
                    if isinstance(exc, PermissionError):
                        raise
                    raise StorageUnreachableError(
                        f"cannot read {href} (endpoint {endpoint_for(href)}): {exc}"
                    ) from exc
            return super().read_text(source, *args, **kwargs)

        def write_text(self, dest, txt: str, *args, **kwargs) -> None:
            href = str(dest)
            if href.startswith("s3://"):
                atomic_put(href, txt.encode("utf-8"))
                return
            super().write_text(dest, txt, *args, **kwargs)

    return _S3StacIO()


def _utc(value: Any, *, end: bool = False) -> _dt.datetime | None:
    """datetime/date/ISO string -> aware UTC; a bare date means its start (or end of day)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed: Any = _dt.datetime.fromisoformat(text)
        except ValueError as exc:
            raise ConfigError(f"not an ISO date/time: {value!r} (use e.g. '2018-08-02')") from exc
        if len(text) == 10:
            parsed = parsed.date()
        value = parsed
    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=_dt.UTC) if value.tzinfo is None else value.astimezone(_dt.UTC)
    if isinstance(value, _dt.date):
        t = _dt.time.max if end else _dt.time.min
        return _dt.datetime.combine(value, t, tzinfo=_dt.UTC)
    raise ConfigError(f"expected a date, datetime or ISO string, got {type(value).__name__}")


def _as_shape(geometry: Any):
    """shapely geometry / GeoJSON geometry, Feature or FeatureCollection -> shapely geometry."""
    import shapely
    from shapely.geometry import shape

    if isinstance(geometry, shapely.Geometry):
        return geometry
    if hasattr(geometry, "__geo_interface__"):
        geometry = geometry.__geo_interface__
    if not isinstance(geometry, Mapping) or "type" not in geometry:
        raise ConfigError("geometry must be a shapely geometry or a GeoJSON geometry/Feature/FeatureCollection (WGS 84)")
    kind = geometry["type"]
    if kind == "FeatureCollection":
        parts = [shape(f["geometry"]) for f in geometry.get("features", []) if f.get("geometry")]
        if not parts:
            raise ConfigError("FeatureCollection has no geometries")
        return shapely.union_all(parts)
    if kind == "Feature":
        if not geometry.get("geometry"):
            raise ConfigError("Feature has no geometry")
        return shape(geometry["geometry"])
    return shape(geometry)


def granule_grid_from_header(href: str) -> tuple[str, tuple[float, ...], tuple[int, int]]:
    """(CRS, affine (a, b, c, d, e, f), (rows, cols)) from a raster's header (no pixels read;
    cached per href in this process by :func:`lssr_ray.data.readers.raster_header`)."""
    from lssr_ray.data.readers import raster_header

    hdr = raster_header(str(href))
    return hdr.crs, hdr.transform, hdr.shape


def _item_grid(item, assets: Mapping[str, str]) -> tuple[str, tuple[float, ...], tuple[int, int]]:
    """The item's pixel grid: its ``proj:*`` fields, else its HLS tile id, else a file header."""
    props = item.properties
    code = props.get("proj:code") or (f"EPSG:{props['proj:epsg']}" if props.get("proj:epsg") else None)
    if code is not None and "proj:transform" in props and "proj:shape" in props:
        return (str(code), tuple(float(v) for v in props["proj:transform"][:6]),
                (int(props["proj:shape"][0]), int(props["proj:shape"][1])))
    try:
        tile = hls.parse_name(item.id).tile
    except ConfigError:
        tile = None
    if tile is not None:
        epsg, transform, shape = hls.tile_grid(tile)
        return f"EPSG:{epsg}", transform, shape
    data = [k for k in assets if "tiff" in (item.assets[k].media_type or "")
            or assets[k].lower().endswith((".tif", ".tiff"))]
    if not data:
        raise MissingDataError(
            f"STAC item {item.id}: no proj:* fields, no HLS tile in its id and no data asset to read "
            f"a grid from (assets: {sorted(assets)})"
        )
    return granule_grid_from_header(assets[min(data)])


def _asset_hrefs(item, asset_access: str, base: str | None) -> dict[str, str]:
    """Plain asset key -> absolute href, the ``s3_`` twin's href when ``asset_access == "s3"``."""
    from pystac.utils import make_absolute_href

    def absolute(asset) -> str:
        if item.get_self_href() is None and base is not None:
            return make_absolute_href(asset.href, base)
        return asset.get_absolute_href()

    out = {key: absolute(a) for key, a in item.assets.items() if not key.startswith(_S3_TWIN)}
    if asset_access == "s3":
        for key, asset in item.assets.items():
            plain = key[len(_S3_TWIN):]
            if key.startswith(_S3_TWIN) and plain in out:
                out[plain] = absolute(asset)
    return out


def _granule(item, asset_access: str = "https", base: str | None = None) -> Granule:
    props = dict(item.properties)
    when = item.datetime or _utc(props.get("start_datetime"))
    assets, info = _asset_hrefs(item, asset_access, base), {}
    for key in assets:
        extra = item.assets[key].extra_fields
        rb = (extra.get("raster:bands") or [{}])[0]
        meta = {k: rb.get(k) for k in ("nodata", "scale", "offset", "data_type")}
        if meta["nodata"] == "nan":
            meta["nodata"] = float("nan")
        if "proj:transform" in extra:
            meta["transform"] = tuple(float(v) for v in extra["proj:transform"][:6])
        if "proj:shape" in extra:
            meta["shape"] = tuple(int(v) for v in extra["proj:shape"])
        info[key] = meta
    crs, transform, shape = _item_grid(item, assets)
    skip = {"proj:code", "proj:epsg", "proj:transform", "proj:shape", "datetime"}
    return Granule(
        id=item.id, collection=item.collection_id or "", datetime=_utc(when), crs=crs,
        bbox=tuple(float(v) for v in item.bbox), transform=transform, shape=shape, assets=assets,
        geometry=item.geometry or {}, asset_info=info,
        properties={k: v for k, v in props.items() if k not in skip},
    )


class Catalog:
    """All items of one archive catalog, loaded once; search by footprint and time."""

    def __init__(self, href: str, granules: Iterable[Granule]) -> None:
        from shapely.geometry import shape

        self.href = href
        self.granules: tuple[Granule, ...] = tuple(sorted(granules, key=lambda g: (g.collection, g.datetime, g.id)))
        self._shapes = {(g.collection, g.id): shape(g.geometry) for g in self.granules}

    @property
    def collections(self) -> tuple[str, ...]:
        """Collection ids present."""
        return tuple(sorted({g.collection for g in self.granules}))

    def __len__(self) -> int:
        return len(self.granules)

    def _select(self, geometry: Any, collections: Iterable[str], start: Any, end: Any,
                max_cloud: float | None = None) -> list[Granule]:
        geom = _as_shape(geometry)
        if geom.is_empty:
            raise ConfigError("geometry is empty")
        t0, t1 = _utc(start), _utc(end, end=True)
        if t0 and t1 and t1 < t0:
            raise ConfigError(f"end {end!r} is before start {start!r}")
        wanted = set(collections)
        products = {_PRODUCT_OF_COLLECTION[c] for c in wanted if c in _PRODUCT_OF_COLLECTION}
        out = []
        for g in self.granules:
            if g.collection not in wanted and (g.product is None or g.product not in products):
                continue
            cloud = g.properties.get("eo:cloud_cover")
            if max_cloud is not None and cloud is not None and float(cloud) > max_cloud:
                continue
            g_start = g.datetime
            g_end = _utc(g.properties.get("end_datetime")) or g.datetime
            if (t0 and g_end < t0) or (t1 and g_start > t1):
                continue
            fp = self._shapes[(g.collection, g.id)]
            if fp.intersects(geom) and not fp.touches(geom):
                out.append(g)
        return sorted(out, key=lambda g: (g.datetime, g.collection, g.id))

    def search(self, geometry_wgs84: Any, *, start: Any = None, end: Any = None,
               collections: Iterable[str] = GRANULE_COLLECTIONS, max_cloud: float | None = None) -> list[Granule]:
        """Reflectance granules whose footprint overlaps ``geometry_wgs84`` (lon/lat) with
        ``start <= datetime <= end`` (inclusive; a bare date as ``end`` covers that whole day)
        and, with ``max_cloud`` (percent), ``eo:cloud_cover <= max_cloud`` (items that do not
        state a cloud cover are kept: the per-pixel Fmask decides for them).
        ``collections`` ``HLSL30`` and ``HLSL30_2.0`` both mean L30 (likewise S30).
        Sorted by time. ``[]`` when nothing covers the request."""
        colls = tuple([collections] if isinstance(collections, str) else collections)
        bad = [c for c in colls if c not in GRANULE_COLLECTIONS + AUX_KINDS]
        if bad or not colls:
            raise ConfigError(f"unknown collections {bad or colls}; valid: {GRANULE_COLLECTIONS + AUX_KINDS}")
        if max_cloud is not None and not 0 <= max_cloud <= 100:
            raise ConfigError(f"max_cloud is a percentage 0..100, got {max_cloud}")
        return self._select(geometry_wgs84, colls, start, end, max_cloud)

    def aux_items(self, geometry_wgs84: Any, kind: str, *, start: Any = None, end: Any = None) -> list[Granule]:
        """Aux items of ``kind`` (``dem``, ``landcover``, ``sentinel1``, ``croptype``,
        ``s2_reference``) overlapping the geometry; time-less items match through their
        start/end window. Sorted by time; ``[]`` outside coverage."""
        if kind not in AUX_KINDS:
            raise ConfigError(f"unknown aux kind {kind!r}; valid: {AUX_KINDS}")
        return self._select(geometry_wgs84, (kind,), start, end)

    def get(self, item_id: str) -> Granule:
        """The item with this id (any collection)."""
        for g in self.granules:
            if g.id == item_id:
                return g
        raise MissingDataError(f"no item {item_id!r} in {self.href}")


def _items(h: str, text: str):
    """(items, base href for relative asset hrefs) of a STAC Catalog/Collection or an
    ItemCollection/FeatureCollection JSON document at ``h``."""
    import pystac

    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise MissingDataError(f"{h} is not JSON ({exc}); expected a STAC catalog.json or a saved ItemCollection") from exc
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise MissingDataError(f"{h}: a FeatureCollection whose 'features' are not all STAC Items (not a list)")
        for i, f in enumerate(features):
            if not (isinstance(f, dict) and f.get("type") == "Feature" and isinstance(f.get("id"), str)
                    and isinstance(f.get("assets"), dict)):
                raise MissingDataError(
                    f"{h}: a FeatureCollection whose 'features' are not all STAC Items (feature {i} lacks "
                    f"type 'Feature', a string 'id' or an 'assets' object)"
                )
        # Item.from_dict without ItemCollection's deep copies (~3x faster on a large saved search);
        # STAC 1.x items need no migration
        return [pystac.Item.from_dict(f, preserve_dict=False, migrate=not str(f.get("stac_version", "")).startswith("1."))
                for f in features], h
    if kind in ("Catalog", "Collection"):
        cat = pystac.Catalog.from_file(h, stac_io=stac_io())
        return cat.get_items(recursive=True), None
    raise MissingDataError(
        f"{h} is neither a STAC Catalog/Collection nor an ItemCollection (FeatureCollection); its type is {kind!r}"
    )


def open_catalog(href: str | os.PathLike, *, asset_access: str = "https") -> Catalog:
    """Open ``catalog.json`` (or the folder holding it) or a saved ItemCollection /
    FeatureCollection JSON file, local or ``s3://bucket/prefix``. ``asset_access`` (``https`` or
    ``s3``, :data:`lssr_ray.config.ASSET_ACCESS`) picks which of an item's twin assets the readers get."""
    import pystac

    if asset_access not in ASSET_ACCESS:
        raise ConfigError(f"asset_access must be one of {', '.join(ASSET_ACCESS)}; got {asset_access!r}")
    h = str(href)
    if h.startswith("s3://"):
        if not h.endswith(".json"):
            h = h.rstrip("/") + "/catalog.json"
    else:
        p = Path(h)
        if p.is_dir():
            p = p / "catalog.json"
        if not p.is_file():
            raise MissingDataError(f"STAC catalog not found: {p} (build it with scripts/build_archive.py)")
        h = str(p.resolve())
    try:
        items, base = _items(h, stac_io().read_text(h))
        granules = [_granule(item, asset_access, base) for item in items]
    except LssrError:
        raise
    except (pystac.STACError, pystac.STACTypeError, KeyError, TypeError, ValueError) as exc:
        raise MissingDataError(f"{h} is not a readable STAC catalog or ItemCollection: {type(exc).__name__}: {exc}") from exc
    return Catalog(h, granules)


__all__ = ["AUX_KINDS", "GRANULE_COLLECTIONS", "Catalog", "Granule", "granule_grid_from_header",
           "open_catalog", "stac_io"]
