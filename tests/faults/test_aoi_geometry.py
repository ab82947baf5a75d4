"""Geometry told, not guessed (issue 10 item 4): antimeridian AOIs in both forms, and every repair
of an AOI printed by the job and stored in the store's provenance."""

from __future__ import annotations

import json
import sys

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:AOI spans UTM zones:UserWarning")

from lssr_ray.config import REPO_ROOT
from lssr_ray.data.aoi import parse_aoi

# 0.7 x 0.5 degrees over Fiji's Vanua Levu / Taveuni, crossing 180
RING = [[179.6, -17.4], [-179.7, -17.4], [-179.7, -16.9], [179.6, -16.9], [179.6, -17.4]]
SPLIT = [[[[179.6, -17.4], [180.0, -17.4], [180.0, -16.9], [179.6, -16.9], [179.6, -17.4]]],
         [[[-180.0, -17.4], [-179.7, -17.4], [-179.7, -16.9], [-180.0, -16.9], [-180.0, -17.4]]]]


def _geodesic_km2(lon0: float, lat0: float, lon1: float, lat1: float) -> float:
    """Area of the lon/lat box on the WGS 84 ellipsoid (pyproj.Geod), independent of any UTM zone."""
    from pyproj import Geod

    lons, lats = [lon0, lon1, lon1, lon0], [lat0, lat0, lat1, lat1]
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)
    return abs(area) / 1e6


@pytest.mark.parametrize("form", ["ring crossing 180", "RFC 7946 split MultiPolygon"])
def test_antimeridian_aoi_is_one_area_in_the_right_zone(form):
    from lssr_ray.data.grid import plan_chips

    obj = {"type": "Polygon", "coordinates": [RING]} if form.startswith("ring") else \
        {"type": "MultiPolygon", "coordinates": SPLIT}
    aoi = parse_aoi(obj)
    assert aoi.crs == "EPSG:32760"  # centroid at 179.95 E, 17.15 S: zone 60 south
    assert aoi.zones == (1, 60)  # the geometry touches exactly these, not 60 zones from a bbox
    want = _geodesic_km2(179.6, -17.4, 180.3, -16.9)
    assert aoi.area_km2 == pytest.approx(want, rel=0.01)
    # the lon/lat geometry is the RFC 7946 form (for catalog searches), the UTM one a single area
    minx, _, maxx, _ = aoi.geometry.bounds
    assert minx == pytest.approx(-180.0) and maxx == pytest.approx(180.0) and aoi.geometry.geom_type == "MultiPolygon"
    assert aoi.utm_geometry.geom_type == "Polygon"
    assert any("antimeridian" in n and "read as" in n for n in aoi.notes), aoi.notes
    plan = plan_chips(aoi)
    assert plan.grid.area_km2 < 1.2 * want, plan.summary()  # one compact grid, not one around the globe


def test_both_antimeridian_forms_give_the_same_area():
    ring = parse_aoi({"type": "Polygon", "coordinates": [RING]})
    split = parse_aoi({"type": "MultiPolygon", "coordinates": SPLIT})
    assert ring.crs == split.crs
    # the split form has extra vertices on 180, so its straight UTM edges differ by a sliver only
    assert ring.utm_geometry.symmetric_difference(split.utm_geometry).area < 1e-3 * ring.utm_geometry.area


def test_wide_aoi_is_still_refused_with_advice_that_works():
    from lssr_ray.errors import AOIError

    wide = [[170.0, -17.4], [-165.0, -17.4], [-165.0, -16.9], [170.0, -16.9], [170.0, -17.4]]  # 25 degrees across 180
    with pytest.raises(AOIError, match=r"spans 5 UTM zones \[1, 2, 3, 59, 60\].*split it into smaller AOIs"):
        parse_aoi({"type": "Polygon", "coordinates": [wide]})


# a bow tie over the archive's Flanders tile (lon 3.0190..3.0284, lat 50.8130..50.8189)
BOWTIE = [[3.0200, 50.8140], [3.0270, 50.8180], [3.0270, 50.8140], [3.0200, 50.8180], [3.0200, 50.8140]]


def test_self_intersecting_aoi_note_is_printed_and_stored(tmp_path, capsys):
    import zarr

    aoi = tmp_path / "bowtie.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [BOWTIE]}))
    parsed = parse_aoi(json.loads(aoi.read_text()))
    note = [n for n in parsed.notes if n.startswith("invalid polygon repaired with make_valid (Self-intersection")]
    assert note and f"-> {parsed.area_km2:.4f} km2 after the repair" in note[0], parsed.notes

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from _jobs import load_job

    job = load_job("map_region")
    out = tmp_path / "bowtie.zarr"
    rc = job.main(["--aoi", str(aoi), "--out", str(out), "--engine", "bicubic", "--dates", "clearest",
                   "--no-progress", "--no-quicklook", "--classifier", "none"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"NOTE: {note[0]}" in err
    attrs = zarr.open_group(str(out), mode="r").attrs
    assert note[0] in attrs["aoi_notes"] and attrs["completed"] is True
