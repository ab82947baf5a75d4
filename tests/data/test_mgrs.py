"""The MGRS tile id -> HLS pixel grid rule, checked against headers of real files.

Each row below is a tile id with the upper-left corner recorded from a real product header in
public code or docs (gdalinfo output or the ESA tiling-grid KML), so a wrong corner rule (e.g. "west
edge minus 40 m", or the 60 m rounding done in the southern false-northing frame) fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from lssr_ray.data import hls, mgrs
from lssr_ray.errors import ConfigError

# tile, EPSG as recorded, upper-left (x, y) as recorded, source
RECORDED_ULS = [
    # gdalinfo of S2B_MSIL2A_20260423T094029_N0512_R036_T34TDR (GDAL's gdalinfo tutorial)
    ("34TDR", 32634, (399960, 5100000), "S2 L2A T34TDR, 10 m"),
    # gdalinfo of T33VWE_20230622T100601_B04_10m.jp2 (S2A L2A, zone 33N)
    ("33VWE", 32633, (499980, 6500040), "S2 L2A T33VWE, 10 m"),
    # gdalinfo of sentinel-cogs .../22/L/HH/2023/7/S2A_22LHH_20230703_0_L2A/B04.tif (UTM 22S)
    ("22LHH", 32722, (799980, 8300020), "S2 L2A COG 22LHH, 10 m"),
    # ESA S2 tiling grid KML (S2A_OPER_GIP_TILPAR), tile 01CCV: utmWkt corner (300000, 2000020), EPSG 32701
    ("01CCV", 32701, (300000, 2000020), "ESA S2 tiling grid"),
    # an HLS v2.0 L30 item of LP DAAC (HLS.L30.T20JKP.2026004T142004.v2.0): proj:epsg 32620,
    # proj:transform [30, 0, 199980, 0, -30, -3099960]: HLS keeps the northern zone in the south
    ("20JKP", 32620, (199980, -3099960), "HLS L30 T20JKP, 30 m"),
]


def _as_recorded(epsg: int, x: float, y: float) -> tuple[float, float]:
    """Our (northern-zone) corner in the recorded file's CRS (UTM south adds 10 000 km)."""
    return (x, y + 10_000_000) if epsg > 32700 else (x, y)


@pytest.mark.parametrize(("tile", "epsg", "corner", "source"), RECORDED_ULS)
def test_tile_grid_matches_recorded_headers(tile, epsg, corner, source):
    got_epsg, transform, shape = hls.tile_grid(tile)
    assert got_epsg == 32600 + epsg % 100, source
    assert shape == (3660, 3660)
    a, b, c, d, e, f = transform
    assert (a, b, d, e) == (30.0, 0.0, 0.0, -30.0)
    assert _as_recorded(epsg, c, f) == corner, source


def test_recorded_eastings_of_other_columns():
    # gdalinfo of S2B ..._T30VVK_... (origin_x 399960) and S2C ..._T26WME_... (pixel centre 399965)
    assert hls.tile_grid("30VVK")[1][2] == 399960.0
    assert hls.tile_grid("26WME")[1][2] + 5 == 399965.0
    # all eight columns: floor of the 100 km edge on the 60 m lattice
    xs = sorted({mgrs.tile_upper_left(f"15T{c}G")[0] for c in "STUVWXYZ"})
    assert xs == [99960, 199980, 300000, 399960, 499980, 600000, 699960, 799980]


def test_tile_grid_accepts_the_item_id_form_and_rejects_bad_ids():
    assert hls.tile_grid("T15TVG") == hls.tile_grid("15TVG")
    assert hls.tile_grid(hls.parse_name("HLS.L30.T15TVG.2021180T165311.v2.0").tile)[0] == 32615
    for bad in ("15TIG", "61TVG", "15TAG", "15T", "XX"):  # I not a letter; zone 61; A not in zone 15's set
        with pytest.raises(ConfigError, match="MGRS"):
            hls.tile_grid(bad)


def test_tiles_overlap_and_repeat_rows_every_2000_km():
    # neighbours in a column overlap by 9.8 km (109.8 km tiles, 100 km steps)
    (_, t_g, _), (_, t_h, _) = hls.tile_grid("15TVG"), hls.tile_grid("15TVH")
    assert round(t_h[5] - t_g[5]) in (99_960, 100_020, 100_040, 99_980)
    # same square letters, other latitude bands: the band picks the 2000 km cycle
    assert mgrs.square_origin("33VWE")[1] - mgrs.square_origin("33NWE")[1] in (6_000_000, 4_000_000, 2_000_000)
    assert mgrs.square_origin("33NWE")[1] < 1_000_000


def test_mgrs_tiles_uses_the_same_corners_as_tile_grid():
    # 34TER starts at x 499980 (recorded 33VWE/36N tiles of column E): a box 10 m east of that
    # corner is inside it, one 10 m west is not (the old "west edge minus 40 m" rule said inside)
    assert "34TER" in hls.mgrs_tiles((499985, 5_050_000, 499995, 5_050_100), 32634)
    assert "34TER" not in hls.mgrs_tiles((499965, 5_050_000, 499975, 5_050_100), 32634)
    assert "34TDR" in hls.mgrs_tiles((499965, 5_050_000, 499975, 5_050_100), 32634)
    # southern EPSG input (327zz) finds the tile whose corner is recorded above
    assert "22LHH" in hls.mgrs_tiles((800_100, 8_250_000, 800_200, 8_250_100), 32722)


def test_every_point_lies_in_the_tile_its_mgrs_reference_names():
    # forward MGRS (zone from longitude, band from latitude, square letters from UTM) against the
    # inverse in tile_grid: a wrong 2000 km row cycle or column set puts the tile far away
    from pyproj import Transformer

    rng = np.random.default_rng(13)
    lats, lons = rng.uniform(-79.5, 83.5, 1000), rng.uniform(-179.9, 179.9, 1000)
    for lat, lon in zip(lats, lons):
        zone = int((lon + 180) // 6) + 1
        x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{32600 + zone}", always_xy=True).transform(lon, lat)
        band = mgrs.LATITUDE_BANDS[min(int((lat + 80) // 8), 19)]
        name = f"{zone:02d}{band}{mgrs.square_letters(zone, x, y)}"
        _, t, _ = hls.tile_grid(name)
        assert t[2] <= x <= t[2] + 109_800 and t[5] - 109_800 <= y <= t[5], (lat, lon, name)
