"""Output grid and chip plan, checked with rasterio transforms and shapely as references."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.transform import array_bounds, xy
from shapely.geometry import box
from shapely.ops import unary_union

from lssr_ray.config import GridConfig
from lssr_ray.data.aoi import parse_aoi
from lssr_ray.data.grid import anchor_of, group_chips, make_grid, plan_chips, union_window


@pytest.fixture(scope="module")
def aoi():
    # an irregular AOI near Ames, Iowa (zone 15N), ~6 km x 4 km, L-shaped
    return parse_aoi({"type": "Polygon", "coordinates": [[
        [-93.70, 42.00], [-93.63, 42.00], [-93.63, 42.02], [-93.67, 42.02], [-93.67, 42.04],
        [-93.70, 42.04], [-93.70, 42.00]]]})


def test_pixel_footprint_equals_union_of_3x3_children(aoi):
    cfg = GridConfig(chip_size=32, overlap=8)
    g = make_grid(aoi.utm_geometry.bounds, aoi.crs, config=cfg, anchor=(15.0, 15.0))
    it, ot = g.input_transform, g.output_transform
    assert ot.a == pytest.approx(10.0) and ot.c == it.c and ot.f == it.f
    rng = np.random.default_rng(0)
    for r, c in rng.integers(0, min(g.input_shape), size=(20, 2)):
        # parent footprint from rasterio's array_bounds of a 1x1 window
        parent = box(*array_bounds(1, 1, it @ Affine.translation(c, r)))
        kids = [box(*array_bounds(1, 1, ot @ Affine.translation(3 * c + j, 3 * r + i)))
                for i in range(3) for j in range(3)]
        u = unary_union(kids)
        assert u.equals(parent) and u.area == pytest.approx(900.0)
        # the centre child's centre is the parent's centre
        assert xy(ot, 3 * r + 1, 3 * c + 1) == pytest.approx(xy(it, r, c))


@pytest.mark.parametrize("anchor", [(0.0, 0.0), (15.0, 15.0), (7.5, 22.5)])
def test_origin_snapped_to_source_lattice(aoi, anchor):
    g = make_grid(aoi.utm_geometry.bounds, aoi.crs, anchor=anchor)
    t = g.input_transform
    assert (t.c - anchor[0]) / 30 == pytest.approx(round((t.c - anchor[0]) / 30), abs=1e-9)
    assert (t.f - anchor[1]) / 30 == pytest.approx(round((t.f - anchor[1]) / 30), abs=1e-9)
    # grid covers the AOI and is a whole number of strides
    assert box(*g.bounds).contains(aoi.utm_geometry)
    assert g.input_shape[0] % GridConfig().stride == 0 and g.input_shape[1] % GridConfig().stride == 0


def test_anchor_of_hls_like_transform():
    assert anchor_of(Affine(30, 0, 452475.0, 0, -30, 3408645.0)) == (15.0, 15.0)


def test_chips_cover_aoi_cores_tile_and_align(aoi):
    cfg = GridConfig(chip_size=32, overlap=8)
    plan = plan_chips(aoi, config=cfg, anchor=(15.0, 15.0))
    g, s, k = plan.grid, cfg.stride, cfg.scale
    ids = [c.id for c in plan.chips]
    assert len(set(ids)) == len(ids) and all(i == f"r{c.row:04d}c{c.col:04d}" for i, c in zip(ids, plan.chips))
    cores = []
    for c in plan.chips:
        r0, c0, h, w = c.core_window
        # core = exactly one chunk, on chunk boundaries
        assert h == w == plan.chunk_size == s * k and r0 % plan.chunk_size == 0 and c0 % plan.chunk_size == 0
        # core sits inside the chip at the halo offset, on both grids
        assert (c.output_window[0] + c.core_offset, c.output_window[1] + c.core_offset) == (r0, c0)
        assert c.input_shape == (32, 32) and c.output_shape == (96, 96)
        # chip transforms agree with the grid transforms (rasterio.transform.xy as reference)
        assert xy(c.input_transform, 0, 0, offset="ul") == xy(g.input_transform, c.input_window[0], c.input_window[1], offset="ul")
        assert xy(c.output_transform, 5, 7) == pytest.approx(xy(g.output_transform, c.output_window[0] + 5, c.output_window[1] + 7))
        cores.append(box(*array_bounds(h, w, g.output_transform @ Affine.translation(c0, r0))))
    u = unary_union(cores)
    # cores do not overlap (areas add up) and together cover the AOI
    assert u.area == pytest.approx(sum(b.area for b in cores))
    assert u.buffer(1e-6).contains(aoi.utm_geometry)
    # only chips touching the AOI: the L-shape leaves some lattice cells empty
    rows, cols = plan.lattice_shape
    assert len(plan.chips) < rows * cols
    for c in plan.chips:
        assert box(*array_bounds(s, s, g.input_transform @ Affine.translation(c.col * s, c.row * s))).intersects(aoi.utm_geometry)
    text = plan.summary()
    assert f"{len(plan.chips)} chips" in text and aoi.crs in text and "km2" in text


def test_halo_overlap_between_neighbours(aoi):
    cfg = GridConfig(chip_size=32, overlap=8)
    plan = plan_chips(aoi, config=cfg)
    a, b = plan["r0000c0000"], plan["r0000c0001"]
    # neighbours share exactly `overlap` input columns
    assert a.input_window[1] + a.input_window[3] - b.input_window[1] == cfg.overlap
    with pytest.raises(KeyError, match="no chip"):
        plan["r9999c9999"]


def test_group_chips_and_union_window(aoi):
    plan = plan_chips(aoi, config=GridConfig(chip_size=16, overlap=4))
    groups = group_chips(plan, block=2)
    assert sorted(c.id for g in groups for c in g) == sorted(c.id for c in plan.chips)
    for grp in groups:
        w = union_window([c.input_window for c in grp])
        for c in grp:
            r, cc, h, ww = c.input_window
            assert w[0] <= r and w[1] <= cc and r + h <= w[0] + w[2] and cc + ww <= w[1] + w[3]
        assert w[2] <= 2 * 12 + 4 and w[3] <= 2 * 12 + 4
