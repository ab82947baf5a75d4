"""Area of interest: RFC 7946 GeoJSON polygons (lon/lat WGS84) -> a validated geometry + its UTM CRS.

UTM zone rule (documented contract, used by :mod:`lssr_ray.data.grid`):

* The output CRS is the WGS 84 UTM zone that contains the AOI *centroid* (EPSG:326zz north of
  the equator, EPSG:327zz south of it, by the centroid's latitude). Zones come from the EPSG
  database through :func:`pyproj.database.query_utm_crs_info`; no hand projection math.
* An AOI whose bounding box spans more than one zone is projected into that single zone anyway
  (transverse Mercator stays usable a few degrees outside its zone); :attr:`AOI.notes` records it
  and a :class:`UserWarning` is emitted.
* An AOI spanning more than :data:`MAX_UTM_ZONES` zones (about 18 degrees of longitude) is
  rejected with :class:`~lssr_ray.errors.AOIError`: split it into several AOIs. Zones are those
  the *geometry* touches (not its bounding box).

Antimeridian: a ring with an edge spanning more than 180 degrees of longitude is read as crossing
180 the short way, and a MultiPolygon whose parts touch both +180 and -180 (the RFC 7946 split
form) as one area across 180; zone and projection are computed from that unwrapped area, and
:attr:`AOI.geometry` holds its RFC 7946 split form (for catalog searches). Every such reading and
every repair is a line in :attr:`AOI.notes`, which the mapping job prints and stores.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lssr_ray.errors import AOIError

MAX_UTM_ZONES = 3
"""Largest number of UTM zones an AOI's bounding box may touch (wider AOIs are rejected)."""

ACCEPTED_TYPES = ("Polygon", "MultiPolygon", "Feature", "FeatureCollection")
"""GeoJSON object types accepted as an AOI (features must carry Polygon/MultiPolygon geometries)."""


@dataclass(frozen=True)
class AOI:
    """A validated area of interest."""

    geometry: Any
    """shapely Polygon/MultiPolygon in lon/lat degrees (EPSG:4326, RFC 7946 axis order)."""
    crs: str
    """Output CRS chosen by the UTM zone rule, e.g. ``"EPSG:32631"``."""
    utm_geometry: Any
    """The same geometry projected into :attr:`crs` (metres)."""
    zones: tuple[int, ...]
    """UTM zone numbers the AOI's bounding box touches (the chosen one is the centroid's)."""
    notes: tuple[str, ...] = ()
    """Human-readable records of repairs/warnings (made valid, spans zones)."""
    source: str = "<geojson>"
    """Where the AOI came from (file path or ``"<geojson>"``)."""

    @property
    def epsg(self) -> int:
        """EPSG code of :attr:`crs`."""
        return int(self.crs.split(":")[1])

    @property
    def area_km2(self) -> float:
        """Area in km² measured in the UTM CRS."""
        return float(self.utm_geometry.area) / 1e6

    @property
    def name(self) -> str:
        """Short name: the file stem, or ``"aoi"``."""
        return Path(self.source).stem if self.source != "<geojson>" else "aoi"


def _polygons_from(obj: Any, source: str) -> list[Any]:
    from shapely.geometry import shape

    if not isinstance(obj, dict) or "type" not in obj:
        raise AOIError(f"{source}: not a GeoJSON object (no 'type'); accepted types: {ACCEPTED_TYPES}")
    kind = obj["type"]
    if kind == "FeatureCollection":
        feats = obj.get("features")
        if not isinstance(feats, list) or not feats:
            raise AOIError(f"{source}: FeatureCollection has no features; an AOI needs >= 1 polygon")
        out: list[Any] = []
        for i, f in enumerate(feats):
            out += _polygons_from(f, f"{source} feature {i}")
        return out
    if kind == "Feature":
        geom = obj.get("geometry")
        if geom is None:
            raise AOIError(f"{source}: Feature has a null geometry; it needs a Polygon or MultiPolygon")
        return _polygons_from(geom, source)
    if kind not in ("Polygon", "MultiPolygon"):
        raise AOIError(
            f"{source}: geometry type {kind!r} is not an area; accepted types: "
            f"{', '.join(ACCEPTED_TYPES)} (features with Polygon/MultiPolygon geometries)"
        )
    coords = obj.get("coordinates")
    seq = (list, tuple)  # JSON gives lists; shapely's mapping() gives tuples
    polys = [coords] if kind == "Polygon" else coords
    if not isinstance(polys, seq):
        raise AOIError(f"{source}: {kind} 'coordinates' must be a list, got {type(polys).__name__}")
    for pi, rings in enumerate(polys):
        for ri, ring in enumerate(rings if isinstance(rings, seq) else [None]):
            if not isinstance(ring, seq) or len(ring) < 4 or list(ring[0]) != list(ring[-1]):
                n = len(ring) if isinstance(ring, seq) else 0
                raise AOIError(
                    f"{source}: malformed {kind}: polygon {pi} ring {ri} has {n} positions or is not "
                    "closed; RFC 7946 linear rings need >= 4 [lon, lat] positions, the last equal to the first"
                )
    try:
        geom = shape(obj)
    except Exception as exc:  # shapely raises several types for bad rings/coordinates
        raise AOIError(f"{source}: malformed {kind} coordinates: {exc}") from exc
    return [geom]


