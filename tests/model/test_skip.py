"""The pixel skip (output = bicubic + Dec(z' - g eps) - Dec(z)), zero-initialised heads, the fused
SAR attention and the colour fix."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _zero_init import randomize_zero_inits

from lssr_ray.config import SMALL_BASE_DIR
from lssr_ray.data.batch import preprocess
from lssr_ray.errors import ConfigError
from lssr_ray.model.base import BaseModel, load_base
from lssr_ray.model.colorfix import adain, apply_color_fix, wavelet_fix, wavelet_low
from lssr_ray.model.lssr import LSSRConfig, LSSRModel


def _bicubic(inputs) -> torch.Tensor:
    lr = torch.as_tensor(inputs["lr"])
    return F.interpolate(lr, scale_factor=3, mode="bicubic", align_corners=False).clamp(-1, 1)


def _random_base(latent_channels: int, down_blocks: int) -> BaseModel:
    """Seeded random diffusers VAE + UNet (no pretraining at all): a VAE whose round trip is
    nowhere near the input, to show that its error cancels in the skip."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(3)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * down_blocks, up_block_types=("UpDecoderBlock2D",) * down_blocks,
        block_out_channels=(8,) * down_blocks, layers_per_block=1, latent_channels=latent_channels,
        norm_num_groups=4, mid_block_add_attention=False,
    )
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=latent_channels, out_channels=latent_channels, block_out_channels=(16, 16),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=4,
        norm_num_groups=4,
    )
    for m in (vae, unet):
        m.requires_grad_(False).eval()
    return BaseModel(unet=unet, vae=vae, scheduler=None, prompt_embeds=torch.randn(1, 5, 16),
                     path="", uri="random", fingerprint="random")


@pytest.mark.parametrize("which", ["small", "random-x8-4ch", "random-x2-8ch"])
def test_untrained_model_is_exactly_bicubic(which, real_batch):
    """Identity at init, on the shipped small base and on random VAEs (SD-like x8 / 4 channels,
    and the v3 layout x2 / 8 channels) whose reconstruction is far from the input."""
    batch, _ = real_batch
    base = {"small": lambda: load_base(SMALL_BASE_DIR), "random-x8-4ch": lambda: _random_base(4, 4),
            "random-x2-8ch": lambda: _random_base(8, 2)}[which]()
    model = LSSRModel(base).eval()
    inputs = preprocess(batch)
    up = _bicubic(inputs)
    with torch.no_grad():
        out = model.forward_batch(inputs)
        x = torch.cat([up[:, :3], up[:, 3:]], 0)
        z = model.vae.encode(x).latent_dist.mean
        vae_err = (model.vae.decode(z).sample - x).abs().max()
    assert (out - up).abs().max() < 1e-5
    assert vae_err > 0.05  # the VAE alone is far from the input; the skip cancels it


def test_zero_initialised_heads_and_gate(base):
    model = LSSRModel(base)
    assert torch.equal(model.detail_gate, torch.zeros(2)) and model.detail_gate.requires_grad
    for p in (model.fusion.out.weight, model.fusion.out.bias, model.sar_head.out_proj.weight, model.sar_head.out_proj.bias):
        assert torch.count_nonzero(p) == 0
    lora_b = [p for n, p in model.unet.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)
    # the rest is random (not an all-zero network)
    assert torch.count_nonzero(model.fusion.q_in.weight) > 0 and torch.count_nonzero(model.sar_head.opt_in[0].weight) > 0


def test_gate_moves_the_output_off_bicubic(real_batch):
    """g alone (adapters still zero) adds the base UNet's step: the skip path is wired to eps."""
    batch, _ = real_batch
    model = LSSRModel(load_base(SMALL_BASE_DIR)).eval()
    inputs = preprocess(batch)
    with torch.no_grad():
        model.detail_gate.fill_(0.5)
        out = model.forward_batch(inputs)
    assert (out - _bicubic(inputs)).abs().max() > 1e-3


def _old_window_attention(blk, opt, sar):
    """The SAR block as it was (explicit softmax(q k^T / sqrt(d)) v), for the equality check."""
    m, t, c = opt.shape
    hd = c // blk.heads
    s = blk.norm_kv(sar)
    q = blk.q(blk.norm_q(opt)).reshape(m, t, blk.heads, hd).transpose(1, 2)
    k, v = blk.kv(s).reshape(m, t, 2, blk.heads, hd).permute(2, 0, 3, 1, 4)
    a = torch.softmax((q @ k.transpose(-2, -1)) * hd**-0.5, dim=-1)
    fused = blk.proj((a @ v).transpose(1, 2).reshape(m, t, c))
    x = opt + blk.gamma * blk.gate(s.mean(dim=1, keepdim=True)) * fused
    return x + blk.mlp(blk.norm_mlp(x))


