"""Search a STAC API (NASA CMR-STAC ``LPCLOUD`` by default) for HLS v2.0 granules over an AOI and
write the result as a static STAC catalog that ``map_region --catalog`` reads.

``search_hls(aoi, start, end)`` runs one ``pystac-client`` item search over both HLS collections
(:data:`lssr_ray.data.hls.STAC_COLLECTIONS`), follows every ``next`` page, and returns the items
as recorded by the API (no ``proj:*`` added, hrefs untouched). :func:`run_search` does the same and
also reports pages and counts.

- **AOI**: sent as ``intersects`` with the AOI's convex hull, counter-clockwise (CMR wants simple
  counter-clockwise polygons); items that touch the hull but not the AOI itself are dropped here.
- **Cloud pre-filter** (``max_cloud``): CMR-STAC filters ``eo:cloud_cover`` server side through
  the STAC ``query`` extension (``{"eo:cloud_cover": {"lte": max_cloud}}``; CMR-STAC source
  ``src/domains/stac.ts``), so fewer pages come back; the same bound is checked again on every
  item, and items without ``eo:cloud_cover`` are dropped (an unknown cover is not "clear enough").
- **Retries**: HTTP 429 and 5xx and connection errors are retried with exponential backoff
  (urllib3 ``Retry`` on ``pystac-client``'s ``StacApiIO``; ``Retry-After`` honoured, POST
  included since a search changes nothing). When it gives up: one line naming the URL and the
  last status (:class:`lssr_ray.errors.StorageUnreachableError`); other 4xx answers are a
  :class:`lssr_ray.errors.ConfigError` with the server's message.

``write_catalog(items, out)`` writes ``catalog.json`` plus one JSON per item (a self-contained
pystac catalog) to a local folder or ``s3://`` prefix through :func:`lssr_ray.data.catalog.stac_io`.
Items keep their id, properties, geometry, assets and ``collection`` as the API sent them; their
``self``/``root``/``parent``/``collection`` links to the API are replaced by the catalog's own
(``via`` links to the CMR records stay).
Locally it is written to a sibling staging folder and swapped in, so a rerun replaces the old
catalog whole; on ``s3://`` the items are written first and ``catalog.json`` last (each object is
one atomic PUT), so a reader never sees a catalog that names missing items.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lssr_ray.data.hls import CMR_STAC_URL, STAC_COLLECTIONS
from lssr_ray.errors import ConfigError, StorageUnreachableError

log = logging.getLogger(__name__)

DEFAULT_COLLECTIONS: tuple[str, ...] = tuple(STAC_COLLECTIONS.values())
"""Both HLS v2.0 collections (L30 and S30)."""
CATALOG_ID = "lssr-hls-search"
"""Id of the catalogs :func:`write_catalog` writes (a rerun only replaces a folder holding one)."""
RETRY_STATUSES = (429, 500, 502, 503, 504)
_API_LINKS = ("self", "root", "parent", "collection")


@dataclass
class SearchResult:
    """What :func:`run_search` found."""

    items: Any
    """``pystac.ItemCollection`` of the kept items, as the API returned them."""
    pages: int = 0
    """Result pages fetched."""
    per_collection: dict[str, int] = field(default_factory=dict)
    """Kept items per collection id."""
    cloud_dropped: int = 0
    """Items the API returned that the local ``eo:cloud_cover`` check dropped."""
    outside_aoi: int = 0
    """Items that touched the AOI's hull but not the AOI."""
    matched_before_cloud: int | None = None
    """Items the API matches without the cloud filter (``numberMatched``; None if unknown or no filter)."""