def _check_lonlat(geom: Any, source: str) -> None:
    minx, miny, maxx, maxy = geom.bounds
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= 90 and -90 <= maxy <= 90):
        raise AOIError(
            f"{source}: coordinates out of range (bounds {geom.bounds}); GeoJSON AOIs must be "
            "lon/lat degrees in WGS84 (lon -180..180, lat -90..90), not projected metres"
        )


def polygonal_part(geom: Any) -> Any:
    """Keep only the polygonal parts of a geometry (make_valid may return collections)."""
    from shapely.geometry import GeometryCollection, MultiPolygon, Polygon
    from shapely.ops import unary_union

    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    if isinstance(geom, GeometryCollection):
        parts = [g for g in geom.geoms if isinstance(g, (Polygon, MultiPolygon))]
        return unary_union(parts) if parts else Polygon()
    return Polygon()


def utm_zone_for(geometry_wgs84: Any, *, max_zones: int = MAX_UTM_ZONES) -> tuple[str, tuple[int, ...]]:
    """Return (``"EPSG:326zz"``/``"EPSG:327zz"``, zones touched) for a lon/lat geometry.

    The zone is the one containing the centroid (hemisphere by the centroid's latitude); zones
    touched are those whose EPSG area of use overlaps the geometry itself with a non-zero area.
    Longitudes up to 540 (an area unwrapped across the antimeridian) are accepted. Raises
    :class:`AOIError` when the geometry touches more than ``max_zones`` zones.
    """
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info
    from shapely.geometry import Point, box

    c = geometry_wgs84.centroid
    c = Point((c.x + 180.0) % 360.0 - 180.0, c.y)  # an unwrapped centroid back in -180..180
    minx, miny, maxx, maxy = geometry_wgs84.bounds
    north = c.y >= 0
    suffix = "N" if north else "S"

    def infos(aoi: AreaOfInterest) -> list[Any]:
        return [
            i
            for i in query_utm_crs_info(datum_name="WGS 84", area_of_interest=aoi)
            if i.name.startswith("WGS 84 / UTM zone ") and not i.deprecated
        ]

    here = [i for i in infos(AreaOfInterest(c.x, c.y, c.x, c.y)) if i.name.endswith(suffix)]
    if not here:
        raise AOIError(f"no WGS 84 UTM zone contains the AOI centroid ({c.x:.4f}, {c.y:.4f})")
    # several candidates only on a zone edge: take the lowest EPSG code (deterministic)
    chosen = min(here, key=lambda i: int(i.code))
    pieces = [(minx, min(maxx, 180.0), 0.0)] + ([(-180.0, maxx - 360.0, 360.0)] if maxx > 180 else [])
    touched: set[int] = set()
    for west, east, shift in pieces:
        for i in infos(AreaOfInterest(west, miny, east, maxy)):
            a = i.area_of_use
            strip = box(a.west + shift, a.south, a.east + shift, a.north)
            if geometry_wgs84.intersection(strip).area > 0:
                touched.add(int(i.name.split()[-1][:-1]))
    spanned = sorted(touched)
    if len(spanned) > max_zones:
        raise AOIError(
            f"AOI spans {len(spanned)} UTM zones {spanned} (lon {minx:.2f}..{maxx:.2f}); at most "
            f"{max_zones} are allowed: split it into smaller AOIs"
        )
    return f"EPSG:{chosen.code}", tuple(spanned)


def _crosses_antimeridian(poly: Any) -> bool:
    """True if a ring of ``poly`` has an edge spanning more than 180 degrees of longitude."""
    import numpy as np
    import shapely

    rings = [poly.exterior, *poly.interiors] if poly.geom_type == "Polygon" else [
        r for q in shapely.get_parts(poly) for r in (q.exterior, *q.interiors)]
    return any(len(r.coords) > 1 and bool((np.abs(np.diff(np.asarray(r.coords)[:, 0])) > 180).any()) for r in rings)


def _shift_west(geom: Any, *, parts: bool) -> Any:
    """Longitudes < 0 moved by +360: per vertex (a ring crossing 180), or per part (split form)."""
    import numpy as np
    import shapely
    from shapely import affinity

    if parts:
        return shapely.union_all([affinity.translate(q, xoff=360.0) if q.centroid.x < 0 else q
                                  for q in shapely.get_parts(geom)])
    return shapely.transform(geom, lambda xy: np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + 360.0, xy[:, 0]),
                                                               xy[:, 1]]))


def _touches_both_sides(geom: Any) -> bool:
    """Parts touch +180 and -180: the RFC 7946 split form of an area across the antimeridian."""
    import shapely

    parts = shapely.get_parts(geom)
    return len(parts) > 1 and any(q.bounds[2] >= 180.0 for q in parts) and any(q.bounds[0] <= -180.0 for q in parts)


