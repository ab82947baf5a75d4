"""Metrics against scikit-image and NumPy on real Flanders values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lssr_ray.data.normalize import REFLECTANCE_RANGE
from lssr_ray.model.metrics import evaluate, ndvi_mse, psnr, spectral_angle, ssim


@pytest.fixture(scope="module")
def pair(real_batch):
    batch, hr = real_batch
    pred = batch["lr"].repeat(3, axis=2).repeat(3, axis=3).astype(np.float64)
    return pred, hr.astype(np.float64)


@pytest.mark.parametrize("group,s", [("rgb", slice(0, 3)), ("ir", slice(3, 6))])
def test_psnr_ssim_match_skimage(pair, group, s):
    pred, hr = pair
    r = REFLECTANCE_RANGE[group][1] - REFLECTANCE_RANGE[group][0]
    got_p = psnr(torch.from_numpy(pred[:, s]), torch.from_numpy(hr[:, s]), data_range=r).numpy()
    got_s = ssim(torch.from_numpy(pred[:, s]), torch.from_numpy(hr[:, s]), data_range=r).numpy()
    for i in range(2):
        ref_p = peak_signal_noise_ratio(hr[i, s], pred[i, s], data_range=r)
        ref_s = structural_similarity(hr[i, s], pred[i, s], data_range=r, channel_axis=0)
        assert got_p[i] == pytest.approx(ref_p, rel=1e-9)
        assert got_s[i] == pytest.approx(ref_s, abs=1e-9)
    assert 15 < got_p.mean() < 50 and 0.1 < got_s.mean() < 1


def test_ndvi_mse_and_sam_match_numpy(pair):
    pred, hr = pair
    nd = lambda r: (r[:, 3] - r[:, 0]) / (r[:, 3] + r[:, 0] + 1e-6)
    np.testing.assert_allclose(ndvi_mse(torch.from_numpy(pred), torch.from_numpy(hr)).numpy(),
                               ((nd(pred) - nd(hr)) ** 2).mean(axis=(1, 2)), rtol=1e-10)
    cos = (pred * hr).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(hr, axis=1))
    np.testing.assert_allclose(spectral_angle(torch.from_numpy(pred), torch.from_numpy(hr)).numpy(),
                               np.degrees(np.arccos(np.clip(cos, -1, 1))).mean(axis=(1, 2)), rtol=1e-8)


def test_metrics_skip_nodata(pair):
    pred, hr = pair
    holed = hr.copy()
    holed[:, :, :10] = np.nan
    m = evaluate(torch.from_numpy(pred), torch.from_numpy(holed))
    assert all(np.isfinite(v) for v in m.values())
    r = REFLECTANCE_RANGE["rgb"][1]
    ref = np.mean([peak_signal_noise_ratio(hr[i, :3, 10:], pred[i, :3, 10:], data_range=r) for i in range(2)])
    assert m["psnr_rgb"] == pytest.approx(ref, rel=1e-9)
    # SSIM over windows fully inside the valid part equals SSIM of the valid crop
    ref_s = np.mean([structural_similarity(hr[i, :3, 10:], pred[i, :3, 10:], data_range=r, channel_axis=0) for i in range(2)])
    assert m["ssim_rgb"] == pytest.approx(ref_s, abs=1e-9)
