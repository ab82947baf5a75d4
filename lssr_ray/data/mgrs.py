"""The Sentinel-2 / HLS tiling grid: MGRS tile id <-> UTM pixel grid (pure, no I/O).

A tile id like ``15TVG`` is UTM zone ``15``, latitude band ``T`` (8 degrees, C..X) and the 100 km
MGRS square ``VG`` (column letter: easting; row letter: northing modulo 2000 km, "AA" lettering of
WGS 84). A Sentinel-2 / HLS tile is that square's north-west corner snapped outwards onto a 60 m
lattice (so its 10, 20, 30 and 60 m grids all align), extending 109.8 km east and south:

- upper-left x = the square's west edge rounded *down* to a multiple of 60 m
  (400000 -> 399960, 500000 -> 499980, 600000 -> 600000);
- upper-left y = the square's north edge rounded *up* to a multiple of 60 m, counted from the
  equator (false northing 0): 4600000 -> 4600020, 5100000 -> 5100000, and in the south
  -1700000 -> -1699980 (8300020 with the 10 000 km false northing of UTM south).

Checked against recorded headers of real Sentinel-2 and HLS files (tests/data/test_mgrs.py lists
them). HLS v2.0 files use the *northern* UTM zone (EPSG 326zz) for every tile, like Landsat, so
southern tiles have negative northings; :func:`tile_grid` follows that convention.
"""

from __future__ import annotations

import functools
import re

from lssr_ray.errors import ConfigError

COLUMN_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
"""Column letters of the three 8-column sets (zones 1, 4, ... use A-H; 2, 5, ... J-R; 3, 6, ... S-Z)."""
ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
"""Row letters, repeating every 2000 km of northing; even zones start at F ("AA" scheme)."""
LATITUDE_BANDS = "CDEFGHJKLMNPQRSTUVWX"
"""8-degree latitude bands from 80 S (C) to 84 N (X, 12 degrees); N and later are north."""
TILE_SIZE_M = 109_800
"""Sentinel-2 / HLS tile edge in metres (100 km MGRS square plus 9.8 km overlap)."""
LATTICE_M = 60
"""Tile corners sit on multiples of 60 m (the coarsest Sentinel-2 band)."""
HLS_RESOLUTION_M = 30
HLS_TILE_PIXELS = TILE_SIZE_M // HLS_RESOLUTION_M
"""3660: pixels per edge of a 30 m HLS tile."""
_SOUTH_FALSE_NORTHING = 10_000_000

_TILE_RE = re.compile(r"^T?(?P<zone>\d{1,2})(?P<band>[C-HJ-NP-X])(?P<col>[A-HJ-NP-Z])(?P<row>[A-HJ-NP-V])$")


def parse_tile(tile: str) -> tuple[int, str, str, str]:
    """``"15TVG"`` (or ``"T15TVG"``) -> (zone 15, band ``"T"``, column ``"V"``, row ``"G"``)."""
    m = _TILE_RE.match(str(tile).strip().upper())
    if not m or not 1 <= int(m["zone"]) <= 60:
        raise ConfigError(f"not an MGRS tile id: {tile!r}; expected like '15TVG' (zone 1-60, band C-X, two letters)")
    zone, col = int(m["zone"]), m["col"]
    allowed = COLUMN_LETTERS[((zone - 1) % 3) * 8:((zone - 1) % 3) * 8 + 8]
    if col not in allowed:
        raise ConfigError(f"MGRS tile {tile!r}: column letter {col!r} does not occur in zone {zone} (valid: {allowed})")
    return zone, m["band"], col, m["row"]


@functools.lru_cache(maxsize=1200)  # 60 zones x 20 bands; a pyproj transformer costs ~1 ms
def _band_centre_northing(zone: int, band: str) -> float:
    """Northing (false northing 0) of the latitude band's centre on the zone's central meridian."""
    from pyproj import Transformer

    i = LATITUDE_BANDS.index(band)
    south = -80 + 8 * i
    centre = 78.0 if band == "X" else south + 4.0
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{32600 + zone}", always_xy=True)
    return float(to_utm.transform(zone * 6 - 183, centre)[1])


def square_origin(tile: str) -> tuple[int, int]:
    """South-west corner (easting, northing) of the tile's 100 km MGRS square, in metres of the
    northern UTM zone (false northing 0: negative south of the equator)."""
    zone, band, col, row = parse_tile(tile)
    set_idx = (zone - 1) % 3
    easting = (COLUMN_LETTERS.index(col) - set_idx * 8 + 1) * 100_000
    row_offset = 5 if zone % 2 == 0 else 0
    northing_mod = ((ROW_LETTERS.index(row) - row_offset) % 20) * 100_000
    centre = _band_centre_northing(zone, band)
    # the row letter repeats every 2000 km; the latitude band (888 km tall) picks the cycle
    cycle = round((centre - 50_000 - northing_mod) / 2_000_000)
    return easting, northing_mod + cycle * 2_000_000


