"""Losses against NumPy references on real Flanders values (L8-derived prediction vs S2 target)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lssr_ray.errors import MissingDataError
from lssr_ray.model.losses import NDVI_EPS, LSSRLoss, fourier_amplitude_l1, ndvi, ndvi_l1
from lssr_ray.model.normalize import image_to_reflectance, reflectance_to_image


@pytest.fixture(scope="module")
def pair(real_batch):
    batch, hr = real_batch
    pred_refl = batch["lr"].repeat(3, axis=2).repeat(3, axis=3).astype(np.float64)  # 30 m blocks
    target = hr.astype(np.float64).copy()
    target[0, :, 5:9, 20:30] = np.nan  # a cloud hole in the target
    return pred_refl, target


def _np_ndvi(r):
    return (r[:, 3] - r[:, 0]) / (r[:, 3] + r[:, 0] + NDVI_EPS)


def test_fft_amplitude_l1_matches_numpy(pair):
    pred_refl, target = pair
    valid = np.isfinite(target).all(1)
    p = reflectance_to_image(pred_refl)
    t = reflectance_to_image(np.nan_to_num(target))
    m = valid[:, None].astype(np.float64)
    for s in (slice(0, 3), slice(3, 6)):
        ref = np.abs(np.abs(np.fft.fft2(p[:, s] * m, norm="ortho")) - np.abs(np.fft.fft2(t[:, s] * m, norm="ortho"))).mean()
        got = fourier_amplitude_l1(torch.from_numpy(p[:, s]), torch.from_numpy(t[:, s]), torch.from_numpy(valid))
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
    got = ndvi_l1(torch.from_numpy(pred_refl), torch.from_numpy(np.nan_to_num(target)), torch.from_numpy(valid))
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
    nd = np.abs(_np_ndvi(image_to_reflectance(pred_img)) - _np_ndvi(np.nan_to_num(target)))[valid].mean()
    total, terms = LSSRLoss()(torch.from_numpy(pred_img), torch.from_numpy(target))
    assert terms["mse"] == pytest.approx(mse, rel=1e-9)
    assert terms["fft"] == pytest.approx(fft, rel=1e-9)
    assert terms["ndvi"] == pytest.approx(nd, rel=1e-9)
    assert total.item() == pytest.approx(mse + fft + 20 * nd, rel=1e-9)
    assert torch.isfinite(total)


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