def split_at_antimeridian(geometry: Any) -> Any:
    """An area in unwrapped longitudes (up to 540) in RFC 7946 form: cut at 180, parts in -180..180."""
    import shapely
    from shapely import affinity
    from shapely.geometry import box

    if geometry.bounds[2] <= 180.0:
        return geometry
    east = geometry.intersection(box(-180.0, -90.0, 180.0, 90.0))
    west = affinity.translate(geometry.intersection(box(180.0, -90.0, 540.0, 90.0)), xoff=-360.0)
    return polygonal_part(shapely.union_all([polygonal_part(east), polygonal_part(west)]))


def parse_aoi(obj: dict[str, Any] | str, source: str = "<geojson>", *, max_zones: int = MAX_UTM_ZONES) -> AOI:
    """Validate a GeoJSON object (dict or JSON text) and choose its UTM CRS.

    Invalid rings are repaired with :func:`shapely.make_valid` and the repair (with the area as
    drawn and after) is recorded in :attr:`AOI.notes`; so are an AOI read across the antimeridian
    (see the module docstring) and one that spans two or more zones (also a warning).
    """
    import shapely
    from shapely.ops import unary_union

    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as exc:
            raise AOIError(f"{source}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    polys = _polygons_from(obj, source)
    notes: list[str] = []
    repairs: list[tuple[str, Any, Any]] = []  # (reason, as drawn, repaired): noted once the CRS is known
    fixed = []
    for p in polys:
        if p.is_empty:
            continue
        _check_lonlat(p, source)
        if _crosses_antimeridian(p):
            p = _shift_west(p, parts=False)
            notes.append("AOI ring crosses the antimeridian (an edge spans more than 180 degrees of longitude): "
                         "read as the short way across 180")
        if not p.is_valid:
            why = shapely.is_valid_reason(p)
            drawn, p = p, polygonal_part(shapely.make_valid(p))
            repairs.append((why, drawn, p))
        fixed.append(p)
    geom = unary_union(fixed) if fixed else None
    if geom is None or geom.is_empty or geom.area == 0:
        raise AOIError(f"{source}: AOI is empty (no polygon with a non-zero area)")
    if _touches_both_sides(geom):
        geom = _shift_west(geom, parts=True)
        notes.append("AOI is in the RFC 7946 split form at the antimeridian (parts touching +180 and -180): "
                     "read as one area across 180")
    crs, zones = utm_zone_for(geom, max_zones=max_zones)
    for why, drawn, repaired in repairs:
        notes.append(f"invalid polygon repaired with make_valid ({why}): area {to_crs(drawn, crs).area / 1e6:.4f} km2 "
                     f"as drawn (shoelace) -> {to_crs(repaired, crs).area / 1e6:.4f} km2 after the repair")
    if len(zones) > 1:
        msg = f"AOI spans UTM zones {list(zones)}; projected into the centroid's zone {crs}"
        notes.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    utm = to_crs(geom, crs)
    return AOI(geometry=split_at_antimeridian(geom), crs=crs, utm_geometry=utm, zones=zones, notes=tuple(notes),
               source=source)


def to_crs(geometry_wgs84: Any, crs: str) -> Any:
    """A lon/lat geometry projected into ``crs`` (pyproj; longitudes beyond ±180 are fine)."""
    import shapely
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return shapely.transform(geometry_wgs84, tr.transform, interleaved=False)


def read_aoi(path: str | Path, *, max_zones: int = MAX_UTM_ZONES) -> AOI:
    """Read an AOI GeoJSON file (Polygon, MultiPolygon, Feature or FeatureCollection of polygons)."""
    p = Path(path)
    if not p.is_file():
        raise AOIError(f"AOI file not found: {p}")
    return parse_aoi(p.read_text(), str(p), max_zones=max_zones)


def box_aoi(bounds: tuple[float, float, float, float], crs: str) -> dict[str, Any]:
    """An RFC 7946 GeoJSON Feature (lon/lat) of a box given in ``crs`` units (e.g. UTM metres).

    For making AOIs from a grid or a tile; the projected bounds are kept under ``properties``.
    """
    import numpy as np
    import shapely
    from pyproj import Transformer
    from shapely.geometry import box, mapping

    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    geom = shapely.transform(box(*bounds), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return {"type": "Feature", "properties": {"crs": str(crs), "bounds": list(bounds)}, "geometry": mapping(geom)}


def write_box_aoi(path: str | Path, bounds: tuple[float, float, float, float], crs: str = "EPSG:32616") -> str:
    """Write :func:`box_aoi` to ``path``; returns the path as a string."""
    Path(path).write_text(json.dumps(box_aoi(bounds, crs)))
    return str(path)


__all__ = [
    "ACCEPTED_TYPES",
    "AOI",
    "MAX_UTM_ZONES",
    "box_aoi",
    "parse_aoi",
    "polygonal_part",
    "read_aoi",
    "split_at_antimeridian",
    "to_crs",
    "utm_zone_for",
    "write_box_aoi",
]
