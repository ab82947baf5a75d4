"""Landsat-like PSF and degradation: kernel normalisation, constant/impulse behaviour, MTF."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lssr_ray.data import psf
from lssr_ray.errors import ConfigError


@pytest.mark.parametrize("sigma", [0.7, 1.2, 2.5])
def test_kernel_sums_to_one_and_is_symmetric(sigma):
    k = psf.gaussian_kernel(sigma)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])


def test_constant_image_stays_constant():
    img = np.full((2, 30, 27), 0.237, np.float32)
    out = psf.blur(img, 1.3)
    np.testing.assert_allclose(out, 0.237, rtol=1e-6)
    lr, ok, _ = psf.degrade(np.full((6, 30, 27), 0.1, np.float32))
    assert lr.shape == (6, 10, 9) and ok.all()
    np.testing.assert_allclose(lr, 0.1, rtol=1e-6)


@pytest.mark.parametrize("sigma", [0.9, 1.21, 2.0])
def test_impulse_spreads_with_stated_sigma(sigma):
    img = np.zeros((41, 41))
    img[20, 20] = 1.0
    out = psf.blur(img, sigma).astype(np.float64)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    yy, xx = np.mgrid[:41, :41] - 20
    assert np.sqrt((out * xx**2).sum()) == pytest.approx(sigma, rel=0.01)
    assert np.sqrt((out * yy**2).sum()) == pytest.approx(sigma, rel=0.01)
    # independent implementation: scipy's own Gaussian filter
    ref = ndimage.gaussian_filter(img, sigma, mode="mirror", truncate=4.0)
    np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("mtf", [0.2, 0.3, 0.5])
def test_sigma_gives_requested_response_at_30m_nyquist(mtf):
    sigma = psf.sigma_for_mtf(mtf, 3)
    # numerical transfer of the discrete kernel row x the 3-pixel mean at f = 1/6 cycle/pixel
    g = psf.gaussian_kernel(sigma, truncate=6.0).sum(axis=0)
    x = np.arange(g.size) - g.size // 2
    f = 1 / 6
    resp = abs((g * np.exp(-2j * np.pi * f * x)).sum()) * abs(np.exp(-2j * np.pi * f * np.arange(-1, 2)).mean())
    assert resp == pytest.approx(mtf, abs=2e-3)
    # a 30 m-period sine at Nyquist-ish of the fine grid: check the default is ~12 m
    assert psf.sigma_for_mtf() == pytest.approx(1.207, abs=0.01)


def test_sigma_for_mtf_rejects_impossible_values():
    with pytest.raises(ConfigError, match="mtf_at_nyquist"):
        psf.sigma_for_mtf(0.7, 3)
    with pytest.raises(ConfigError, match="sigma"):
        psf.gaussian_kernel(-1.0)


def test_degrade_block_mean_and_nan_propagation():
    rng = np.random.default_rng(0)
    hr = rng.uniform(0.0, 0.5, (6, 12, 12)).astype(np.float32)
    lr, ok, s = psf.degrade(hr, sigma=0.0)  # no blur: pure 3x3 area average
    ref = hr.reshape(6, 4, 3, 4, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(lr, ref, rtol=1e-6)
    hr[2, 4, 7] = np.nan  # invalid 10 m pixel -> its 30 m cell (1, 2) invalid in every band
    lr, ok, s = psf.degrade(hr)
    assert s == pytest.approx(psf.sigma_for_mtf())
    assert not ok[1, 2] and ok.sum() == 15
    assert np.isnan(lr[:, 1, 2]).all() and np.isfinite(lr[:, ok]).all()


def test_bandpass_adjustment_hls_coefficients():
    refl = np.full((6, 2, 2), 0.2, np.float32)
    out = psf.adjust_bandpass(refl, "hls_s2a")
    # red: 0.9765 * 0.2 + 0.0009 ; blue: 0.9778 * 0.2 - 0.004 (HLS MSI->OLI table, S2A)
    assert out[0, 0, 0] == pytest.approx(0.9765 * 0.2 + 0.0009, abs=1e-7)
    assert out[2, 0, 0] == pytest.approx(0.9778 * 0.2 - 0.004, abs=1e-7)
    np.testing.assert_array_equal(psf.adjust_bandpass(refl, "none"), refl)
    with pytest.raises(ConfigError, match="valid"):
        psf.adjust_bandpass(refl, "landsat9")


@pytest.mark.parametrize("sigma", [0.0, 1.207, 2.5])
def test_separable_blur_equals_the_2d_convolution_with_nans(sigma):
    """blur runs two 1-D passes; the reference is the 2-D kernel convolved in one pass, with the
    same NaN-aware normalisation (num / den over valid pixels)."""
    rng = np.random.default_rng(3)
    img = rng.uniform(-0.05, 1.2, (2, 37, 41))
    img[0, 5:9, 7:30] = np.nan
    img[1, 20, 20] = np.nan
    k = psf.gaussian_kernel(sigma)[None]
    valid = np.isfinite(img)
    num = ndimage.convolve(np.where(valid, img, 0.0), k, mode="mirror")
    den = ndimage.convolve(valid.astype(np.float64), k, mode="mirror")
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.where(den > 1e-6, num / den, np.nan).astype(np.float32)
    out = psf.blur(img, sigma)
    assert out.dtype == np.float32 and np.array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7, equal_nan=True)
