"""Base loading (local + loopback S3), the committed stand-in base, and the fixed normalisations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lssr_ray.config import SMALL_BASE_DIR
from lssr_ray.data.normalize import (
    image_to_reflectance,
    normalize_dem,
    normalize_sar,
    reflectance_to_image,
)
from lssr_ray.errors import MissingDataError
from lssr_ray.model.base import base_fingerprint, load_base


def test_small_base_layout_and_size():
    for sub in ("unet/config.json", "vae/config.json", "scheduler/scheduler_config.json",
                "model_index.json", "empty_prompt_embeds.safetensors", "README.md"):
        assert (SMALL_BASE_DIR / sub).is_file(), sub
    size = sum(f.stat().st_size for f in SMALL_BASE_DIR.rglob("*") if f.is_file())
    assert size < 8 * 2**20


def test_small_base_is_pretrained_on_real_imagery(base, real_batch):
    """The stand-in VAE reconstructs a real S2 chip far better than the same architecture untrained."""
    from diffusers import AutoencoderKL

    _, hr = real_batch
    x = torch.from_numpy(reflectance_to_image(hr)[:, :3])
    assert base.vae.config.block_out_channels and len(base.vae.config.block_out_channels) == 4  # x8
    torch.manual_seed(0)
    untrained = AutoencoderKL.from_config(base.vae.config).eval()
    with torch.no_grad():
        z = base.vae.encode(x).latent_dist.mean
        assert z.shape == (2, 4, 6, 6)
        err = (base.vae.decode(z).sample - x).abs().mean().item()
        err0 = (untrained.decode(untrained.encode(x).latent_dist.mean).sample - x).abs().mean().item()
    assert err < 0.2 and err < err0 / 3
    assert base.prompt_embeds.shape == (1, 77, base.unet.config.cross_attention_dim)
    assert not any(p.requires_grad for p in base.unet.parameters())
    assert base.scheduler.alphas_cumprod.shape == (1000,)


def test_load_base_from_s3_copies_to_cache(s3_env, tmp_path):
    from lssr_ray.data import s3server

    s3server.upload_folder(SMALL_BASE_DIR, "lssr-test", endpoint_url=s3_env.endpoint_url, prefix="bases/small-sd-base")
    b = load_base("s3://lssr-test/bases/small-sd-base", cache_dir=tmp_path)
    assert b.fingerprint == base_fingerprint(SMALL_BASE_DIR)
    assert str(tmp_path) in b.path and b.uri.startswith("s3://")
    with pytest.raises(MissingDataError, match="no diffusers SD folder"):
        load_base("s3://lssr-test/bases/nothing-here", cache_dir=tmp_path)


def test_missing_local_base_names_the_fix(tmp_path):
    with pytest.raises(MissingDataError, match="unet/, vae/, scheduler/"):
        load_base(tmp_path / "nope")
    (tmp_path / "unet").mkdir()
    with pytest.raises(MissingDataError, match="lacks vae/"):
        load_base(tmp_path)


def test_dem_normalisation_is_robust_to_absolute_height():
    rng = np.random.default_rng(0)
    relief = rng.normal(0, 20, (1, 1, 48, 48)).astype(np.float32)
    iowa_low, iowa_high = relief + 160.0, relief + 500.0  # Iowa spans ~150-510 m
    a, b = normalize_dem(iowa_low), normalize_dem(iowa_high)
    np.testing.assert_allclose(a[:, 0], b[:, 0], atol=1e-5)  # same local relief
    assert b[:, 1].mean() > a[:, 1].mean() + 0.3  # absolute height still seen (no 300 m clamp)
    holed = iowa_low.copy()
    holed[0, 0, :5] = np.nan
    out = normalize_dem(holed)
    assert np.isfinite(out).all() and (out[0, :, :5] == 0).all()


def test_sar_uses_fixed_db_range_not_tile_max():
    db = np.array([-20.0, -10.0, 0.0], np.float32).reshape(1, 1, 1, 3).repeat(2, axis=1)
    hot = db.copy()
    hot[..., -1] = 3.0  # a brighter tile maximum must not change the other pixels
    np.testing.assert_array_equal(normalize_sar(db)[..., :2], normalize_sar(hot)[..., :2])
    # VV -25..5 dB -> -1..1
    np.testing.assert_allclose(normalize_sar(db)[0, 0, 0], [2 * 5 / 30 - 1, 2 * 15 / 30 - 1, 2 * 25 / 30 - 1], rtol=1e-6)


def test_reflectance_scaling_round_trip(real_batch):
    _, hr = real_batch
    img = reflectance_to_image(hr, clip=False)
    np.testing.assert_allclose(image_to_reflectance(img), hr, atol=1e-6)
    assert img[:, :3].max() <= 1.0  # real S2 RGB sits inside the documented 0..0.4 range