def _interval(start: Any, end: Any) -> str:
    def iso(value: Any, *, last: bool) -> str:
        if value is None:
            return ".."
        if isinstance(value, _dt.datetime):
            v = value if value.tzinfo else value.replace(tzinfo=_dt.UTC)
            return v.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")
        text = str(value).strip()
        try:
            day = _dt.date.fromisoformat(text)  # a bare date covers its whole day
        except ValueError:
            try:
                return iso(_dt.datetime.fromisoformat(text), last=last)  # naive = UTC
            except ValueError:
                raise ConfigError(f"{'end' if last else 'start'} {value!r} is not an ISO date or time") from None
        return f"{day.isoformat()}T23:59:59Z" if last else f"{day.isoformat()}T00:00:00Z"

    a, b = iso(start, last=False), iso(end, last=True)
    if a != ".." and b != ".." and a > b:
        raise ConfigError(f"start {start} is after end {end}")
    return f"{a}/{b}"


def _aoi_geometry(aoi: Any) -> Any:
    """shapely geometry (lon/lat) of an :class:`lssr_ray.data.aoi.AOI`, a GeoJSON mapping or a geometry."""
    from shapely.geometry import shape

    geom = getattr(aoi, "geometry", aoi)
    if isinstance(geom, dict):
        geom = shape(geom.get("geometry", geom))
    if not hasattr(geom, "convex_hull"):
        raise ConfigError(f"aoi must be an AOI, a GeoJSON geometry or a shapely geometry, got {type(aoi).__name__}")
    return geom


def _stac_io(max_retries: int, backoff_factor: float, timeout: float) -> Any:
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    retry = Retry(total=max_retries, connect=max_retries, read=max_retries, status=max_retries,
                  backoff_factor=backoff_factor, status_forcelist=RETRY_STATUSES, allowed_methods=None,
                  respect_retry_after_header=True, raise_on_status=False)
    return StacApiIO(max_retries=retry, timeout=timeout)


def _api_error(exc: Exception, url: str, max_retries: int) -> Exception:
    status = getattr(exc, "status_code", None)
    text = " ".join(str(exc).split())[:300]
    if status is None or status in RETRY_STATUSES:
        last = f"HTTP {status}" if status is not None else text
        return StorageUnreachableError(
            f"STAC API {url} failed after {max_retries} retries with backoff: {last}; check the URL and "
            "try again later (CMR-STAC limits request rates)")
    return ConfigError(f"STAC API {url} refused the search (HTTP {status}): {text}")


def run_search(aoi: Any, start: Any, end: Any, *, stac_url: str = CMR_STAC_URL,
               collections: Sequence[str] = DEFAULT_COLLECTIONS, max_cloud: float | None = None,
               page_size: int = 100, max_retries: int = 5, backoff_factor: float = 1.0,
               timeout: float = 60.0) -> SearchResult:
    """Search ``stac_url`` for items of ``collections`` over ``aoi`` between ``start`` and ``end``
    (ISO dates/times, inclusive; None = open) and report pages and counts (module docstring)."""
    import pystac
    from pystac_client import Client
    from pystac_client.exceptions import APIError
    from shapely.geometry import mapping, shape
    from shapely.geometry.polygon import orient

    if not collections:
        raise ConfigError("collections is empty: give at least one STAC collection id")
    if max_cloud is not None and not 0 <= max_cloud <= 100:
        raise ConfigError(f"max_cloud must be a percentage 0..100, got {max_cloud}")
    if page_size < 1:
        raise ConfigError(f"page_size must be >= 1, got {page_size}")
    geom = _aoi_geometry(aoi)
    hull = geom.convex_hull
    if hull.geom_type != "Polygon":  # a point or line AOI: search its small buffer
        hull = hull.buffer(1e-4)
    params: dict[str, Any] = {"collections": list(collections), "intersects": mapping(orient(hull, 1.0)),
                              "datetime": _interval(start, end), "limit": page_size}
    io = _stac_io(max_retries, backoff_factor, timeout)
    result = SearchResult(items=pystac.ItemCollection([]))
    kept: list[Any] = []
    try:
        client = Client.open(stac_url, stac_io=io)
        if max_cloud is not None:
            result.matched_before_cloud = client.search(**params).matched()
            params["query"] = {"eo:cloud_cover": {"lte": max_cloud}}
        for page in client.search(**params).pages():
            result.pages += 1
            for item in page.items:
                cc = item.properties.get("eo:cloud_cover")
                if max_cloud is not None and (cc is None or cc > max_cloud):
                    result.cloud_dropped += 1
                elif item.geometry is not None and not shape(item.geometry).intersects(geom):
                    result.outside_aoi += 1
                else:
                    kept.append(item)
    except APIError as exc:
        raise _api_error(exc, stac_url, max_retries) from exc
    result.items = pystac.ItemCollection(kept, clone_items=False)
    result.per_collection = dict(Counter(it.collection_id for it in kept))
    log.debug("search %s: %d items in %d pages", stac_url, len(kept), result.pages)
    return result