def tile_upper_left(tile: str) -> tuple[int, int]:
    """Upper-left corner (x, y) of the Sentinel-2 / HLS tile in the northern UTM zone (metres)."""
    easting, northing = square_origin(tile)
    x = (easting // LATTICE_M) * LATTICE_M
    y = -((-(northing + 100_000)) // LATTICE_M) * LATTICE_M  # ceiling on the 60 m lattice
    return x, y


def tile_grid(tile: str, resolution: int = HLS_RESOLUTION_M
              ) -> tuple[int, tuple[float, float, float, float, float, float], tuple[int, int]]:
    """(EPSG, affine (a, b, c, d, e, f), (rows, cols)) of an HLS tile at ``resolution`` metres.

    EPSG is the northern UTM zone (326zz) for every tile, as in HLS v2.0 files; a southern tile
    has negative y. ``tile_grid("15TVG") == (32615, (30, 0, 699960, 0, -30, 4700040), (3660, 3660))``
    would be read as: zone 15 north, 3660 x 3660 pixels of 30 m from (699960, 4700040).
    """
    if resolution <= 0 or TILE_SIZE_M % resolution:
        raise ConfigError(f"resolution must divide the {TILE_SIZE_M} m tile edge, got {resolution}")
    zone = parse_tile(tile)[0]
    x, y = tile_upper_left(tile)
    n = TILE_SIZE_M // resolution
    r = float(resolution)
    return 32600 + zone, (r, 0.0, float(x), 0.0, -r, float(y)), (n, n)


def square_letters(zone: int, easting: float, northing: float) -> str:
    """The two MGRS square letters of a point (UTM metres; northing of either hemisphere)."""
    col = int(easting // 100_000)
    row = int((northing % 2_000_000) // 100_000)
    set_idx = (zone - 1) % 3
    row_offset = 5 if zone % 2 == 0 else 0
    return COLUMN_LETTERS[set_idx * 8 + col - 1] + ROW_LETTERS[(row + row_offset) % 20]


def mgrs_tiles(bounds: tuple[float, float, float, float], epsg: int) -> list[str]:
    """Sentinel-2/HLS MGRS tile ids (``"31UDS"``) whose 109.8 km tile fully contains ``bounds``.

    ``bounds`` are (xmin, ymin, xmax, ymax) in the UTM CRS ``epsg`` (326zz or 327zz). Tiles
    overlap by 9.8 km, so a small area can lie in up to four tiles.
    """
    from pyproj import CRS, Transformer

    if not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        raise ConfigError(f"mgrs_tiles needs a WGS 84 UTM EPSG (326zz/327zz), got {epsg}")
    zone = epsg % 100
    shift = _SOUTH_FALSE_NORTHING if epsg > 32700 else 0  # to the false-northing-0 frame
    xmin, ymin, xmax, ymax = bounds
    ymin, ymax = ymin - shift, ymax - shift
    to_ll = Transformer.from_crs(CRS.from_epsg(32600 + zone), "EPSG:4326", always_xy=True)
    _, lat = to_ll.transform((xmin + xmax) / 2, (ymin + ymax) / 2)
    band = LATITUDE_BANDS[max(0, min(int((lat + 80) // 8), 19))]
    out = []
    # the 60 m snapping moves a corner up to 40 m past a 100 km line: look one square further
    c0, r0 = int(xmin // 100_000), int(ymax // 100_000)
    for c in range(c0 - 1, c0 + 2):
        for r in range(r0 - 1, r0 + 2):
            if not 1 <= c <= 8:
                continue
            name = f"{zone:02d}{band}{square_letters(zone, c * 100_000 + 1, r * 100_000 + 1)}"
            tx0, ty1 = tile_upper_left(name)
            if tx0 <= xmin and xmax <= tx0 + TILE_SIZE_M and ty1 - TILE_SIZE_M <= ymin and ymax <= ty1:
                out.append(name)
    return sorted(out)


__all__ = [
    "HLS_RESOLUTION_M",
    "HLS_TILE_PIXELS",
    "LATITUDE_BANDS",
    "TILE_SIZE_M",
    "mgrs_tiles",
    "parse_tile",
    "square_letters",
    "square_origin",
    "tile_grid",
    "tile_upper_left",
]