def test_sar_fused_attention_equals_explicit_softmax():
    from lssr_ray.model.sar import SARHead

    torch.manual_seed(0)
    head = SARHead(dim=16, num_heads=4, window=4).eval()
    blk = head.blocks[0]
    opt, sar = torch.randn(6, 16, 16), torch.randn(6, 16, 16)  # 6 windows of 4 x 4 tokens
    with torch.no_grad():
        got, ref = blk(opt, sar), _old_window_attention(blk, opt, sar)
    assert (got - ref).abs().max() < 1e-5
    assert (got - opt).abs().max() > 1e-2  # the attention did something


def _np_blur(x: np.ndarray, levels: int) -> np.ndarray:
    k = np.array([1.0, 2.0, 1.0]) / 4
    for i in range(levels):
        d = 2**i
        p = np.pad(x, ((0, 0), (0, 0), (d, d), (d, d)), mode="edge")
        h, w = x.shape[-2:]
        x = sum(k[a] * k[b] * p[..., a * d : a * d + h, b * d : b * d + w] for a in range(3) for b in range(3))
    return x


def test_colour_fixes_match_numpy_and_remove_a_colour_cast():
    rng = np.random.default_rng(0)
    ref = rng.uniform(-0.8, 0.3, (2, 3, 48, 48))
    detail = rng.normal(0, 0.05, ref.shape)
    cast = np.array([0.1, -0.05, 0.08])[None, :, None, None]  # a colour shift of the output
    out = ref + detail + cast
    t = lambda a: torch.from_numpy(a)
    np.testing.assert_allclose(wavelet_low(t(out), 5).numpy(), _np_blur(out, 5), atol=1e-12)
    fixed = wavelet_fix(t(out), t(ref)).numpy()
    np.testing.assert_allclose(fixed, out - _np_blur(out, 5) + _np_blur(ref, 5), atol=1e-12)
    # the cast is low-frequency: gone; the pixel detail stays
    assert abs((fixed - ref).mean(axis=(0, 2, 3))).max() < 1e-3 < abs(cast).min()
    assert np.corrcoef((fixed - ref).ravel(), detail.ravel())[0, 1] > 0.9
    a = adain(t(out), t(ref)).numpy()
    np.testing.assert_allclose(a.mean(axis=(2, 3)), ref.mean(axis=(2, 3)), atol=1e-9)
    np.testing.assert_allclose(a.std(axis=(2, 3), ddof=1), ref.std(axis=(2, 3), ddof=1), rtol=1e-4)
    assert torch.equal(apply_color_fix("none", t(out), t(ref)), t(out))
    with pytest.raises(ConfigError, match="color_fix"):
        LSSRConfig(color_fix="histogram")
    with pytest.raises(ConfigError, match="skip"):
        LSSRConfig(skip="both")


def test_colour_fix_only_at_inference(real_batch):
    batch, _ = real_batch
    inputs = preprocess(batch)
    plain = randomize_zero_inits(LSSRModel(load_base(SMALL_BASE_DIR), LSSRConfig(modality_dropout=0.0)))
    fixed = copy.deepcopy(plain)
    fixed.config = dataclasses.replace(plain.config, color_fix="wavelet")
    with torch.no_grad():
        assert torch.equal(plain.train().forward_batch(inputs), fixed.train().forward_batch(inputs))
        a, b = plain.eval().forward_batch(inputs), fixed.eval().forward_batch(inputs)
    up = _bicubic(inputs)
    # the fixed output's low band is the input's
    low = lambda y: wavelet_low(torch.cat([y[:, :3], y[:, 3:]], 0))
    assert (low(b) - low(up)).abs().mean() < 0.5 * (low(a) - low(up)).abs().mean()


def test_legacy_checkpoint_keeps_its_forward():
    """A checkpoint saved before the pixel skip has no ``skip`` key: it loads as ``latent``."""
    model = LSSRModel.from_pretrained("models/lssr-adapters-cpu")
    assert model.config.skip == "latent" and not model.detail_gate.requires_grad