def search_hls(aoi: Any, start: Any, end: Any, *, stac_url: str = CMR_STAC_URL,
               collections: Sequence[str] = DEFAULT_COLLECTIONS, max_cloud: float | None = None,
               page_size: int = 100, **retry: Any) -> Any:
    """HLS items over ``aoi`` from ``start`` to ``end`` as a ``pystac.ItemCollection`` (:func:`run_search`)."""
    return run_search(aoi, start, end, stac_url=stac_url, collections=collections, max_cloud=max_cloud,
                      page_size=page_size, **retry).items


def _catalog_root(out: str) -> str:
    """The folder (or ``s3://`` prefix) the catalog goes to: ``out`` itself or the parent of ``catalog.json``."""
    text = str(out).rstrip("/")
    if text.endswith(".json"):
        if not text.endswith("/catalog.json") and text != "catalog.json":
            raise ConfigError(f"--out must be a folder, an s3:// prefix or a path ending in catalog.json, got {out}")
        text = text[: -len("catalog.json")].rstrip("/") or "."
    return text


def _build(items: Iterable[Any], root_href: str, description: str) -> Any:
    import pystac

    cat = pystac.Catalog(id=CATALOG_ID, description=description)
    for item in items:
        copy = item.clone()
        # the API's own hierarchy links would be fetched when hrefs are set; the catalog's replace them
        for rel in _API_LINKS:
            copy.remove_links(rel)
        cat.add_item(copy)
    # the best-practice layout, set directly: normalize_hrefs would take a folder named like
    # "x.search" for a file because of its dot
    cat.set_self_href(f"{root_href}/catalog.json")
    for item in cat.get_items():
        item.set_self_href(f"{root_href}/{item.id}/{item.id}.json")
    return cat


def write_catalog(items: Iterable[Any], out: str | Path, *, description: str = "HLS v2.0 items found by lssr-search-hls") -> str:
    """Write ``items`` as a self-contained static STAC catalog under ``out``; returns the catalog.json href."""
    import pystac

    from lssr_ray.data.catalog import stac_io

    items = list(items)
    root = _catalog_root(str(out))
    if root.startswith("s3://"):
        cat = _build(items, root, description)
        cat.save(pystac.CatalogType.SELF_CONTAINED, stac_io=stac_io())  # items first, catalog.json last
        return f"{root}/catalog.json"
    final = Path(root).resolve()
    if final.exists() and any(final.iterdir()):
        marker = final / "catalog.json"
        try:
            ours = pystac.Catalog.from_file(str(marker)).id == CATALOG_ID
        except Exception:  # noqa: BLE001 - missing or unreadable: not a catalog this module wrote
            ours = False
        if not ours:
            raise ConfigError(f"{final} exists and does not hold a catalog written by lssr-search-hls; "
                              "choose an empty or new folder (nothing was written)")
    staging = final.with_name(f"{final.name}-staging-{uuid.uuid4().hex[:8]}")
    try:
        cat = _build(items, str(staging), description)
        cat.save(pystac.CatalogType.SELF_CONTAINED, stac_io=stac_io())
        old = final.with_name(f"{final.name}-old-{uuid.uuid4().hex[:8]}")
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(final / "catalog.json")


__all__ = ["CATALOG_ID", "DEFAULT_COLLECTIONS", "SearchResult", "run_search", "search_hls", "write_catalog"]
