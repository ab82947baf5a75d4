"""Trust-layer functions on hand-made cases with known answers (NumPy / SciPy references)."""

from __future__ import annotations

import numpy as np
import pytest

from lssr_ray.data.psf import degrade
from lssr_ray.errors import ConfigError
from lssr_ray.model.trust import consistency, correctness_fractions, rank_correlation, uncertainty


def _field(seed=0, c=6, n=24):
    rng = np.random.default_rng(seed)
    return (0.1 + 0.2 * rng.random((c, n, n))).astype(np.float32)


def test_consistency_zero_for_the_truth_and_offset_for_a_biased_output():
    hr = _field()
    lr, _, sigma = degrade(hr, 3)
    assert np.abs(consistency(hr, lr, sigma)).max() < 1e-6
    # a constant bias of the 10 m output shows up unchanged at 30 m (the PSF preserves a constant)
    got = consistency((hr + 0.03)[None], lr[None], sigma)
    assert got.shape == (1, 6, 8, 8)
    np.testing.assert_allclose(got, 0.03, atol=1e-6)
    # a sharper PSF on the same output gives a different (non-zero) residual: the psf is used
    assert np.abs(consistency(hr, lr, 0.2)).max() > 1e-3


def test_consistency_rejects_mismatched_grids():
    with pytest.raises(ConfigError, match="x 3"):
        consistency(np.zeros((6, 24, 24)), np.zeros((6, 9, 9)))


def _batch(b=2, h=4):
    rng = np.random.default_rng(1)
    return {"lr": rng.random((b, 6, h, h)).astype(np.float32), "present": np.ones((b, 3), np.float32),
            "sar": rng.random((b, 2, 3 * h, 3 * h)).astype(np.float32), "month": np.full(b, 5)}


def _upsample(batch):
    return np.kron(batch["lr"], np.ones((1, 1, 3, 3), np.float32))


def test_uncertainty_zero_for_an_equivariant_predictor():
    """Nearest upsampling commutes with flips and rotations: the aligned variants agree exactly."""
    spread, outs = uncertainty(_upsample, _batch(), ("identity", "flip_x", "flip_y", "rot90", "rot270"),
                               return_outputs=True)
    assert spread.shape == (2, 6, 12, 12)
    assert spread.max() < 1e-7
    np.testing.assert_array_equal(outs["identity"], _upsample(_batch()))


def test_uncertainty_measures_a_position_bias_and_aux_dropout():
    b = _batch()
    ramp = np.arange(12, dtype=np.float32)  # a predictor that adds a ramp along x: not flip-equivariant

    def biased(batch):
        return _upsample(batch) + ramp + 0.5 * batch["present"][:, 2, None, None, None]

    spread = uncertainty(biased, b, ("identity", "flip_x"))
    np.testing.assert_allclose(spread, np.broadcast_to(np.abs(ramp - ramp[::-1]) / 2, spread.shape), atol=1e-5)
    spread = uncertainty(biased, b, ("identity", "no_sar"))
    np.testing.assert_allclose(spread, 0.25, atol=1e-6)  # std of {x + 0.5, x}
    assert b["present"].min() == 1.0  # the caller's batch is untouched


def test_uncertainty_rejects_unknown_or_single_variants():
    with pytest.raises(ConfigError, match="unknown variants"):
        uncertainty(_upsample, _batch(), ("identity", "transpose"))
    with pytest.raises(ConfigError, match="at least 2"):
        uncertainty(_upsample, _batch(), ("identity",))


def test_rank_correlation_matches_scipy_and_ignores_nan():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(2)
    u = rng.random(200)
    e = u ** 3 + 0.05 * rng.random(200)
    u_nan = u.copy()
    u_nan[:10] = np.nan
    assert rank_correlation(u_nan, e) == pytest.approx(spearmanr(u[10:], e[10:]).statistic, abs=1e-12)
    assert rank_correlation(u, u ** 2) == pytest.approx(1.0)
    assert rank_correlation(u, -u) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(np.ones(50), e[:50]))


def test_correctness_fractions_on_hand_made_cases():
    rng = np.random.default_rng(3)
    hr = rng.random((3, 16, 16))
    lr_up = hr + rng.choice([-0.1, 0.1], size=hr.shape)  # every pixel 0.1 from the truth
    kw = {"threshold_quantile": None}
    assert correctness_fractions(lr_up, lr_up, hr, **kw)["omission"] == 1.0  # no change: omission
    assert correctness_fractions(hr, lr_up, hr, **kw)["improvement"] == 1.0  # the truth: improvement
    far = hr + 1.0  # far from both the truth and the input: hallucination
    assert correctness_fractions(far, lr_up, hr, **kw)["hallucination"] == 1.0
    half = lr_up.copy()
    half[:, :8] = hr[:, :8]  # top half exact, bottom half unchanged
    got = correctness_fractions(half, lr_up, hr, **kw)
    assert (got["improvement"], got["omission"], got["hallucination"], got["n_pixels"]) == (0.5, 0.5, 0.0, 256)


def test_correctness_mask_keeps_pixels_above_the_reference_quantile():
    """opensr-test's auto75 mask: a pixel counts when d_ref, d_im or d_om exceeds the 75 % quantile
    of d_ref; with NaN the pixel is dropped."""
    hr = np.zeros((1, 4, 4))
    lr_up = np.arange(1, 17, dtype=np.float64).reshape(1, 4, 4) / 100  # d_ref 0.01 .. 0.16
    lr_up[0, 0, 0] = np.nan
    got = correctness_fractions(lr_up, lr_up, hr)
    ok = np.arange(2, 17) / 100
    assert got["n_pixels"] == int((ok > np.quantile(ok, 0.75)).sum()) == 4
    assert got["omission"] == 1.0
