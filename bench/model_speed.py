"""CPU speed of the LSSR model per 192x192 (10 m) chip: torch eager vs onnxruntime.

Uses the committed small stand-in base (models/small-sd-base) and a real 64x64 (30 m) chip of
the Alabama Landsat-8 TOA sample (no aux layers there: present flags 0 except month); prints a
table with parameter counts and writes bench/model_speed.json.

Usage: python bench/model_speed.py [--threads 2] [--repeats 5] [--base models/small-sd-base]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ALABAMA = HERE.parent / "data" / "samples" / "landsat8_l1t_alabama_2015"


def alabama_chip(size: int = 64, y: int = 200, x: int = 200) -> dict:
    """One batch-of-1 dict: L8 TOA reflectance (red, green, blue, nir, swir1, swir2), month 8."""
    import rasterio

    mtl = (ALABAMA / "l8_MTL.txt").read_text()
    sun = np.sin(np.deg2rad(float(re.search(r"SUN_ELEVATION = ([\d.]+)", mtl).group(1))))
    bands = []
    for b in (4, 3, 2, 5, 6, 7):
        mult = float(re.search(rf"REFLECTANCE_MULT_BAND_{b} = ([-\d.E+]+)", mtl).group(1))
        add = float(re.search(rf"REFLECTANCE_ADD_BAND_{b} = ([-\d.E+]+)", mtl).group(1))
        with rasterio.open(ALABAMA / f"l8_B{b}.tif") as src:
            dn = src.read(1, window=((y, y + size), (x, x + size))).astype(np.float32)
        bands.append((mult * dn + add) / sun)
    return {
        "chip_id": np.array(["r0000c0000"]),
        "lr": np.stack(bands)[None].astype(np.float32),
        "month": np.array([8], np.int64),
        "present": np.zeros((1, 3), np.float32),
    }


#: SD-2.1-base architecture (public config values) for parameter counts on the meta device.
SD21_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20), "use_linear_projection": True,
}
SD21_VAE = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2, "latent_channels": 4,
}


def sd21_counts() -> dict[str, dict[str, int]]:
    """Trainable / frozen counts of LSSR on a real SD-2.1-base architecture (no weights needed)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from lssr_ray.model.adapters import AdapterConfig, add_adapters, lora_parameter_count
    from lssr_ray.model.aux import AuxFusion
    from lssr_ray.model.sar import SARHead

    with init_empty_weights():
        unet, vae = UNet2DConditionModel(**SD21_UNET), AutoencoderKL(**SD21_VAE)
    frozen_unet = sum(p.numel() for p in unet.parameters())
    add_adapters(unet, AdapterConfig())
    out = {
        "unet": {"trainable": lora_parameter_count(unet), "frozen": frozen_unet},
        "vae": {"trainable": 0, "frozen": sum(p.numel() for p in vae.parameters())},
        "fusion": {"trainable": sum(p.numel() for p in AuxFusion().parameters()), "frozen": 0},
        "sar_head": {"trainable": sum(p.numel() for p in SARHead().parameters()), "frozen": 0},
    }
    out["total"] = {k: sum(v[k] for v in out.values()) for k in ("trainable", "frozen")}
    return out


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--base", default=None)
    args = ap.parse_args()

    import torch

    from lssr_ray.infer.export import OnnxLSSR, export_onnx, max_abs_diff
    from lssr_ray.model.base import SMALL_BASE_DIR, load_base
    from lssr_ray.model.lssr import LSSRModel, LSSRPipeline, parameter_table, preprocess

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LSSRModel(load_base(args.base or SMALL_BASE_DIR))
    counts = model.parameter_summary()
    print(parameter_table(counts))
    pipe = LSSRPipeline.from_model(model)
    batch = alabama_chip()
    t_torch = _time(lambda: pipe(batch), args.repeats)
    with tempfile.TemporaryDirectory() as d:
        path = export_onnx(pipe.model, Path(d) / "lssr.onnx", batch_size=1, chip_size=64)
        runner = OnnxLSSR(path, threads=args.threads)
        t_ort = _time(lambda: runner(batch), args.repeats)
        diff = max_abs_diff(pipe.model, runner, preprocess(batch))
        onnx_mb = path.stat().st_size / 2**20
    res = {
        "chip": "64x64 (30 m) -> 192x192 (10 m), 6 bands (rgb + ir through the same SD), batch 1",
        "base": str(args.base or SMALL_BASE_DIR.relative_to(HERE.parent)),
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch_eager_s_per_chip": round(t_torch, 4),
        "onnxruntime_s_per_chip": round(t_ort, 4),
        "onnx_vs_torch_max_abs_diff": diff,
        "onnx_file_mb": round(onnx_mb, 2),
        "parameters": counts,
        "parameters_on_sd21_base": sd21_counts(),
    }
    print(f"\n{'engine':<14} {'s / 192x192 chip':>18}")
    print(f"{'torch eager':<14} {t_torch:>18.3f}")
    print(f"{'onnxruntime':<14} {t_ort:>18.3f}")
    print(f"ONNX vs torch max abs diff (image units): {diff:.2e}")
    print("\nsame LSSR on the SD-2.1-base architecture:")
    print(parameter_table(res["parameters_on_sd21_base"]))
    (HERE / "model_speed.json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
