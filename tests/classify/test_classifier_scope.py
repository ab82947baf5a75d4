"""Classifiers know where they apply: region, season and classes recorded and checked (issue 14)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from affine import Affine

from lssr_ray.classify.scope import (
    ClassifierScope,
    check_scope,
    grid_bbox_wgs84,
    read_scope,
    season_start,
)
from lssr_ray.config import CROP_CLASSIFIER_DIR
from lssr_ray.errors import ConfigError

# The demo store's grid (make demo: examples/flanders_31UDS.geojson) and a 1.7 km grid in Iowa
FLANDERS_GRID = SimpleNamespace(crs="EPSG:32631", output_transform=Affine(10, 0, 501370, 0, -10, 5629660),
                                output_shape=(168, 168))
IOWA_GRID = SimpleNamespace(crs="EPSG:32615", output_transform=Affine(10, 0, 450000, 0, -10, 4650000),
                            output_shape=(168, 168))
SUMMER_2018 = np.array(["2018-06-13", "2018-07-17", "2018-08-14"], "datetime64[D]")


def _bbox(grid):
    return grid_bbox_wgs84(grid.crs, grid.output_transform, grid.output_shape)


def test_season_is_anchored_on_the_classifiers_first_month():
    july = np.array(["2018-07-01", "2018-07-23"], "datetime64[D]")
    # a November-to-October model: July is slot m08 of the season that began in 2017-11
    assert season_start(july, 12, start_month=11) == "2017-11"
    assert season_start(np.array(["2018-11-02"], "datetime64[D]"), 12, start_month=11) == "2018-11"
    assert season_start(np.array(["2018-10-31"], "datetime64[D]"), 12, start_month=11) == "2017-11"
    # the old rule (no scope): the 12 months ending with the last date -> July lands in m11
    assert season_start(july, 12) == "2017-08"


def test_grid_bbox_is_the_wgs84_footprint():
    w, s, e, n = _bbox(IOWA_GRID)
    # 450 000 E / 4 650 000 N in UTM 15N is about 93.6 W, 42.0 N (central Iowa); 1.68 km wide
    assert -93.62 < w < e < -93.58 and 41.98 < s < n < 42.01
    assert (e - w) * 111.32 * np.cos(np.radians(42)) == pytest.approx(1.68, rel=0.02)
    mask = np.zeros((168, 168), bool)
    mask[:10, :10] = True  # the 100 m top-left corner only
    got = grid_bbox_wgs84(IOWA_GRID.crs, IOWA_GRID.output_transform, (168, 168), mask)
    from pyproj import Transformer  # reference: the window's corners, transformed one by one

    lon, lat = Transformer.from_crs("EPSG:32615", "EPSG:4326", always_xy=True).transform(
        [450000, 450100, 450000, 450100], [4650000, 4650000, 4649900, 4649900])
    assert got == pytest.approx((min(lon), min(lat), max(lon), max(lat)), abs=1e-7)
    assert got[0] == pytest.approx(w, abs=1e-6) and got[2] < e and got[1] > s
    with pytest.raises(ConfigError, match="empty"):
        grid_bbox_wgs84(IOWA_GRID.crs, IOWA_GRID.output_transform, (168, 168), np.zeros((168, 168), bool))


def test_bundled_flanders_classifier_records_its_scope():
    scope = read_scope(CROP_CLASSIFIER_DIR)
    assert scope is not None and scope.scheme == "WorldCereal crop type"
    classes = json.loads((CROP_CLASSIFIER_DIR / "classes.json").read_text())
    assert list(scope.codes) == classes["codes"] and list(scope.names) == classes["names"]
    w, s, e, n = scope.bbox  # the Flanders patch (31UDS), near Diksmuide
    assert 2.9 < w < e < 3.1 and 50.7 < s < n < 50.9
    assert (scope.start_month, scope.n_months) == (11, 12) and 7 in scope.observed_months
    assert 1 not in scope.observed_months  # the demo store has no January date


def test_bundled_classifier_is_refused_in_iowa_and_recorded_when_explicit():
    scope = read_scope(CROP_CLASSIFIER_DIR)
    with pytest.raises(ConfigError) as err:
        check_scope(scope, name="models/croptype-lgbm", bbox=_bbox(IOWA_GRID), times=SUMMER_2018, n_months=12,
                    explicit=False)
    msg = str(err.value)
    assert "outside the region" in msg and "lon -93.6" in msg and "WorldCereal crop type, 5 classes" in msg
    assert "--classifier models/croptype-lgbm" in msg and "--labels CDL.tif" in msg and "\n" not in msg
    got = check_scope(scope, name="models/croptype-lgbm", bbox=_bbox(IOWA_GRID), times=SUMMER_2018, n_months=12,
                      explicit=True)
    assert len(got.warnings) == 1 and "outside its scope" in got.warnings[0] and "region" in got.warnings[0]
    assert got.season_start == "2017-11"


def test_bundled_classifier_applies_to_the_demo_region_and_season():
    scope = read_scope(CROP_CLASSIFIER_DIR)
    got = check_scope(scope, name="m", bbox=_bbox(FLANDERS_GRID), times=SUMMER_2018, n_months=12, explicit=False)
    assert got.warnings == [] and got.season_start == "2017-11"
    # 60 km east of the patch is beyond the 50 km margin
    far = Affine(10, 0, 501370 + 60_000, 0, -10, 5629660)
    with pytest.raises(ConfigError, match="outside the region"):
        check_scope(scope, name="m", bbox=grid_bbox_wgs84("EPSG:32631", far, (168, 168)), times=SUMMER_2018,
                    n_months=12, explicit=False)


def test_out_of_season_store_is_refused():
    scope = read_scope(CROP_CLASSIFIER_DIR)
    january = np.array(["2019-01-05", "2019-01-21"], "datetime64[D]")
    with pytest.raises(ConfigError, match=r"season from 2018-11 \(Jan\) falls in a month"):
        check_scope(scope, name="m", bbox=_bbox(FLANDERS_GRID), times=january, n_months=12, explicit=False)
    # dates of an earlier season are left out and said so
    two_seasons = np.array(["2017-07-10", "2018-07-17"], "datetime64[D]")
    got = check_scope(scope, name="m", bbox=_bbox(FLANDERS_GRID), times=two_seasons, n_months=12, explicit=False)
    assert got.warnings == [("1 of 2 store dates lie outside the classifier's season 2017-11 + 12 months and are "
                             "not used for crop_type")]


def test_model_without_scope_is_applied_with_a_warning():
    got = check_scope(None, name="old", bbox=_bbox(IOWA_GRID), times=SUMMER_2018, n_months=12, explicit=False)
    assert got.season_start == "2017-09" and "unchecked" in got.warnings[0]


def test_scope_record_round_trips_and_bad_records_are_one_line_errors():
    scope = read_scope(CROP_CLASSIFIER_DIR)
    assert ClassifierScope.from_dict(json.loads(json.dumps(scope.to_dict()))) == scope
    with pytest.raises(ConfigError, match="malformed"):
        ClassifierScope.from_dict({"region": {"bbox": [0, 0, 1, 1]}})
    with pytest.raises(ConfigError, match="not \\(west, south, east, north\\)"):
        ClassifierScope(bbox=(5, 0, 1, 1), start_month=1, n_months=12, observed_months=(1,), scheme="x")


def test_map_run_checks_the_classifier_before_any_work():
    """map_region's first step (resolve_classifier with the plan's grid and dates)."""
    from lssr_ray.mapping.classify_stage import resolve_classifier

    with pytest.raises(ConfigError, match="outside the region of classifier models/croptype-lgbm"):
        resolve_classifier(None, grid=IOWA_GRID, times=SUMMER_2018)
    assert resolve_classifier(str(CROP_CLASSIFIER_DIR), grid=IOWA_GRID, times=SUMMER_2018) == (
        str(CROP_CLASSIFIER_DIR), None)
    assert resolve_classifier(None, grid=FLANDERS_GRID, times=SUMMER_2018) == (str(CROP_CLASSIFIER_DIR), None)


def test_map_job_over_alabama_with_the_bundled_classifier_stops_before_any_work(tmp_path, capsys):
    """``jobs/map_region.py --aoi <Alabama>`` with the default classifier: exit 2, one line that
    says why and what to do, no Ray started, nothing written."""
    import importlib.util

    import ray

    from lssr_ray.config import REPO_ROOT
    from lssr_ray.data.aoi import write_box_aoi

    aoi = write_box_aoi(tmp_path / "al4.geojson", (456015, 3396015, 458985, 3398985), "EPSG:32616")
    spec = importlib.util.spec_from_file_location("map_region", REPO_ROOT / "jobs" / "map_region.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    out = tmp_path / "al4.zarr"
    assert job.main(["--aoi", aoi, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "outside the region of classifier models/croptype-lgbm" in line and "lon -87." in line
    assert "--classifier none" in line
    assert not ray.is_initialized() and not out.exists()
