"""Find a run's aux layers (DEM, land cover, Sentinel-1): in the archive catalog, or in a public
STAC source (a STAC API, or a saved ItemCollection / static catalog file).

Public sources and their conventions (checked against the collections' published items, see
``data/samples/stac_aux/PROVENANCE.md``):

========== ================== ============ ===================================================
kind       collection         asset(s)     values
========== ================== ============ ===================================================
dem        ``cop-dem-glo-30`` ``data``     float32 metres, 1 x 1 degree tiles (EPSG:4326)
landcover  ``esa-worldcover`` ``map``      uint8 WorldCover codes 10..100, nodata 0, 3 x 3
                                           degree tiles -> class indices 5..15
                                           (``worldcover_classes.csv``)
sar        ``sentinel-1-rtc`` ``vv``,      float32 linear gamma0 (terrain-corrected), nodata
                              ``vh``       -32768, UTM; -> dB (10 log10) when read
========== ================== ============ ===================================================

Every item over the AOI is kept (several DEM / WorldCover tiles are mosaicked per block, see
:mod:`lssr_ray.data.aux`); a newer WorldCover edition comes first so it wins where editions
overlap. Sentinel-1 items are searched ``sar_max_gap_days`` around the run's dates.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lssr_ray.data.aux import SAR_MAX_GAP_DAYS, AuxSource
from lssr_ray.errors import ConfigError, MissingDataError

log = logging.getLogger(__name__)

AUX_COLLECTIONS: dict[str, str] = {"dem": "cop-dem-glo-30", "landcover": "esa-worldcover", "sar": "sentinel-1-rtc"}
"""Default collection id per aux kind (Planetary Computer / Earth Search names)."""
DEM_ASSETS = ("data",)
LANDCOVER_ASSETS = ("map",)
SAR_ASSETS = (("vv", "vh"), ("vv-rtc", "vh-rtc"))
"""(VV, VH) asset keys; ``*-rtc`` is the key form of the RTC items before Planetary Computer
renamed them (still found in saved catalogs)."""


@dataclass(frozen=True)
class AuxItem:
    """One aux STAC item, reduced to what the run needs."""

    id: str
    collection: str
    when: _dt.datetime | None
    """Acquisition time (Sentinel-1) or start of validity (DEM / land cover), UTC."""
    bbox: tuple[float, float, float, float]
    """WGS 84 bounds."""
    assets: Mapping[str, str]
    """Asset key -> absolute href."""


def aux_from_catalog(catalog: Any, aoi: Any) -> AuxSource:
    """Aux hrefs over the AOI from an archive catalog (``lssr_ray.data.catalog.Catalog``).

    DEM and land cover: every item overlapping the AOI (tiles, mosaicked per block; one item
    gives the single href as before). Sentinel-1: every overlapping scene, chosen per chip by date.
    """
    def tiles(kind: str, key: str) -> tuple[str | tuple[str, ...] | None, list]:
        items = [it for it in catalog.aux_items(aoi.geometry, kind) if key in it.assets]
        if len(items) <= 1:
            return (items[0].assets[key] if items else None), []
        return tuple(it.assets[key] for it in items), [(it.assets[key], tuple(it.bbox)) for it in items]

    dem, fp_dem = tiles("dem", "elevation")
    lc, fp_lc = tiles("landcover", "landcover")
    sar = tuple((it.datetime, (it.assets["VV"], it.assets["VH"]))
                for it in catalog.aux_items(aoi.geometry, "sentinel1") if {"VV", "VH"} <= set(it.assets))
    return AuxSource(dem=dem, landcover=lc, sar=sar, footprints=tuple(fp_dem + fp_lc),
                     origin=f"archive catalog {getattr(catalog, 'href', '')}".strip())


def _utc(value: Any) -> _dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "T", 1))
    return value.replace(tzinfo=_dt.UTC) if value.tzinfo is None else value.astimezone(_dt.UTC)


def _aux_item(item: Any) -> AuxItem:
    props = item.properties
    when = item.datetime or _utc(props.get("start_datetime"))
    if item.bbox is None:
        raise MissingDataError(f"STAC item {item.id} has no bbox")
    return AuxItem(id=item.id, collection=item.collection_id or "", when=_utc(when),
                   bbox=tuple(float(v) for v in item.bbox[:4]),
                   assets={k: a.get_absolute_href() for k, a in item.assets.items()})


def is_stac_api(source: str) -> bool:
    """A STAC API root (``http(s)://`` not ending in ``.json``) rather than a catalog file."""
    return source.startswith(("http://", "https://")) and not source.split("?")[0].endswith(".json")


def _read_file(source: str) -> list[Any]:
    """Items of a saved ItemCollection / FeatureCollection or a static catalog (local or s3://)."""
    import json

    import pystac

    from lssr_ray.data.catalog import stac_io

    io = stac_io()
    try:
        doc = json.loads(io.read_text(source))
    except (OSError, ValueError) as exc:
        raise MissingDataError(f"cannot read aux STAC source {source}: {exc}") from exc
    if doc.get("type") == "FeatureCollection":
        return list(pystac.ItemCollection.from_dict(doc, preserve_dict=False))
    if doc.get("type") == "Feature":
        return [pystac.Item.from_dict(doc)]
    cat = pystac.read_file(source, stac_io=io)
    return list(cat.get_items(recursive=True)) if hasattr(cat, "get_items") else []


def find_aux_items(source: str, geometry: Mapping[str, Any], collection: str, *,
                   start: Any = None, end: Any = None, items: list[Any] | None = None) -> list[AuxItem]:
    """Aux items of ``collection`` whose footprint overlaps ``geometry`` (WGS 84 GeoJSON) and,
    when ``start``/``end`` are given, whose time falls between them; newest first.

    ``source`` is a STAC API root or a saved item collection / catalog file; ``items`` are the
    file's items when the caller already read them.
    """
    from shapely.geometry import shape

    t0, t1 = _utc(start), _utc(end)
    if is_stac_api(source):  # the HLS search's client: paging, backoff retries, one-line errors
        from lssr_ray.data.stac_search import run_search

        found = list(run_search(geometry, t0, t1, stac_url=source, collections=[collection]).items)
    else:
        found = [it for it in (items if items is not None else _read_file(source))
                 if (it.collection_id or "") == collection]
    aoi = shape(geometry)
    out = []
    for it in found:
        a = _aux_item(it)
        if it.geometry and not shape(it.geometry).intersects(aoi):
            continue
        if a.when is not None and ((t0 and a.when < t0) or (t1 and a.when > t1)):
            continue
        out.append(a)
    return sorted(out, key=lambda a: (a.when or _dt.datetime.min.replace(tzinfo=_dt.UTC), a.id), reverse=True)


def _asset(item: AuxItem, keys: tuple[str, ...]) -> str | None:
    return next((item.assets[k] for k in keys if k in item.assets), None)


def aux_from_stac(source: str, aoi: Any, *, start: Any = None, end: Any = None,
                  collections: Mapping[str, str | None] | None = None,
                  sar_max_gap_days: float = SAR_MAX_GAP_DAYS) -> AuxSource:
    """Aux layers over ``aoi`` (an :class:`~lssr_ray.data.aoi.AOI` or WGS 84 GeoJSON geometry)
    from a public STAC ``source``.

    ``collections`` overrides :data:`AUX_COLLECTIONS` per kind (``None`` / ``"none"`` skips a
    kind). Sentinel-1 is searched from ``start - sar_max_gap_days`` to ``end + sar_max_gap_days``.
    """
    check_collections(collections or {})
    colls = {**AUX_COLLECTIONS, **dict(collections or {})}
    geometry = getattr(aoi, "geometry", aoi)
    geometry = geometry.__geo_interface__ if hasattr(geometry, "__geo_interface__") else geometry
    items = None if is_stac_api(source) else _read_file(source)

    def find(kind: str, **kw: Any) -> list[AuxItem]:
        c = colls.get(kind)
        return [] if not c or c == "none" else find_aux_items(source, geometry, c, items=items, **kw)

    footprints: list[tuple[str, tuple[float, float, float, float]]] = []

    def tiles(kind: str, keys: tuple[str, ...]) -> tuple[str, ...] | None:
        hrefs = []
        for it in find(kind):
            h = _asset(it, keys)
            if h is not None:
                hrefs.append(h)
                footprints.append((h, it.bbox))
        return tuple(hrefs) or None

    dem, lc = tiles("dem", DEM_ASSETS), tiles("landcover", LANDCOVER_ASSETS)
    gap = _dt.timedelta(days=sar_max_gap_days)
    t0, t1 = _utc(start), _utc(end)
    sar = []
    for it in find("sar", start=t0 - gap if t0 else None, end=t1 + gap + _dt.timedelta(days=1) if t1 else None):
        pair = next(((it.assets[v], it.assets[h]) for v, h in SAR_ASSETS if v in it.assets and h in it.assets), None)
        if pair is None or it.when is None:
            log.info("Sentinel-1 item %s has no VV+VH assets; not used", it.id)
            continue
        sar.append((it.when, pair))
        footprints.append((pair[0], it.bbox))
    for kind, found in (("dem", dem), ("landcover", lc), ("sar", sar)):
        if not found and colls.get(kind) not in (None, "none"):
            log.warning("aux STAC source %s has no usable %s item (%s) over the AOI%s: chips will have no %s",
                        source, kind, colls[kind], " in the dates' window" if kind == "sar" else "", kind)
    if colls.get("sar") not in (None, "none", AUX_COLLECTIONS["sar"]):
        log.warning("SAR collection %s: its values are read as linear backscatter like %s",
                    colls["sar"], AUX_COLLECTIONS["sar"])
    return AuxSource(dem=dem, landcover=lc, sar=tuple(sorted(sar, key=lambda s: s[0])),
                     sar_max_gap_days=sar_max_gap_days, footprints=tuple(footprints),
                     landcover_codes="esa-worldcover", sar_units="linear", origin=f"STAC {source}")


def check_collections(collections: Mapping[str, Any]) -> None:
    """:class:`ConfigError` for an aux kind that is not ``dem``/``landcover``/``sar``."""
    bad = sorted(set(collections) - set(AUX_COLLECTIONS))
    if bad:
        raise ConfigError(f"unknown aux kinds {bad}; valid: {tuple(AUX_COLLECTIONS)}")


__all__ = ["AUX_COLLECTIONS", "AuxItem", "aux_from_catalog", "aux_from_stac", "check_collections",
           "find_aux_items", "is_stac_api"]
