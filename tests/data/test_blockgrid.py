"""The one 30 m <-> 10 m block lattice (phase, coarse grid, blocks) on the real Flanders L8 layer
in the three forms its users pass it, and on synthetic shifts."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from lssr_ray.classify.features import load_patch_series
from lssr_ray.data import psf
from lssr_ray.data import worldcereal as wc
from lssr_ray.data.blockgrid import (
    SCALE,
    block_phase,
    coarse_grid,
    expand_blocks,
    to_blocks,
    whole_cells,
)
from lssr_ray.data.samples import sample_dir
from lssr_ray.errors import ConfigError

FLANDERS = sample_dir("worldcereal_flanders_31UDS_2018")


@pytest.fixture(scope="module")
def patch(flanders_patch):
    return flanders_patch


@pytest.fixture(scope="module")
def stack(patch, raw_nc):
    return np.stack([raw_nc(patch.files["l8"], b) for b in ("B02", "B03", "B04", "B05", "B06", "B07", "pixel_qa")])


def test_block_phase_of_the_landsat_layer(patch, stack):
    bp = block_phase(stack)
    assert (bp.row, bp.col, bp.score) == (2, 1, 1.0) and bp.runner_up < 0.5
    # every other phase is clearly worse (independent count of constant 3x3 blocks)
    for oy in range(3):
        for ox in range(3):
            blk = stack[:, :, oy:oy + 60, ox:ox + 60].reshape(7, -1, 20, 3, 20, 3)
            frac = (blk == blk[:, :, :, :1, :, :1]).all(axis=(0, 1, 3, 5)).mean()
            assert (frac == 1.0) == ((oy, ox) == (2, 1)) and ((oy, ox) == (2, 1) or frac < 0.7)
    t30, shape30, lead = coarse_grid(patch.l8.rio.transform(), (64, 64), bp.phase)
    assert t30 == Affine(30, 0, 501340, 0, -30, 5629690) and shape30 == (22, 22) and lead == (1, 2)
    coarse = np.nanmax(to_blocks(stack[2].astype(float), lead, shape30), axis=(-3, -1))
    np.testing.assert_array_equal(expand_blocks(coarse, lead, (64, 64)), stack[2])
    assert whole_cells((64, 64), bp.phase) == (20, 21)


def test_same_phase_for_every_user_of_the_flanders_layer(patch):
    # pairs converter: the red band as int16 DN (T, y, x)
    dn = wc.l8_reflectance_int16(patch, psf.L8_BANDS["red"]).values
    assert block_phase(dn).phase == (2, 1) and block_phase(dn).score == 1.0
    # crop-type features: cloud-masked float reflectance (T, 6, y, x) with NaN on clouds
    refl = load_patch_series(FLANDERS, "nearest30").reflectance
    assert np.isnan(refl).mean() > 0.3  # many cloudy pixels: their blocks must be left out
    bp = block_phase(refl)
    assert bp.phase == (2, 1) and bp.score == 1.0 and bp.runner_up < 0.05
    assert bp.require("the Landsat layer") is bp


@pytest.mark.parametrize("shift", [(0, 0), (1, 2), (2, 1), (0, 1)])
def test_block_phase_on_a_synthetic_shift(shift):
    coarse = np.random.default_rng(0).integers(0, 1000, (5, 12, 12))
    fine = np.repeat(np.repeat(coarse, SCALE, -2), SCALE, -1)[:, shift[0]:, shift[1]:]
    want = ((SCALE - shift[0]) % SCALE, (SCALE - shift[1]) % SCALE)
    assert block_phase(fine).phase == want
    # NaN holes aligned with the blocks (cloud masks are copied too) change nothing
    holes = fine.astype(np.float32)
    holes[:, :9, :] = np.nan
    assert block_phase(holes).phase == want and block_phase(holes).score == 1.0
    t, shape, lead = coarse_grid(Affine(10, 0, 1000, 0, -10, 2000), fine.shape[-2:], want)
    assert lead == shift and t == Affine(30, 0, 1000 - 10 * shift[1], 0, -30, 2000 + 10 * shift[0])
    np.testing.assert_array_equal(np.nanmax(to_blocks(fine, lead, shape), axis=(-3, -1))[:, :12, :12], coarse)


def test_a_layer_without_blocks_is_refused():
    noise = np.random.default_rng(1).normal(size=(4, 30, 30)).astype(np.float32)
    with pytest.raises(ConfigError, match="not a nearest-neighbour copy"):
        block_phase(noise).require("the Landsat layer")
    flat = np.ones((30, 30))  # every phase fits: ambiguous
    assert block_phase(flat).runner_up == 1.0
    with pytest.raises(ConfigError, match="next best"):
        block_phase(flat).require("a flat layer")
    assert np.isnan(block_phase(np.full((6, 6), np.nan)).score)
