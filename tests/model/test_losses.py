"""Losses against NumPy references on real Flanders values (L8-derived prediction vs S2 target)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lssr_ray.data.normalize import image_to_reflectance, reflectance_to_image
from lssr_ray.errors import MissingDataError
from lssr_ray.model.losses import (
    FFT_WEIGHT,
    NDVI_EPS,
    NDVI_MIN_SUM,
    NDVI_WEIGHT,
    LSSRLoss,
    fourier_amplitude_l1,
    ndvi,
    ndvi_l1,
)


@pytest.fixture(scope="module")
def pair(real_batch):
    batch, hr = real_batch
    pred_refl = batch["lr"].repeat(3, axis=2).repeat(3, axis=3).astype(np.float64)  # 30 m blocks
    target = hr.astype(np.float64).copy()
    target[0, :, 5:9, 20:30] = np.nan  # a cloud hole in the target
    return pred_refl, target


def _np_ndvi(r):
    return (r[:, 3] - r[:, 0]) / (r[:, 3] + r[:, 0] + NDVI_EPS)


def _np_fft(p, t, m, log):
    a = np.abs(np.fft.fft2(p * m, norm="ortho"))
    b = np.abs(np.fft.fft2(t * m, norm="ortho"))
    if log:
        a, b = np.log1p(a), np.log1p(b)
    return np.abs(a - b).mean()


def _np_guarded_ndvi_l1(pred, target, valid, min_sum):
    keep = valid & (target[:, 3] + target[:, 0] >= min_sum)
    p = (pred[:, 3] - pred[:, 0]) / np.maximum(pred[:, 3] + pred[:, 0], min_sum)
    return np.abs(p - _np_ndvi(target))[keep].mean()


@pytest.mark.parametrize("log", [False, True])
def test_fft_amplitude_l1_matches_numpy(pair, log):
    pred_refl, target = pair
    valid = np.isfinite(target).all(1)
    p = reflectance_to_image(pred_refl)
    t = reflectance_to_image(np.nan_to_num(target))
    m = valid[:, None].astype(np.float64)
    for s in (slice(0, 3), slice(3, 6)):
        ref = _np_fft(p[:, s], t[:, s], m, log)
        got = fourier_amplitude_l1(torch.from_numpy(p[:, s]), torch.from_numpy(t[:, s]), torch.from_numpy(valid), log=log)
        assert got.item() == pytest.approx(ref, rel=1e-10)
        assert ref > 1e-3


def test_ndvi_and_ndvi_l1_match_numpy_with_eps_and_mask(pair):
    pred_refl, target = pair
    np.testing.assert_allclose(ndvi(torch.from_numpy(pred_refl)).numpy(), _np_ndvi(pred_refl), rtol=1e-12)
    zero = np.zeros((1, 6, 2, 2))
    assert ndvi(torch.from_numpy(zero)).abs().max() == 0  # eps keeps 0/0 finite
    valid = np.isfinite(target).all(1)
    d = np.abs(_np_ndvi(pred_refl) - _np_ndvi(np.nan_to_num(target)))
    ref = d[valid].mean()
    got = ndvi_l1(torch.from_numpy(pred_refl), torch.from_numpy(np.nan_to_num(target)), torch.from_numpy(valid),
                  min_sum=0.0)
    assert got.item() == pytest.approx(ref, rel=1e-10)
    # real S2 vegetation NDVI over this crop patch is high and the L8 prediction is close
    assert 0.3 < np.nanmean(_np_ndvi(target)) < 0.95 and 0 < ref < 0.2


def test_combined_loss_matches_numpy_and_ignores_nan_targets(pair):
    pred_refl, target = pair
    pred_img = reflectance_to_image(pred_refl)
    valid = np.isfinite(target).all(1)
    t_img = reflectance_to_image(np.nan_to_num(target))
    mse = ((pred_img - t_img) ** 2)[np.broadcast_to(valid[:, None], pred_img.shape)].mean()
    m = valid[:, None]
    fft = np.mean([np.abs(np.abs(np.fft.fft2(pred_img[:, s] * m, norm="ortho"))
                          - np.abs(np.fft.fft2(t_img[:, s] * m, norm="ortho"))).mean()
                   for s in (slice(0, 3), slice(3, 6))])
    nd = _np_guarded_ndvi_l1(image_to_reflectance(pred_img), np.nan_to_num(target), valid, NDVI_MIN_SUM)
    fft = np.mean([_np_fft(pred_img[:, s], t_img[:, s], m, True) for s in (slice(0, 3), slice(3, 6))])
    total, terms = LSSRLoss()(torch.from_numpy(pred_img), torch.from_numpy(target))
    assert terms["mse"] == pytest.approx(mse, rel=1e-9)
    assert terms["fft"] == pytest.approx(fft, rel=1e-9)
    assert terms["ndvi"] == pytest.approx(nd, rel=1e-9)
    assert total.item() == pytest.approx(mse + FFT_WEIGHT * fft + NDVI_WEIGHT * nd, rel=1e-9)
    # MSE dominates the default total (the old recipe was ~97 % NDVI)
    assert mse / total.item() > 0.6
    assert torch.isfinite(total)


def test_ndvi_guard_leaves_out_dark_targets_and_stays_finite(pair):
    """Target pixels with NIR + red below NDVI_MIN_SUM (water, shadow) are left out; a prediction
    with NIR + red at 0 or negative gives a finite loss and gradient, matching NumPy."""
    pred_refl, target = pair
    target = np.nan_to_num(target).copy()
    valid = np.ones(target.shape[:1] + target.shape[2:], bool)
    target[0, 0, :4, :4] = target[0, 3, :4, :4] = 0.004  # dark water: NDVI 0 / 0.008
    pred = pred_refl.copy()
    pred[1, 0, :3, :3], pred[1, 3, :3, :3] = -0.01, 0.005  # NIR + red < 0: unguarded NDVI = -3
    pred[1, 0, 5, 5] = pred[1, 3, 5, 5] = 0.0  # 0 / 0
    pt = torch.from_numpy(pred).requires_grad_(True)
    got = ndvi_l1(pt, torch.from_numpy(target), torch.from_numpy(valid))
    got.backward()
    assert torch.isfinite(pt.grad).all()
    ref = _np_guarded_ndvi_l1(pred, target, valid, NDVI_MIN_SUM)
    assert got.item() == pytest.approx(ref, rel=1e-10)
    unguarded = ndvi_l1(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(valid), min_sum=0.0)
    assert unguarded.item() > got.item() + 1e-3  # the guard removed real outliers


def test_perceptual_term_only_from_a_local_file(pair, tmp_path):
    class L1(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a - b).abs().mean()

    path = tmp_path / "l1.pt"
    torch.jit.script(L1()).save(str(path))
    pred_refl, target = pair
    pred_img = torch.from_numpy(reflectance_to_image(pred_refl))
    _, base_terms = LSSRLoss()(pred_img, torch.from_numpy(target))
    total, terms = LSSRLoss(perceptual_weight=0.5, perceptual_model=path)(pred_img, torch.from_numpy(target))
    valid = np.isfinite(target).all(1)[:, None]
    t_img = reflectance_to_image(np.nan_to_num(target))
    ref = np.mean([np.abs(pred_img.numpy()[:, s] * valid - t_img[:, s] * valid).mean() for s in (slice(0, 3), slice(3, 6))])
    assert terms["perceptual"] == pytest.approx(ref, rel=1e-9)
    assert total.item() == pytest.approx(base_terms["total"] + 0.5 * ref, rel=1e-9)
    with pytest.raises(MissingDataError, match="TorchScript"):
        LSSRLoss(perceptual_weight=1.0)
