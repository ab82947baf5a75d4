"""The ``lssr`` feature source: LSSR (bundled checkpoint) on the Flanders Landsat-8 30 m cells."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def lssr_setup(flanders_dir):
    from lssr_ray.classify.features import load_patch_series, lowres_cells, lssr_sr_for_patch

    sr = lssr_sr_for_patch(flanders_dir)
    nn = load_patch_series(flanders_dir, "nearest30")
    return sr, nn, load_patch_series(flanders_dir, "lssr", sr=sr), lowres_cells(nn)[0]


def test_lssr_source_features_match_the_other_sources(lssr_setup, flanders_dir):
    from lssr_ray.classify.features import load_patch_series, season_features

    _, nn, ls, _ = lssr_setup
    bic = load_patch_series(flanders_dir, "bicubic")
    assert ls.source == "lssr" and ls.reflectance.shape == nn.reflectance.shape == bic.reflectance.shape
    assert ls.reflectance.dtype == np.float32 and np.array_equal(ls.dates, nn.dates)
    assert ls.transform == nn.transform and ls.crs == nn.crs
    f_ls, n_ls = season_features(ls.reflectance, ls.dates, season_start="2017-12")
    f_bi, n_bi = season_features(bic.reflectance, bic.dates, season_start="2017-12")
    assert n_ls == n_bi and f_ls.shape == f_bi.shape == (7 * 12 + 7 * 3, 64, 64)


def test_lssr_is_finite_where_input_is_clear_and_keeps_the_cells(lssr_setup):
    sr, nn, ls, cells = lssr_setup
    assert cells.shape[2:] == (22, 22) and sr.dem is not None and sr.dem.shape == (72, 72)  # padded 24 x 24
    clear = np.isfinite(nn.reflectance).all(axis=1)
    assert clear.mean() > 0.2
    assert np.isfinite(ls.reflectance.transpose(1, 0, 2, 3)[:, clear]).all()
    assert np.isnan(ls.reflectance.transpose(1, 0, 2, 3)[:, ~np.isfinite(nn.reflectance).any(axis=1)]).all()
    # super-resolution must keep the 30 m content: per-pixel difference to the cells is small
    d = np.abs(ls.reflectance - nn.reflectance)[np.broadcast_to(clear[:, None], nn.reflectance.shape)]
    assert np.median(d) < 0.03, np.median(d)
    assert ls.reflectance[np.isfinite(ls.reflectance)].std() > 0.5 * nn.reflectance[np.isfinite(nn.reflectance)].std()


def test_lssr_callable_checks_its_input(lssr_setup):
    from lssr_ray.errors import ConfigError

    sr, _, _, cells = lssr_setup
    with pytest.raises(ConfigError, match="cells must be"):
        sr(cells[:3])
