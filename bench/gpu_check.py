"""GPU check of the SD-2.1-size engines, one script (``bench/gpu_check.sh``), < 8 minutes on one GPU.

Sections, each recorded in ``bench/gpu_results.json`` as soon as it finishes (a section that
fails records its error and the others still run):

1. ``model``: LSSR (same classes, default adapters, merged) on the SD-2.1-base *architecture* with
   random weights (:func:`bench.engines.sd21_model`; no SD weights are read or downloaded).
2. ``export``: the ONNX graph with external data (``model.onnx`` + ``model.onnx.data``) and a
   dynamic batch (:func:`lssr_ray.infer.export.export_onnx`).
3. ``graph_engine``: the TensorRT engine built from that folder (fp16, profile batch 1 .. max),
   its build time, and parity against torch float32 (max |difference| in image units).
4. ``timing``: seconds per tile (one 64 x 64 chip at 30 m -> 192 x 192 at 10 m, RGB and IR
   groups through the VAE and UNet) at batch 1 / 8 / 32, for torch float32, torch with the
   mapping default precision (``auto``: bf16 autocast where supported) and the graph engine.
5. ``training``: a few DDP steps of ``jobs/train.py`` (Ray Train, one worker per GPU, the
   ``configs/train_cpu.yaml`` settings and small base: the training path on GPU, not SD-2.1 size).

``--dry-run`` runs the same code on CPU with the committed small base, onnxruntime standing in
for TensorRT (same graph folder), batches 1 / 2 and 16 x 16 chips, and says so in the JSON
(``ran_on_gpu: false``): it checks the script, not the GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench/ is run as a script, like bench/run.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = REPO / "bench" / "gpu_results.json"
GPU_BATCHES = (1, 8, 32)
DRY_BATCHES = (1, 2)
PARITY_TOL = {"tensorrt": 5e-2, "onnxruntime": 1e-4}
"""Max |engine - torch fp32| accepted (image units in about [-1, 1]): fp16 TensorRT kernels vs
float32 exact-order kernels."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, small base, onnxruntime for TensorRT")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS.relative_to(REPO)})")
    p.add_argument("--train-steps", type=int, default=None, help="DDP steps (default 4; 0 skips training)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per batch size (after one warm-up)")
    return p.parse_args(argv)


