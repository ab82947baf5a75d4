"""Where the granules are: the catalog search over an AOI, the part of the AOI their footprints
cover, and whether a granule overlaps a grid window (the cube reads only those)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from affine import Affine

from lssr_ray.errors import CoverageError


def search_granules(catalog: Any, aoi: Any, *, start: str | None = None, end: str | None = None,
                    collections: Sequence[str] | None = None) -> list[Any]:
    """Granules of ``catalog`` over the AOI; :class:`CoverageError` naming the catalog extent if none."""
    kw = {"collections": tuple(collections)} if collections else {}
    granules = list(catalog.search(aoi.geometry, start=start, end=end, **kw))
    if not granules:
        boxes = sorted({tuple(round(v, 3) for v in g.bbox) for g in getattr(catalog, "granules", ())
                        if g.collection.startswith("HLS")})
        extent = f"{len(boxes)} lon/lat box(es) {boxes}" if boxes else None
        raise CoverageError(
            f"no granule in the catalog covers AOI {aoi.name} (lon/lat bounds "
            f"{tuple(round(v, 4) for v in aoi.geometry.bounds)}) between {start or 'any'} and {end or 'any'}; "
            f"the catalog covers {extent if extent is not None else 'an unknown extent'}"
        )
    return sorted(granules, key=lambda g: str(g.datetime))


def granule_overlaps(granule: Any, grid: Any, window: tuple[int, int, int, int]) -> bool:
    """Whether the granule's footprint overlaps a grid window (bounds in the granule's CRS)."""
    from odc.geo.geobox import GeoBox
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    left, bottom, right, top = grid.window_geobox(window).boundingbox.bbox
    gcrs = CRS.from_user_input(granule.crs)
    l2, b2, r2, t2 = transform_bounds(CRS.from_user_input(grid.crs), gcrs, left, bottom, right, top)
    gl, gb, gr, gtop = GeoBox(granule.shape, Affine(*tuple(granule.transform)[:6]), None).boundingbox.bbox
    return not (r2 <= gl or l2 >= gr or t2 <= gb or b2 >= gtop)


def covered_part(aoi: Any, granules: Sequence[Any]) -> tuple[Any, float]:
    """(the AOI clipped to the granules' footprints, km2 of the AOI outside them).

    Footprints are the items' GeoJSON geometries (their lon/lat bbox when they have none). The
    clipped AOI keeps the zone and CRS of the whole AOI so its grid is the one the full AOI would
    have; an AOI fully covered is returned unchanged.
    """
    import shapely
    from shapely.geometry import box, shape

    from lssr_ray.data.aoi import polygonal_part, to_crs

    prints = [shape(g.geometry) if getattr(g, "geometry", None) else box(*g.bbox) for g in granules]
    inside = aoi.geometry.intersection(shapely.union_all(prints))
    if inside.equals(aoi.geometry) or inside.area >= aoi.geometry.area * (1 - 1e-9):
        return aoi, 0.0
    inside = polygonal_part(inside)
    utm = to_crs(inside, aoi.crs)
    outside = max(0.0, aoi.area_km2 - float(utm.area) / 1e6)
    return dataclasses.replace(aoi, geometry=inside, utm_geometry=utm), outside


__all__ = ["covered_part", "granule_overlaps", "search_granules"]
