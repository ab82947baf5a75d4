"""Residual-CNN baseline: shapes, bicubic identity at init, checkpoint round trip, committed weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lssr_ray.config import REPO_ROOT
from lssr_ray.errors import ConfigError
from lssr_ray.model.baseline import ResidualCNN

COMMITTED = REPO_ROOT / "models" / "baseline-cnn"


def _lr(b: int = 2, h: int = 8, w: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 6, h, w, generator=g) * 2.2 - 1.1  # a little outside [-1, 1]: the clamp matters


def test_forward_shape_and_range():
    m = ResidualCNN(channels=8, num_blocks=2)
    out = m(_lr())
    assert out.shape == (2, 6, 24, 30)
    assert out.min() >= -1 and out.max() <= 1


def test_untrained_model_is_exactly_clamped_bicubic():
    x = _lr()
    ref = F.interpolate(x, scale_factor=3, mode="bicubic", align_corners=False).clamp(-1, 1)
    m = ResidualCNN(channels=8, num_blocks=2)
    assert torch.equal(m(x), ref)
    with torch.no_grad():  # any non-zero tail breaks the identity: the check above can fail
        m.tail.bias.fill_(0.01)
    assert not torch.allclose(m(x), ref)


def test_save_load_bit_identical(tmp_path: Path):
    torch.manual_seed(3)
    m = ResidualCNN(channels=8, num_blocks=2, res_scale=0.2).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m.save_pretrained(tmp_path / "ckpt")
    r = ResidualCNN.from_pretrained(tmp_path / "ckpt").eval()
    assert r.config.channels == 8 and r.config.num_blocks == 2 and r.config.res_scale == 0.2
    for (k, a), (k2, b) in zip(m.state_dict().items(), r.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = _lr(seed=1)
    with torch.no_grad():
        assert torch.equal(m(x), r(x))


def test_bad_input_and_config_raise():
    with pytest.raises(ConfigError, match="expected"):
        ResidualCNN(channels=8, num_blocks=1)(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ConfigError, match="positive"):
        ResidualCNN(channels=0)


def test_committed_checkpoint_beats_bicubic_on_real_pairs():
    """The bundled weights on the 5 real Landsat-8/Sentinel-2 pairs (never trained on), the same
    centre crops and clear masks as jobs/evaluate.py: the numbers recorded in its metrics.json, and
    better than bicubic on PSNR RGB, SSIM RGB and NDVI MSE (not on PSNR IR: see its README)."""
    import json

    import numpy as np

    from lssr_ray.data.batch import postprocess, preprocess
    from lssr_ray.data.pair_dataset import PairDataset, collate
    from lssr_ray.model.metrics import evaluate

    m = ResidualCNN.from_pretrained(COMMITTED).eval()
    ds = PairDataset(REPO_ROOT / "data" / "pairs" / "pairs.zarr", chip_size=16, sensor_pairs=("L8-S2",))
    assert len(ds) == 5
    batch = collate([ds[i] for i in range(len(ds))])
    inp = preprocess(batch, scale=3)
    x = torch.as_tensor(inp["lr"])
    with torch.no_grad():
        cnn = postprocess(m(x).numpy(), inp["valid"])
    bic = postprocess(F.interpolate(x, scale_factor=3, mode="bicubic", align_corners=False).clamp(-1, 1).numpy(),
                      inp["valid"])
    target = np.where(batch["hr_valid"] > 0.5, batch["hr"], np.nan).astype(np.float32)
    rc, rb = ([evaluate(torch.as_tensor(a[j:j + 1]), torch.as_tensor(target[j:j + 1])) for j in range(5)]
              for a in (cnn, bic))
    mean = lambda rows, k: float(np.mean([r[k] for r in rows]))
    rec = json.loads((COMMITTED / "metrics.json").read_text())["groups"]["L8-S2 real (not trained on)"]
    for k in ("psnr_rgb", "psnr_ir", "ndvi_mse", "ssim_rgb"):
        assert mean(rc, k) == pytest.approx(rec["cnn"][k], rel=1e-3), k
        assert mean(rb, k) == pytest.approx(rec["bicubic"][k], rel=1e-3), k
    assert mean(rc, "psnr_rgb") > mean(rb, "psnr_rgb")
    assert mean(rc, "ssim_rgb") > mean(rb, "ssim_rgb") + 0.02
    assert mean(rc, "ndvi_mse") < 0.9 * mean(rb, "ndvi_mse")


def test_v2_base_vae_ceiling_above_bicubic_on_real_pairs():
    """models/small-sd-base-v2 (its pretraining left out the real pairs' Sentinel-2 dates): the
    Sentinel-2 truth through its VAE beats bicubic of the Landsat-8 input by > 4 dB, where the
    v1 base's VAE loses to it (docs/TRAINING.md, "Quality")."""
    import numpy as np

    from lssr_ray.data.batch import postprocess, preprocess
    from lssr_ray.data.pair_dataset import PairDataset, collate
    from lssr_ray.model.base import load_base
    from lssr_ray.model.metrics import evaluate
    from lssr_ray.train.evaluate import _vae_truth

    ds = PairDataset(REPO_ROOT / "data" / "pairs" / "pairs.zarr", chip_size=16, sensor_pairs=("L8-S2",))
    batch = collate([ds[i] for i in range(len(ds))])
    target = np.where(batch["hr_valid"] > 0.5, batch["hr"], np.nan).astype(np.float32)
    inp = preprocess(batch, scale=3)
    x = torch.as_tensor(inp["lr"])
    bic = postprocess(F.interpolate(x, scale_factor=3, mode="bicubic", align_corners=False).clamp(-1, 1).numpy(),
                      inp["valid"])
    rec = _vae_truth(load_base(REPO_ROOT / "models" / "small-sd-base-v2"), target)
    rec = np.where(np.isfinite(bic), rec, np.nan)
    for k in ("psnr_rgb", "psnr_ir"):
        v, b = (np.mean([evaluate(torch.as_tensor(a[j:j + 1]), torch.as_tensor(target[j:j + 1]))[k]
                         for j in range(len(ds))]) for a in (rec, bic))
        assert v > b + 4, (k, v, b)