def tensorrt_ready() -> str | None:
    """None when TensorRT imports and a CUDA GPU is present, else why not."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt not installed (pip install -e '.[gpu]')"
    return None


def build_model(dry_run: bool) -> tuple[Any, str, str]:
    """(merged model, description, torch device)."""
    from bench.engines import sd21_model, small_model

    if dry_run:
        return small_model(), "small stand-in base (models/small-sd-base), untrained adapters", "cpu"
    return sd21_model(device="cuda"), "SD-2.1-base architecture, random weights", "cuda"


def graph_engine(path: Path, *, max_batch: int, dry_run: bool, cache: Path) -> Any:
    """TensorRT on a GPU host; onnxruntime (same graph folder) in a dry run."""
    from lssr_ray.infer.factory import make_engine

    why = tensorrt_ready()
    if why is None:
        return make_engine("tensorrt", onnx_path=path, batch_size=max_batch, cache_dir=cache, precision="fp16")
    if not dry_run:
        raise RuntimeError(f"TensorRT unavailable: {why}")
    return make_engine("onnxruntime", onnx_path=path, batch_size=max_batch, intra_op_threads=1)


def per_tile_times(fn: Any, inputs_for: Any, batches: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    """Median seconds per tile of ``fn(inputs)`` at each batch size (after one warm-up call)."""
    from bench.engines import call_times

    rows = []
    for b in batches:
        inputs = inputs_for(b)
        ts = call_times(lambda inputs=inputs: fn(inputs), repeats=repeats)
        med = sorted(ts)[len(ts) // 2]
        rows.append({"batch": b, "s_per_tile": med / b, "tiles_per_s": b / med, "repeats": len(ts)})
    return rows


class Results:
    """The JSON file, rewritten after every section (a timeout loses only the running one)."""

    def __init__(self, path: Path, head: dict[str, Any]) -> None:
        self.path, self.data, self.t0 = path, dict(head), time.perf_counter()

    def section(self, name: str, fn: Any) -> None:
        t = time.perf_counter()
        try:
            out = dict(fn())
            out.setdefault("status", "ok")
        except Exception as exc:  # noqa: BLE001 - recorded in the JSON; the next section still runs
            out = {"status": f"failed: {type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        out["seconds"] = round(time.perf_counter() - t, 2)
        self.data[name] = out
        self.data["total_s"] = round(time.perf_counter() - self.t0, 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        print(f"[{self.data['total_s']:7.1f} s] {name}: {out['status']}", flush=True)

    def failed(self) -> list[str]:
        """Sections that did not pass (errors and failed parity; skips are not failures)."""
        return [k for k, v in self.data.items() if isinstance(v, dict) and "status" in v
                and not str(v["status"]).startswith(("ok", "skipped"))]


def main(argv: list[str] | None = None) -> int:
    import datetime as dt

    import torch

    from bench.run import machine_facts
    from lssr_ray.infer.export import example_inputs, export_onnx, graph_files, max_abs_diff
    from lssr_ray.infer.factory import make_engine

    args = parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here; run with --dry-run to check the script on CPU", file=sys.stderr)
        return 2
    batches, chip = (DRY_BATCHES, 16) if dry else (GPU_BATCHES, 64)
    steps = args.train_steps if args.train_steps is not None else 4
    res = Results(args.out, {"ran_on_gpu": not dry, "dry_run": dry, "utc": dt.datetime.now(dt.UTC).isoformat(),
                             "machine": machine_facts(), "chip_30m_px": chip, "batches": list(batches),
                             "note": "dry run: CPU, small base, onnxruntime in place of TensorRT; checks the "
                                     "script, its numbers are not GPU results" if dry else ""})
    work = Path(tempfile.mkdtemp(prefix="lssr-gpu-check-"))
    state: dict[str, Any] = {}

    def model_section() -> dict[str, Any]:
        state["model"], desc, state["device"] = build_model(dry)
        n = sum(p.numel() for p in state["model"].parameters())
        return {"model": desc, "parameters": n, "weights_gb_fp32": n * 4 / 1e9, "device": state["device"]}

    def export_section() -> dict[str, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape arithmetic (chip shapes are fixed)
            path = export_onnx(state["model"], work / "graph" / "model.onnx", batch_size=batches[-1], chip_size=chip,
                               external_data=True, dynamic_batch=True)
        state["graph"] = path
        return {"files": {f.name: f.stat().st_size for f in graph_files(path)}}

    def inputs_for(b: int) -> dict[str, Any]:
        return example_inputs(batch_size=b, chip_size=chip, scale=state["model"].config.scale, seed=b)

    def engine_section() -> dict[str, Any]:
        t = time.perf_counter()
        eng = graph_engine(state["graph"], max_batch=batches[-1], dry_run=dry, cache=work / "trt")
        build_s = time.perf_counter() - t
        state["engine"] = eng
        diff = max_abs_diff(state["model"], eng, inputs_for(2))
        tol = PARITY_TOL[eng.name]
        return {"engine": eng.name, "build_s": build_s, "max_abs_diff_vs_torch_fp32": diff, "tolerance": tol,
                "status": "ok" if diff < tol else f"parity failed: {diff:.3g} >= {tol:g}"}

    def timing_section() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for precision in ("fp32", "auto"):
            eng = make_engine("torch", torch_module=state["model"], batch_size=batches[-1], device=state["device"],
                              precision=precision)
            name = f"torch_{precision if eng.dtype is None else str(eng.dtype).removeprefix('torch.')}"
            out[name] = per_tile_times(eng, inputs_for, batches, args.repeats)
        if "engine" in state:
            out[state["engine"].name] = per_tile_times(state["engine"], inputs_for, batches, args.repeats)
        return {"s_per_tile": out}

    def training_section() -> dict[str, Any]:
        from bench.training import run_training_bench

        if steps <= 0:
            return {"status": "skipped: --train-steps 0"}
        workers = max(1, torch.cuda.device_count()) if not dry else 1
        r = run_training_bench(workers, steps=steps, tmp=work, timeout=300)
        return {**r, "status": "ok" if r.get("status") == "measured" else r.get("status")}

    for name, fn in (("model", model_section), ("export", export_section), ("graph_engine", engine_section),
                     ("timing", timing_section), ("training", training_section)):
        res.section(name, fn)
    failed = res.failed()
    print(f"gpu_check: wrote {args.out} ({'dry run on CPU' if dry else 'GPU'}); failed sections: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
