"""A short Ray Train run (the ``chaos_run`` fixture: 16 steps on 2 CPU workers, one worker killed
and recovered): metrics.jsonl, and an adapter checkpoint that reloads exactly.

The recovery itself and resume by run name: test_recovery.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT
from lssr_ray.model.losses import FFT_WEIGHT, NDVI_WEIGHT

BASE = REPO_ROOT / "models" / "small-sd-base"


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_metrics_jsonl_has_per_step_loss_and_throughput(chaos_run):
    cfg, summary, _ = chaos_run
    recs = summary["history"]  # also written to <run folder>/metrics.jsonl (see test_recovery)
    assert recs[0]["event"] == "start" and recs[0]["step"] == 0 and recs[0]["world_size"] == 2
    steps = [r for r in recs if "event" not in r]
    assert [r["step"] for r in steps] == list(range(1, cfg.max_steps + 1))
    for r in steps:
        assert np.isfinite(r["total"]) and r["total"] > 0
        # total = the weighted sum of the logged terms (the run's LSSRLoss weights)
        w = {"mse_weight": 1.0, "fft_weight": FFT_WEIGHT, "ndvi_weight": NDVI_WEIGHT, **cfg.loss}
        assert r["total"] == pytest.approx(
            w["mse_weight"] * r["mse"] + w["fft_weight"] * r["fft"] + w["ndvi_weight"] * r["ndvi"], rel=1e-5)
        assert r["samples_per_s"] > 0
    # validation on the real L8-S2 pairs at the last step, with the bicubic baseline alongside
    assert {"val_psnr_rgb", "val_bicubic_psnr_rgb", "val_ndvi_mse"} <= set(steps[-1])
    assert not any("val_psnr_rgb" in r for r in steps[:-1])  # val_every 1000: only at the end


def test_checkpoint_reloads_to_identical_outputs(chaos_run):
    import torch

    from lssr_ray.model.base import load_base
    from lssr_ray.model.losses import LSSRLoss
    from lssr_ray.model.lssr import LSSRConfig, LSSRModel
    from lssr_ray.train.data import make_batches
    from lssr_ray.train.loop import SPLIT_FILE, evaluate_model

    cfg, summary, _ = chaos_run
    ckpt = Path(summary["checkpoint"])
    assert (ckpt / "adapters").is_dir() and (ckpt / SPLIT_FILE).is_file()
    size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
    assert size < 5e6, f"checkpoint {size} bytes: adapters only expected"

    model = LSSRModel.from_pretrained(ckpt, base=str(BASE))
    # the reloaded weights are the trained ones: the validation numbers the worker logged at
    # the last step come out again (same pairs, same seed)
    _, val_batches, _ = make_batches(cfg, rank=0, world_size=1)
    again = evaluate_model(model, LSSRLoss(), val_batches(), torch.device("cpu"))
    logged = next(r for r in _records(ckpt / "metrics.jsonl") if r.get("step") == cfg.max_steps)
    for k in ("val_total", "val_psnr_rgb", "val_psnr_ir", "val_ndvi_mse"):
        assert again[k] == pytest.approx(logged[k], rel=1e-4), k

    # trained adapters are not the zero-initialised ones, and a second load is bit-identical
    lora_b = [p for n, p in model.unet.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.detach().abs().max()) > 0 for p in lora_b)
    twin = LSSRModel.from_pretrained(ckpt, base=load_base(str(BASE)))
    fresh = LSSRModel(load_base(str(BASE)), LSSRConfig.from_dict(cfg.model))
    batch = next(iter(val_batches()))
    from lssr_ray.train.loop import _step_inputs

    inputs, _, _ = _step_inputs(batch, 3)
    outs = []
    for m in (model, twin, fresh):
        m.eval()
        with torch.inference_mode():
            outs.append(m.forward_batch(inputs))
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])
