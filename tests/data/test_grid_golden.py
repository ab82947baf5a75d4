"""The odc-geo chip plan equals, number for number, the plan of the hand-written grid code it
replaced: the plans of CASES were recorded with that code in golden/grid_plans.json
(``python tests/data/test_grid_golden.py > tests/data/golden/grid_plans.json``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from lssr_ray.config import GridConfig
from lssr_ray.data.aoi import parse_aoi
from lssr_ray.data.grid import ChipPlan, plan_chips


def _poly(ring: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [ring]}


#: name -> (AOI GeoJSON, GridConfig fields, anchor)
CASES: dict[str, tuple[dict[str, Any], dict[str, int], tuple[float, float]]] = {
    # L-shaped AOI near Ames, Iowa (zone 15N), on three lattices
    "ames_L_anchor0": (_poly([[-93.70, 42.00], [-93.63, 42.00], [-93.63, 42.02], [-93.67, 42.02],
                              [-93.67, 42.04], [-93.70, 42.04], [-93.70, 42.00]]),
                       {"chip_size": 32, "overlap": 8}, (0.0, 0.0)),
    "ames_L_anchor15": (_poly([[-93.70, 42.00], [-93.63, 42.00], [-93.63, 42.02], [-93.67, 42.02],
                               [-93.67, 42.04], [-93.70, 42.04], [-93.70, 42.00]]),
                        {"chip_size": 16, "overlap": 4}, (15.0, 15.0)),
    "ames_L_anchor_odd": (_poly([[-93.70, 42.00], [-93.63, 42.00], [-93.63, 42.02], [-93.67, 42.02],
                                 [-93.67, 42.04], [-93.70, 42.04], [-93.70, 42.00]]),
                          {"chip_size": 24, "overlap": 0}, (7.5, 22.5)),
    # straddles the 31/32 UTM zone edge at 6 E (far side of the zone: large eastings)
    "zone_edge_6E": (_poly([[5.97, 50.60], [6.03, 50.60], [6.03, 50.63], [5.97, 50.63], [5.97, 50.60]]),
                     {"chip_size": 16, "overlap": 2}, (15.0, 15.0)),
    # southern hemisphere (false northing 10 000 km), a thin diagonal sliver
    "south_sliver": (_poly([[36.80, -3.40], [36.84, -3.36], [36.845, -3.365], [36.805, -3.405], [36.80, -3.40]]),
                     {"chip_size": 16, "overlap": 4}, (0.0, 0.0)),
    # smaller than one 30 m pixel: one chip, default settings
    "tiny_default": (_poly([[-86.9000, 33.5000], [-86.89990, 33.5000], [-86.89990, 33.50008],
                            [-86.9000, 33.50008], [-86.9000, 33.5000]]), {}, (15.0, 15.0)),
}


def plan_record(plan: ChipPlan) -> dict[str, Any]:
    """Every number a chip plan carries, as JSON-ready lists (floats round-trip exactly)."""
    g = plan.grid
    return {
        "crs": g.crs,
        "input_transform": list(g.input_transform)[:6],
        "input_shape": list(g.input_shape),
        "output_transform": list(g.output_transform)[:6],
        "output_shape": list(g.output_shape),
        "bounds": list(g.bounds),
        "lattice_shape": list(plan.lattice_shape),
        "aoi_area_km2": plan.aoi_area_km2,
        "chunk_size": plan.chunk_size,
        "chips": [
            {"id": c.id, "row": c.row, "col": c.col, "input_window": list(c.input_window),
             "input_transform": list(c.input_transform)[:6], "output_window": list(c.output_window),
             "output_transform": list(c.output_transform)[:6], "core_window": list(c.core_window),
             "core_offset": c.core_offset, "bounds": list(c.bounds)}
            for c in plan.chips
        ],
    }


def plan_case(name: str) -> ChipPlan:
    geojson, grid_fields, anchor = CASES[name]
    return plan_chips(parse_aoi(geojson), config=GridConfig(**grid_fields), anchor=anchor)


GOLDEN_PATH = Path(__file__).parent / "golden" / "grid_plans.json"


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN_PATH.read_text())


def test_golden_covers_every_case(golden):
    assert sorted(golden) == sorted([*CASES, "__iowa__"])
    assert sum(len(golden[n]["chips"]) for n in CASES) > 50  # the cases plan many chips


def plan_digest(record: dict[str, Any]) -> str:
    """sha256 of a plan record in canonical JSON (for plans too big to store in full)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def iowa_plan():
    import warnings

    from lssr_ray.config import REPO_ROOT
    from lssr_ray.data.aoi import read_aoi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the state spans two UTM zones
        return plan_chips(read_aoi(REPO_ROOT / "examples" / "iowa.geojson"))


@pytest.mark.slow
def test_iowa_plan_equals_recorded_digest(golden):
    plan = iowa_plan()  # 52 537 chips, default settings
    assert len(plan) == golden["__iowa__"]["chips"]
    assert plan_digest(plan_record(plan)) == golden["__iowa__"]["sha256"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_equals_recorded_plan_exactly(golden, name):
    got, want = plan_record(plan_case(name)), golden[name]
    assert [c["id"] for c in got["chips"]] == [c["id"] for c in want["chips"]]  # ids and order
    assert got == want  # every window, transform and derived number, bit for bit


if __name__ == "__main__":  # re-record: only with code known to be right (it was the old code)
    import sys

    plans = {n: plan_record(plan_case(n)) for n in CASES}
    iowa = iowa_plan()
    plans["__iowa__"] = {"chips": len(iowa), "sha256": plan_digest(plan_record(iowa))}
    json.dump(plans, sys.stdout, indent=0)
