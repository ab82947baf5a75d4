"""Engine benchmark: time per 192x192 (10 m) chip for each engine and batch size, against bicubic.

Chips are real: distinct 64x64 (30 m) windows of the Alabama Landsat-8 L1T TOA sample
(``data/samples/landsat8_l1t_alabama_2015``; red, green, blue, nir, swir1, swir2; no aux
layers, so ``present`` is 0 and the model's aux paths run on zeros). One chip goes through the
model twice (RGB and IR groups batched together), one denoising step.

Time per chip = median over ``repeats`` calls (after one warm-up call) of the wall time of
``preprocess -> engine -> postprocess`` on a batch of B chips, divided by B: what a mapping
actor pays per chip. Engines:

- ``torch``: eager, ``torch.inference_mode``, ``torch.set_num_threads(threads)``.
- ``onnxruntime``: the graph of :func:`lssr_ray.infer.export.export_onnx` exported with a fixed
  batch of B, CPU provider, ``intra_op_threads = threads``.
- ``tensorrt``: only where TensorRT imports and a CUDA GPU is present; otherwise a row saying so.

Models: the committed small stand-in base (``models/small-sd-base``, the SD classes with a tiny
config) with untrained (seeded) adapters; and, in the full run, the same LSSR classes on the
SD-2.1-base *architecture* with random weights (no SD weights ship with the project), timed
once at batch 1 with torch eager. FLOPs per chip come from ``torch.utils.flop_counter``
(matmul/conv/attention FLOPs = 2 x multiply-adds) on one forward at batch 1, for
both models on the ``meta`` device (shapes only: no weights, no compute). ONNX graphs are
exported once per batch size and cached (:func:`cached_onnx`).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
ALABAMA = REPO / "data" / "samples" / "landsat8_l1t_alabama_2015"
CHIP = 64
"""Chip edge in 30 m input pixels (192 output pixels at 10 m)."""
SCALE = 3
BATCH_SIZES = (1, 2, 4, 8)
QUICK_BATCH_SIZES = (1, 2)

from lssr_ray.model.base import SD21_PROMPT_TOKENS
from lssr_ray.model.base import SD21_UNET_CONFIG as SD21_UNET
from lssr_ray.model.base import SD21_VAE_CONFIG as SD21_VAE


def cpu_threads() -> int:
    """CPUs this process may run on (the thread count given to torch and onnxruntime)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def alabama_chips(n: int, *, size: int = CHIP) -> dict[str, np.ndarray]:
    """A batch of ``n`` distinct real chips: TOA reflectance (B, 6, size, size) float32 in
    OUTPUT_BANDS order from the L8 L1T sample (MTL gains, sun-elevation corrected), month 8
    (acquired 2015-08-04), ``present`` zeros (the sample has no aux layers)."""
    import rasterio
    from rasterio.windows import Window

    mtl = (ALABAMA / "l8_MTL.txt").read_text()
    sun = np.sin(np.deg2rad(float(re.search(r"SUN_ELEVATION = ([\d.]+)", mtl).group(1))))
    # windows on a diagonal inside the valid (non-fill) part of the crop
    offsets = [(200 + 70 * (i % 4), 200 + 70 * (i // 4)) for i in range(n)]
    bands = []
    for b in (4, 3, 2, 5, 6, 7):
        mult = float(re.search(rf"REFLECTANCE_MULT_BAND_{b} = ([-\d.E+]+)", mtl).group(1))
        add = float(re.search(rf"REFLECTANCE_ADD_BAND_{b} = ([-\d.E+]+)", mtl).group(1))
        with rasterio.open(ALABAMA / f"l8_B{b}.tif") as src:
            dn = np.stack([src.read(1, window=Window(x, y, size, size)) for y, x in offsets]).astype(np.float32)
        refl = (mult * dn + add) / sun
        bands.append(np.where(dn > 0, refl, np.nan).astype(np.float32))  # DN 0 = fill
    return {
        "chip_id": np.array([f"r{i:04d}c0000" for i in range(n)]),
        "lr": np.stack(bands, axis=1),
        "month": np.full(n, 8, np.int64),
        "present": np.zeros((n, 3), np.float32),
    }


def call_times(fn: Callable[[], Any], *, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return ts


def median_time(fn: Callable[[], Any], *, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    return statistics.median(call_times(fn, repeats=repeats, warmup=warmup))


def _row(engine: str, model: str, b: int, ts: list[float], **extra: Any) -> dict[str, Any]:
    """A measured row: per-chip median (the headline) and minimum (least disturbed by other load)."""
    med = statistics.median(ts)
    return {"engine": engine, "model": model, "batch_size": b, "status": "measured",
            "s_per_chip": med / b, "s_per_chip_min": min(ts) / b, "chips_per_s": b / med,
            "repeats": len(ts), **extra}


def small_model(seed: int = 0) -> Any:
    """The merged LSSR model on the committed small base, adapters untrained (seeded)."""
    from lssr_ray.config import SMALL_BASE_DIR
    from lssr_ray.model.checkpoint import CheckpointRef
    from lssr_ray.model.lssr import LSSRModel

    return LSSRModel.from_ref(CheckpointRef(None, str(SMALL_BASE_DIR), seed)).merge_for_inference()


def sd21_model(*, device: str = "meta", seed: int = 0) -> Any:
    """LSSR (same classes, default adapters, merged) on the SD-2.1-base architecture.

    ``device="meta"``: shapes only (FLOP counting, parameter counts); ``"cpu"``: random
    weights (seeded, see below) for timing. No SD weights are read or needed.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from lssr_ray.model.base import BaseModel
    from lssr_ray.model.lssr import LSSRModel

    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**SD21_UNET), AutoencoderKL(**SD21_VAE)
        emb = torch.zeros(1, SD21_PROMPT_TOKENS, SD21_UNET["cross_attention_dim"])
        base = BaseModel(unet=unet, vae=vae, scheduler=None, prompt_embeds=emb, path="",
                         uri="sd-2.1-base architecture, random weights", fingerprint="none")
        model = LSSRModel(base).merge_for_inference()
    if device == "meta":
        return model
    # default init of ~950 M parameters takes about a minute on 2 cores: allocate empty and fill
    # cheaply instead (small uniform weights, unit norm scales, zero biases/buffers: finite and
    # never denormal, which is all a timing needs)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.uniform_(-0.02, 0.02, generator=gen)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
        for b in model.buffers():
            if b.is_floating_point():
                b.zero_()
    return model


def flops_per_chip(model: Any, *, device: str = "cpu", chip_size: int = CHIP) -> dict[str, float]:
    """FLOPs of one forward at batch 1 (one chip, RGB + IR groups), total and per top-level
    component (``vae.encoder``, ``unet``, ``vae.decoder``, ``fusion``, ``sar_head``, ...)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lssr_ray.infer.export import INPUT_NAMES, example_inputs

    ex = example_inputs(batch_size=1, chip_size=chip_size, scale=model.config.scale)
    args = [torch.from_numpy(ex[k]).to(device) for k in INPUT_NAMES]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*args)
    per = counter.get_flop_counts()
    root = type(model).__name__
    out = {"total": float(counter.get_total_flops())}
    for name, counts in per.items():
        parts = name.split(".")
        if parts[0] == root and (len(parts) == 2 and parts[1] != "vae" or len(parts) == 3 and parts[1] == "vae"):
            out[".".join(parts[1:])] = float(sum(counts.values()))
    return out


def cached_onnx(model: Any, *, batch_size: int, chip_size: int = CHIP, seed: int = 0) -> tuple[Path, bool]:
    """The exported graph of ``model`` at a fixed batch, cached under ``<LSSR cache>/onnx-bench``.

    The key hashes the base fingerprint, the seed of the untrained adapters, the model config,
    the shapes and the source of ``lssr_ray/model`` and ``lssr_ray/infer/export.py`` (a code
    change re-exports). Returns (path, cache hit). Export takes ~10-20 s per graph on 2 cores.
    """
    import hashlib
    import json

    from lssr_ray.infer.export import export_onnx
    from lssr_ray.model.base import default_cache_dir

    h = hashlib.sha256(json.dumps([model.base_fingerprint, seed, model.config.to_dict(), batch_size, chip_size],
                                  sort_keys=True, default=str).encode())
    for f in sorted((REPO / "lssr_ray" / "model").glob("*.py")) + [REPO / "lssr_ray" / "infer" / "export.py"]:
        h.update(f.read_bytes())
    path = default_cache_dir() / "onnx-bench" / f"{h.hexdigest()[:20]}_b{batch_size}.onnx"
    if path.is_file():
        return path, True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, tmp, batch_size=batch_size, chip_size=chip_size)
    os.replace(tmp, path)
    os.replace(tmp.with_suffix(".json"), path.with_suffix(".json"))
    return path, False


def _parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _bicubic_rows(batch: dict[str, np.ndarray], *, repeats: int) -> list[dict[str, Any]]:
    """Bicubic x3 of the same chips: torch ``interpolate`` and rasterio (GDAL cubic warp)."""
    import rasterio.warp
    import torch
    import torch.nn.functional as F
    from affine import Affine
    from rasterio.enums import Resampling

    lr = batch["lr"]
    b, c, h, w = lr.shape
    src_t, dst_t = Affine(30, 0, 0, 0, -30, 0), Affine(10, 0, 0, 0, -10, 0)

    def torch_bicubic() -> np.ndarray:
        x = torch.from_numpy(np.nan_to_num(lr))
        return F.interpolate(x, size=(h * SCALE, w * SCALE), mode="bicubic", align_corners=False).numpy()

    def gdal_bicubic() -> np.ndarray:
        dst = np.empty((b * c, h * SCALE, w * SCALE), np.float32)
        rasterio.warp.reproject(lr.reshape(b * c, h, w), dst, src_transform=src_t, src_crs="EPSG:32616",
                                dst_transform=dst_t, dst_crs="EPSG:32616", resampling=Resampling.cubic,
                                src_nodata=np.nan, dst_nodata=np.nan)
        return dst

    rows = []
    for name, fn in (("bicubic (torch interpolate)", torch_bicubic), ("bicubic (rasterio/GDAL cubic)", gdal_bicubic)):
        rows.append(_row(name, "none", b, call_times(fn, repeats=repeats * 4, warmup=1)))
    return rows


def _trt_reason() -> str | None:
    """None when TensorRT can run here, else why not."""
    reasons = []
    if importlib.util.find_spec("tensorrt") is None:
        reasons.append("no tensorrt")
    import torch

    if not torch.cuda.is_available():
        reasons.insert(0, "no GPU")
    return " / ".join(reasons) or None


def run_engines(*, quick: bool = False, threads: int | None = None, repeats: int | None = None,
                sd21_timing: bool | None = None, sd21_repeats: int = 1, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every engine row; returns the ``engines`` section of ``bench/results.json``.

    ``quick``: batch sizes (1, 2), 2 repeats, no SD-2.1 timing or FLOP count (seconds, for tests).
    """
    import torch

    from lssr_ray.config import SMALL_BASE_DIR
    from lssr_ray.infer.base import super_resolve
    from lssr_ray.infer.factory import make_engine

    threads = int(threads or cpu_threads())
    repeats = int(repeats or (2 if quick else 5))
    sizes = QUICK_BATCH_SIZES if quick else BATCH_SIZES
    sd21_timing = (not quick) if sd21_timing is None else sd21_timing
    torch.set_num_threads(threads)
    model = small_model()
    small_name = f"small stand-in base ({SMALL_BASE_DIR.relative_to(REPO)}), untrained adapters"
    chips = alabama_chips(max(sizes))
    rows: list[dict[str, Any]] = []
    trt_reason = _trt_reason()
    cache_hits: list[bool] = []

    def timed(engine: Any, batch: dict[str, np.ndarray]) -> Callable[[], np.ndarray]:
        def call() -> np.ndarray:
            return super_resolve(engine, batch, scale=SCALE)

        return call

    with tempfile.TemporaryDirectory(prefix="lssr-bench-") as tmp:
        for b in sizes:
            batch = {k: v[:b] for k, v in chips.items()}
            eng = make_engine("torch", torch_module=model, batch_size=b, chip_shape=(CHIP, CHIP))
            rows.append(_row("torch eager", "small", b, call_times(timed(eng, batch), repeats=repeats),
                             threads=threads))
            log(f"  torch eager   b={b}: {rows[-1]['s_per_chip']:.4f} s/chip (min {rows[-1]['s_per_chip_min']:.4f})")
            path, hit = cached_onnx(model, batch_size=b)
            cache_hits.append(hit)
            eng = make_engine("onnxruntime", onnx_path=path, intra_op_threads=threads)
            rows.append(_row("onnxruntime", "small", b, call_times(timed(eng, batch), repeats=repeats),
                             threads=threads, providers=list(eng.providers)))
            log(f"  onnxruntime   b={b}: {rows[-1]['s_per_chip']:.4f} s/chip (min {rows[-1]['s_per_chip_min']:.4f})")
            if trt_reason is None:
                eng = make_engine("tensorrt", onnx_path=path, cache_dir=Path(tmp) / "trt")
                rows.append(_row("tensorrt", "small", b, call_times(timed(eng, batch), repeats=repeats),
                                 gpu=torch.cuda.get_device_name()))
            else:
                rows.append({"engine": "tensorrt", "model": "small", "batch_size": b,
                             "status": f"not available: {trt_reason}", "s_per_chip": None, "chips_per_s": None})
            rows.extend(_bicubic_rows(batch, repeats=repeats))
        onnx_mb = path.stat().st_size / 2**20

    # shapes only: FLOPs do not depend on the values, and meta tensors cost no compute
    flops = {"small": flops_per_chip(copy.deepcopy(model).to("meta"), device="meta")}
    params = {"small": _parameters(model)}
    sd21: dict[str, Any] = {}
    if not quick:
        meta = sd21_model(device="meta")
        flops["sd21"] = flops_per_chip(meta, device="meta")
        params["sd21"] = _parameters(meta)
        del meta
        log(f"  SD-2.1 architecture: {flops['sd21']['total'] / 1e12:.3f} TFLOP per chip")
    if sd21_timing:
        t0 = time.perf_counter()
        big = sd21_model(device="cpu")
        build_s = time.perf_counter() - t0
        batch = {k: v[:1] for k, v in chips.items()}
        eng = make_engine("torch", torch_module=big, batch_size=1, chip_shape=(CHIP, CHIP))
        call = timed(eng, batch)
        t1 = time.perf_counter()
        call()  # warm-up (first-touch of ~3.8 GB of weights)
        warm_s = time.perf_counter() - t1
        rows.append(_row("torch eager", "sd21", 1, call_times(call, repeats=sd21_repeats, warmup=0),
                         threads=threads, first_call_s=warm_s))
        t = rows[-1]["s_per_chip"]
        sd21 = {"build_s": build_s, "first_call_s": warm_s, "s_per_chip": t, "s_per_chip_min": rows[-1]["s_per_chip_min"]}
        log(f"  torch eager   SD-2.1 architecture b=1: {t:.2f} s/chip (first call {warm_s:.2f} s)")
        del big, eng
    rows.append({"engine": "onnxruntime", "model": "sd21", "batch_size": 1,
                 "status": "not measured: an SD-2.1-size graph (3.8 GB fp32) exceeds the 2 GB single-file "
                           "ONNX limit; it needs external-data export, not done in this bench",
                 "s_per_chip": None, "chips_per_s": None})
    by = {(r["engine"], r["model"], r["batch_size"]): r for r in rows if r["status"] == "measured"}
    speedup = {
        str(b): {"median": by[("torch eager", "small", b)]["s_per_chip"] / by[("onnxruntime", "small", b)]["s_per_chip"],
                 "min": by[("torch eager", "small", b)]["s_per_chip_min"] / by[("onnxruntime", "small", b)]["s_per_chip_min"]}
        for b in sizes
    }
    return {
        "onnxruntime_speedup_over_torch": speedup,
        "chips": f"{max(sizes)} real 64x64 (30 m) Landsat-8 TOA windows of the Alabama sample -> 192x192 (10 m), "
                 "6 bands (RGB + IR groups through the same SD), one step",
        "timing": f"median (and min) of {repeats} calls after 1 warm-up ({sd21_repeats} after 1 for SD-2.1); "
                  "preprocess + engine + postprocess; per chip = batch time / B",
        "threads": threads,
        "models": {"small": small_name,
                   "sd21": "same LSSR classes on the SD-2.1-base architecture, random weights (no SD weights here)"},
        "parameters": params,
        "flops_per_chip": flops,
        "onnx_file_mb_small": round(onnx_mb, 2),
        "onnx_export_cache_hits": cache_hits,
        "sd21_timing": sd21,
        "rows": rows,
    }


def engine_table(section: dict[str, Any]) -> str:
    """Printable table of the engine rows (seconds per 192x192 chip, and x bicubic torch)."""
    rows = section["rows"]
    bic = {r["batch_size"]: r["s_per_chip"] for r in rows if r["engine"] == "bicubic (torch interpolate)"}
    lines = [f"{'engine':<31} {'model':<6} {'B':>2} {'ms / chip':>11} {'(min)':>10} {'chips/s':>9} {'x bicubic':>10}  status"]
    for r in rows:
        s = r["s_per_chip"]
        ratio = f"{s / bic[r['batch_size']]:10.0f}" if s and r["batch_size"] in bic and not r["engine"].startswith("bicubic") else f"{'':>10}"
        ms = f"{s * 1e3:11.2f} {r['s_per_chip_min'] * 1e3:10.2f}" if s else f"{'-':>11} {'':>10}"
        cps = f"{r['chips_per_s']:9.2f}" if r["chips_per_s"] else f"{'-':>9}"
        lines.append(f"{r['engine']:<31} {r['model']:<6} {r['batch_size']:>2} {ms} {cps} {ratio}  {r['status']}")
    lines.append("onnxruntime / torch eager speed-up (small base): " + ", ".join(
        f"B={b} {v['median']:.2f}x (min-based {v['min']:.2f}x)" for b, v in section["onnxruntime_speedup_over_torch"].items()))
    fl = section["flops_per_chip"]
    lines.append("FLOPs per chip (torch.utils.flop_counter, batch 1): "
                 + ", ".join(f"{k} {v['total'] / 1e9:,.1f} GFLOP" for k, v in fl.items()))
    return "\n".join(lines)


__all__ = ["SD21_UNET", "SD21_VAE", "alabama_chips", "call_times", "cpu_threads", "engine_table", "flops_per_chip",
           "median_time", "run_engines", "sd21_model", "small_model"]
