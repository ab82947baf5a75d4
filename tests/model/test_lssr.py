"""LSSRModel / LSSRPipeline on real Flanders chips with the committed small base."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _zero_init import randomize_zero_inits
from safetensors.torch import load_file

from lssr_ray.config import SMALL_BASE_DIR
from lssr_ray.data.batch import preprocess
from lssr_ray.errors import BatchError, ConfigError
from lssr_ray.model.base import load_base
from lssr_ray.model.losses import LSSRLoss
from lssr_ray.model.lssr import LSSRModel
from lssr_ray.model.pipeline import LSSRPipeline


def _train_steps(model, batch, hr, n=2, lr=1e-2):
    model.train()
    opt = torch.optim.Adam(model.trainable_parameters(), lr=lr)
    inputs = preprocess(batch)
    loss_fn = LSSRLoss()
    for _ in range(n):
        opt.zero_grad()
        loss, _ = loss_fn(model.forward_batch(inputs), torch.from_numpy(hr))
        loss.backward()
        opt.step()
    return model.eval()


def _base_weights(unet) -> dict[str, torch.Tensor]:
    """Base (non-LoRA) UNet weights with peft's ``base_layer.`` renamed back to diffusers names."""
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in unet.named_parameters() if "lora_" not in n}


def test_forward_backward_on_real_chips(base, real_batch):
    from lssr_ray.model.lssr import LSSRConfig

    batch, hr = real_batch
    model = LSSRModel(base, LSSRConfig(modality_dropout=0.0)).train()  # every aux path is live
    out = model.forward_batch(preprocess(batch))
    assert out.shape == (2, 6, 48, 48)
    loss, terms = LSSRLoss()(out, torch.from_numpy(hr))
    assert torch.isfinite(loss) and terms["ndvi"] > 0 and terms["fft"] > 0
    loss.backward()
    # at init (everything that adds to bicubic is zero) the gradient reaches the detail gate and
    # the fusion / SAR output projections: the way out of the identity
    for name in ("detail_gate", "fusion.out.weight", "sar_head.out_proj.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    # once those are non-zero, LoRA B and every fusion / SAR-head weight receive a gradient;
    # LoRA A gets none while B = 0 (standard LoRA init)
    model.zero_grad()
    randomize_zero_inits(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.zero_()
    LSSRLoss()(model.forward_batch(preprocess(batch)), torch.from_numpy(hr))[0].backward()
    for name, p in model.named_parameters():
        if p.requires_grad and "lora_A" not in name and not name.endswith(("missing",)):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        if not p.requires_grad:
            assert p.grad is None, name
    counts = model.parameter_summary()
    assert counts["vae"]["trainable"] == 0
    assert counts["unet"]["trainable"] == sum(p.numel() for n, p in model.unet.named_parameters() if "lora_" in n)
    assert 0 < counts["total"]["trainable"] < counts["total"]["frozen"]


def test_frozen_base_bit_identical_after_training_steps(base, real_batch):
    batch, hr = real_batch
    model = LSSRModel(base)
    lora_before = {n: p.detach().clone() for n, p in model.unet.named_parameters() if "lora_B" in n}
    _train_steps(model, batch, hr, n=3)
    fresh = load_base(SMALL_BASE_DIR)
    ref_unet = dict(fresh.unet.named_parameters())
    after = _base_weights(model.unet)
    assert set(after) == set(ref_unet)
    for n, p in after.items():
        assert torch.equal(p, ref_unet[n]), n
    for n, p in model.vae.named_parameters():
        assert torch.equal(p, dict(fresh.vae.named_parameters())[n]), n
    changed = [n for n, p in model.unet.named_parameters() if "lora_B" in n and not torch.equal(p, lora_before[n])]
    assert len(changed) == len(lora_before)


def test_adapter_checkpoint_round_trip_is_bit_identical(base, real_batch, tmp_path):
    batch, hr = real_batch
    model = _train_steps(LSSRModel(base), batch, hr, n=1)
    inputs = preprocess(batch)
    with torch.no_grad():
        y1 = model.forward_batch(inputs)
    ck = model.save_pretrained(tmp_path / "ck")
    # the checkpoint holds only trainable weights (LoRA + fusion + SAR head + detail gate)
    n_saved = sum(v.numel() for f in ck.rglob("*.safetensors") if f.name != "prompt_embeds.safetensors"
                  for v in load_file(str(f)).values())
    assert n_saved == model.parameter_summary()["total"]["trainable"]
    assert all("lora" in k for f in (ck / "adapters").rglob("*.safetensors") for k in load_file(str(f)))
    again = LSSRModel.from_pretrained(ck, base=load_base(SMALL_BASE_DIR)).eval()
    with torch.no_grad():
        y2 = again.forward_batch(inputs)
    assert torch.equal(y1, y2)


def test_pipeline_deterministic_and_matches_unmerged(base, real_batch, tmp_path):
    batch, hr = real_batch
    model = _train_steps(LSSRModel(base), batch, hr, n=1)
    with torch.no_grad():
        unmerged = model.forward_batch(preprocess(batch)).numpy()
    ck = model.save_pretrained(tmp_path / "ck")
    pipe = LSSRPipeline.from_pretrained(ck)
    a, b = pipe(batch)["sr"], pipe(batch)["sr"]
    assert np.array_equal(a, b)
    c = LSSRPipeline.from_pretrained(ck)(batch)["sr"]
    assert np.array_equal(a, c)
    from lssr_ray.data.normalize import image_to_reflectance

    np.testing.assert_allclose(a, image_to_reflectance(unmerged), atol=1e-4)
    assert a.shape == (2, 6, 48, 48) and a.dtype == np.float32 and np.isfinite(a).all()


def test_missing_modalities_still_run(base, real_batch):
    batch, _ = real_batch
    pipe = LSSRPipeline.from_model(randomize_zero_inits(LSSRModel(base)))
    full = pipe(batch)["sr"]
    none = dict(batch, present=np.zeros((2, 3), np.float32))
    out0 = pipe(none)["sr"]
    dropped = {k: v for k, v in batch.items() if k not in ("dem", "landcover", "sar", "present")}
    out1 = pipe(dropped)["sr"]
    assert np.isfinite(out0).all() and np.array_equal(out0, out1)
    assert not np.array_equal(full, out0)  # the flags reach the network
    nosar = dict(batch, sar=np.full_like(batch["sar"], np.nan))  # all-NaN SAR counts as absent
    np.testing.assert_array_equal(pipe(nosar)["sr"], pipe(dict(batch, present=np.array([[1, 1, 0]] * 2, np.float32)))["sr"])


def test_nodata_in_nodata_out(base, real_batch):
    batch, _ = real_batch
    pipe = LSSRPipeline.from_model(LSSRModel(base))
    clean = pipe(batch)["sr"]
    holed = copy.deepcopy(batch)
    holed["lr"][0, :, 3:5, 7:10] = np.nan  # 2x3 invalid 30 m pixels in chip 0
    holed["lr"][0, 4, 10, 2] = np.nan  # one band missing -> pixel invalid
    out = pipe(holed)["sr"]
    bad = np.zeros((16, 16), bool)
    bad[3:5, 7:10] = True
    bad[10, 2] = True
    fine_bad = bad.repeat(3, 0).repeat(3, 1)
    assert np.isnan(out[0][:, fine_bad]).all()
    assert np.isfinite(out[0][:, ~fine_bad]).all()
    np.testing.assert_array_equal(out[1], clean[1])  # other chip untouched
    empty = copy.deepcopy(batch)
    empty["lr"][1] = np.nan
    out = pipe(empty)["sr"]
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()


def test_bad_batches_raise(base, real_batch):
    batch, _ = real_batch
    with pytest.raises(BatchError, match="1..12"):
        preprocess(dict(batch, month=np.array([0, 13])))
    with pytest.raises(BatchError, match="6 in order"):
        preprocess(dict(batch, lr=batch["lr"][:, :3]))
    with pytest.raises(BatchError, match="dem"):
        preprocess(dict(batch, dem=batch["dem"][:, :, :10]))
    with pytest.raises(BatchError, match="lacks 'lr'"):
        preprocess({"month": batch["month"]})


def test_checkpoint_refuses_other_base(base, real_batch, tmp_path):
    ck = LSSRModel(base).save_pretrained(tmp_path / "ck")
    other = load_base(SMALL_BASE_DIR)
    other.fingerprint = "0" * 64
    with pytest.raises(ConfigError, match="fingerprint"):
        LSSRModel.from_pretrained(ck, base=other)


def test_modality_dropout_only_in_training(base, real_batch):
    from lssr_ray.model.lssr import LSSRConfig

    batch, _ = real_batch
    model = randomize_zero_inits(LSSRModel(base, LSSRConfig(modality_dropout=0.999)))
    inputs = preprocess(batch)
    absent = dict(inputs, present=np.zeros((2, 3), np.float32))
    with torch.no_grad():
        torch.manual_seed(1)
        trained_view = model.train().forward_batch(inputs)  # every flag dropped (p = 0.999)
        eval_full = model.eval().forward_batch(inputs)
        eval_absent = model.eval().forward_batch(absent)
    assert torch.equal(trained_view, eval_absent)
    assert not torch.equal(eval_full, eval_absent)
    with pytest.raises(ConfigError, match="modality_dropout"):
        LSSRConfig(modality_dropout=1.0)


def test_a_few_steps_reduce_the_loss_on_real_chips(base, real_batch):
    from lssr_ray.model.lssr import LSSRConfig

    batch, hr = real_batch
    model = LSSRModel(base, LSSRConfig(modality_dropout=0.0)).train()
    inputs, target = preprocess(batch), torch.from_numpy(hr)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)
    loss_fn = LSSRLoss()
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss, _ = loss_fn(model.forward_batch(inputs), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # from bicubic (the identity at init) on a real L8-S2 pair, whose error is mostly radiometric
    assert losses[-1] < 0.92 * losses[0], losses
