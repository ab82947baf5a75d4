"""Search the archive's STAC catalog (local folder or ``s3://``) for granules and aux layers.

``open_catalog(href)`` reads ``catalog.json`` and every item once (pystac; on ``s3://`` through
:mod:`lssr_ray.fileio`, which picks the endpoint and credentials). Asset hrefs are resolved
against the item they belong to, so a catalog on ``s3://bucket/archive/`` yields ``s3://bucket/archive/...`` hrefs
and a local one yields absolute local paths.

``Catalog.search`` returns reflectance granules (collections ``HLSL30``/``HLSS30``) whose WGS 84
footprint overlaps a geometry within a time range; ``Catalog.aux_items`` does the same for the
aux collections (``dem``, ``landcover``, ``sentinel1``, ``croptype``, ``s2_reference``). Both
return ``[]`` outside coverage; callers raise :class:`lssr_ray.errors.CoverageError`.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lssr_ray.errors import ConfigError, MissingDataError, StorageUnreachableError
from lssr_ray.fileio import atomic_put, endpoint_for, filesystem

GRANULE_COLLECTIONS = ("HLSL30", "HLSS30")
AUX_KINDS = ("dem", "landcover", "sentinel1", "croptype", "s2_reference")


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
        return {"HLSL30": "L30", "HLSS30": "S30"}.get(self.collection)


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


def _granule(item) -> Granule:
    props = dict(item.properties)
    code = props.get("proj:code") or (f"EPSG:{props['proj:epsg']}" if props.get("proj:epsg") else None)
    if code is None or "proj:transform" not in props or "proj:shape" not in props:
        raise MissingDataError(f"STAC item {item.id} lacks proj:code/proj:epsg, proj:transform or proj:shape")
    when = item.datetime or _utc(props.get("start_datetime"))
    assets, info = {}, {}
    for key, asset in item.assets.items():
        assets[key] = asset.get_absolute_href()
        extra = asset.extra_fields
        rb = (extra.get("raster:bands") or [{}])[0]
        meta = {k: rb.get(k) for k in ("nodata", "scale", "offset", "data_type")}
        if meta["nodata"] == "nan":
            meta["nodata"] = float("nan")
        if "proj:transform" in extra:
            meta["transform"] = tuple(float(v) for v in extra["proj:transform"][:6])
        if "proj:shape" in extra:
            meta["shape"] = tuple(int(v) for v in extra["proj:shape"])
        info[key] = meta
    skip = {"proj:code", "proj:epsg", "proj:transform", "proj:shape", "datetime"}
    return Granule(
        id=item.id, collection=item.collection_id or "", datetime=_utc(when), crs=str(code),
        bbox=tuple(float(v) for v in item.bbox), transform=tuple(float(v) for v in props["proj:transform"][:6]),
        shape=(int(props["proj:shape"][0]), int(props["proj:shape"][1])), assets=assets,
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

    def _select(self, geometry: Any, collections: Iterable[str], start: Any, end: Any) -> list[Granule]:
        geom = _as_shape(geometry)
        if geom.is_empty:
            raise ConfigError("geometry is empty")
        t0, t1 = _utc(start), _utc(end, end=True)
        if t0 and t1 and t1 < t0:
            raise ConfigError(f"end {end!r} is before start {start!r}")
        wanted = set(collections)
        out = []
        for g in self.granules:
            if g.collection not in wanted:
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
               collections: Iterable[str] = GRANULE_COLLECTIONS) -> list[Granule]:
        """Reflectance granules whose footprint overlaps ``geometry_wgs84`` (lon/lat) with
        ``start <= datetime <= end`` (inclusive; a bare date as ``end`` covers that whole day).
        Sorted by time. ``[]`` when nothing covers the request."""
        colls = tuple([collections] if isinstance(collections, str) else collections)
        bad = [c for c in colls if c not in GRANULE_COLLECTIONS + AUX_KINDS]
        if bad or not colls:
            raise ConfigError(f"unknown collections {bad or colls}; valid: {GRANULE_COLLECTIONS + AUX_KINDS}")
        return self._select(geometry_wgs84, colls, start, end)

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


def open_catalog(href: str | os.PathLike) -> Catalog:
    """Open ``catalog.json`` (or the folder holding it), local or ``s3://bucket/prefix``."""
    import pystac

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
        cat = pystac.Catalog.from_file(h, stac_io=stac_io())
        granules = [_granule(item) for item in cat.get_items(recursive=True)]
    except (MissingDataError, StorageUnreachableError):
        raise
    except pystac.STACError as exc:
        raise MissingDataError(f"{h} is not a readable STAC catalog: {exc}") from exc
    return Catalog(h, granules)


__all__ = ["AUX_KINDS", "GRANULE_COLLECTIONS", "Catalog", "Granule", "open_catalog", "stac_io"]
