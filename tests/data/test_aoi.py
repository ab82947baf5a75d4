"""AOI parsing and the UTM zone rule, checked against pyproj/shapely references."""

from __future__ import annotations

import json
import warnings

import pytest
from pyproj import Transformer

from lssr_ray.data.aoi import MAX_UTM_ZONES, parse_aoi, read_aoi
from lssr_ray.errors import AOIError


def square(lon0, lat0, d=0.01):
    return {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon0 + d, lat0], [lon0 + d, lat0 + d],
                                                [lon0, lat0 + d], [lon0, lat0]]]}


def test_polygon_feature_collection_and_utm_zone(tmp_path):
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": square(3.02, 50.813, 0.006)},
        {"type": "Feature", "properties": {}, "geometry": {"type": "MultiPolygon",
                                                             "coordinates": [square(3.04, 50.82, 0.003)["coordinates"]]}},
    ]}
    p = tmp_path / "a.geojson"
    p.write_text(json.dumps(fc))
    aoi = read_aoi(p)
    assert aoi.crs == "EPSG:32631" and aoi.zones == (31,) and aoi.notes == ()
    assert aoi.name == "a"
    # the UTM geometry is the lon/lat one through pyproj, and its area matches
    t = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True)
    xs, ys = t.transform([3.02, 3.026, 3.026, 3.02], [50.813, 50.813, 50.819, 50.819])
    assert aoi.utm_geometry.bounds[0] == pytest.approx(min(xs), abs=1e-6)
    assert aoi.utm_geometry.bounds[1] == pytest.approx(min(ys), abs=1e-6)
    # 0.006 deg lon x 0.006 deg lat at 50.8 N ~ 422 m x 667 m, plus a small square
    assert 0.28 < aoi.area_km2 < 0.40


def test_southern_hemisphere_zone():
    aoi = parse_aoi(square(36.5, -6.2))  # Tanzania, zone 37S
    assert aoi.crs == "EPSG:32737"


def test_two_zones_projected_into_centroid_zone_with_note():
    # 5.5..7.5 E straddles the 6 E boundary of zones 31/32; the centroid (6.5 E) is in 32
    geom = {"type": "Polygon", "coordinates": [[[5.5, 50.0], [7.5, 50.0], [7.5, 50.2], [5.5, 50.2], [5.5, 50.0]]]}
    with pytest.warns(UserWarning, match="spans UTM zones"):
        aoi = parse_aoi(geom)
    assert aoi.crs == "EPSG:32632" and aoi.zones == (31, 32)
    assert any("31, 32" in n for n in aoi.notes)


def test_too_many_zones_rejected():
    geom = {"type": "Polygon", "coordinates": [[[0.5, 40.0], [20.0, 40.0], [20.0, 40.5], [0.5, 40.5], [0.5, 40.0]]]}
    with pytest.raises(AOIError, match=f"at most {MAX_UTM_ZONES}"):
        parse_aoi(geom)


def test_bowtie_repaired_with_make_valid():
    bowtie = {"type": "Polygon", "coordinates": [[[3.0, 50.0], [3.01, 50.01], [3.01, 50.0], [3.0, 50.01], [3.0, 50.0]]]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aoi = parse_aoi(bowtie)
    assert aoi.geometry.is_valid and aoi.geometry.area > 0
    assert any("make_valid" in n and "Self-intersection" in n for n in aoi.notes)


@pytest.mark.parametrize(
    "obj, match",
    [
        ('{"type": "Polygon", "coordinates": [[[3, 50], [3.1, 50]', "malformed JSON"),
        ({"type": "Point", "coordinates": [3, 50]}, "Polygon, MultiPolygon, Feature, FeatureCollection"),
        ({"type": "LineString", "coordinates": [[3, 50], [4, 51]]}, "not an area"),
        ({"type": "FeatureCollection", "features": []}, "no features"),
        ({"type": "Feature", "geometry": None, "properties": {}}, "null geometry"),
        ({"type": "Polygon", "coordinates": []}, "empty"),
        ({"type": "Polygon", "coordinates": [[[3, 50], [3.1, 50], [3, 50]]]}, "malformed Polygon.*>= 4"),
        ({"type": "Polygon", "coordinates": [[[3, 50], [3.1, 50], [3.1, 50.1], [3, 50.1]]]}, "not closed"),
        (square(500000.0, 5600000.0, 100.0), "out of range"),
        ({"type": "Polygon", "coordinates": [[[3, 50], [3.1, 50], [3.2, 50], [3, 50]]]}, "empty"),
        ({"coordinates": []}, "no 'type'"),
    ],
)
def test_bad_aoi_messages(obj, match):
    with pytest.raises(AOIError, match=match):
        parse_aoi(obj if isinstance(obj, str) else json.dumps(obj))


def test_missing_file(tmp_path):
    with pytest.raises(AOIError, match="not found"):
        read_aoi(tmp_path / "nope.geojson")


def test_box_aoi_round_trips_projected_bounds():
    from lssr_ray.data.aoi import box_aoi, parse_aoi

    bounds = (456015.0, 3396015.0, 458985.0, 3398985.0)
    aoi = parse_aoi(box_aoi(bounds, "EPSG:32616"))
    assert aoi.crs.to_epsg() == 32616 if hasattr(aoi.crs, "to_epsg") else str(aoi.crs).endswith("32616")
    got = aoi.utm_geometry.bounds
    assert max(abs(g - b) for g, b in zip(got, bounds)) < 1.0  # metres, after lon/lat and back
