"""``train_loop_per_worker``: what every Ray Train worker runs.

Each worker loads the frozen base, builds the LSSR model (adapters, fusion, SAR head), reads its
own shard of the training pairs and steps AdamW over the trainable parameters only. Rank 0 writes
adapter-only checkpoints every ``checkpoint_every`` steps; every rank reports, so Ray Train can
restore all workers from the latest one after a failure or when the run is started again.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from lssr_ray.config import SCALE, TrainConfig

TRAIN_STATE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
SPLIT_FILE = "train_pairs.json"
"""Checkpoint file listing the pair ids trained on, validated on and held out (see train.data)."""
VAL_SEED = 1234
"""Torch seed of every validation pass, so its numbers do not depend on the training RNG state."""


def _autocast(device_type: str, precision: str):
    """Autocast context for the requested precision (fp32 on CPU: bf16 matmuls are slow there)."""
    import contextlib

    import torch

    from lssr_ray.infer.torch_engine import reduced_precision

    dtype = reduced_precision(device_type, precision)
    if dtype is None:
        return contextlib.nullcontext(), None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


def _to_device(inputs: dict[str, Any], device) -> dict[str, Any]:
    import torch

    return {k: torch.as_tensor(v).to(device) for k, v in inputs.items()}


def _step_inputs(batch: dict[str, Any], scale: int) -> tuple[dict[str, Any], Any, Any]:
    """Batch (numpy) -> network inputs, 10 m target reflectance and its validity mask."""
    import numpy as np

    from lssr_ray.data.batch import preprocess

    inputs = preprocess(batch, scale=scale)
    valid_lr = inputs.pop("valid")
    hr = np.asarray(batch["hr"], np.float32)
    hr_valid = np.asarray(batch["hr_valid"], bool) if "hr_valid" in batch else np.isfinite(hr).all(1)
    # A target pixel counts only where its 30 m parent was clear too.
    hr_valid = hr_valid & np.repeat(np.repeat(valid_lr, scale, axis=1), scale, axis=2)
    return inputs, hr, hr_valid


def evaluate_model(model, loss_fn, batches, device) -> dict[str, float]:
    """Mean loss terms and reflectance metrics (PSNR/SSIM per group, NDVI MSE, SAM; per-chip
    means) over ``batches``, for the model and for bicubic upsampling of the same 30 m input."""
    import numpy as np
    import torch

    from lssr_ray.data.normalize import image_to_reflectance
    from lssr_ray.model.metrics import evaluate

    sums: dict[str, float] = {}
    n = 0
    was_training = model.training
    model.eval()
    cuda = [device] if getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.inference_mode():
        torch.manual_seed(VAL_SEED)
        for batch in batches:
            inputs, hr, hr_valid = _step_inputs(batch, model.config.scale)
            t = _to_device(inputs, device)
            pred = model(t["lr"], t["dem"], t["landcover"], t["month"], t["present"], t["sar"])
            _, terms = loss_fn(pred.float(), torch.as_tensor(hr).to(device), torch.as_tensor(hr_valid).to(device))
            target = np.where(hr_valid[:, None], hr, np.nan)
            refl = image_to_reflectance(pred.float().cpu().numpy())
            terms.update(evaluate(torch.as_tensor(refl), torch.as_tensor(target)))
            bicubic = image_to_reflectance(torch.nn.functional.interpolate(
                torch.as_tensor(inputs["lr"]), scale_factor=model.config.scale, mode="bicubic",
                align_corners=False).clamp(-1, 1).numpy())
            terms.update({f"bicubic_{k}": v for k, v in
                          evaluate(torch.as_tensor(bicubic), torch.as_tensor(target)).items()})
            for k, v in terms.items():  # batch means, weighted by batch size: a per-chip mean
                sums[k] = sums.get(k, 0.0) + float(v) * len(hr)
            n += len(hr)
    model.train(was_training)
    return {f"val_{k}": v / max(n, 1) for k, v in sums.items()}


def accumulate_gradients(model, loss_fn, micro_batches, *, device, scale: int = SCALE, autocast=None,
                         scaler=None) -> tuple[dict[str, float], int]:
    """Forward/backward over ``micro_batches`` (numpy batch dicts), each loss divided by their
    number, so the summed gradients equal those of one batch holding all of them when the
    micro-batches have equal valid-pixel counts. Returns (mean loss terms, samples seen)."""
    import contextlib

    import torch

    autocast = autocast or contextlib.nullcontext()
    n = len(micro_batches)
    terms_acc: dict[str, float] = {}
    samples = 0
    for i, batch in enumerate(micro_batches):
        inputs, hr, hr_valid = _step_inputs(batch, scale)
        t = _to_device(inputs, device)
        # DDP: all-reduce gradients only on the last micro-batch
        sync = contextlib.nullcontext() if i == n - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast:
                pred = model(t["lr"], t["dem"], t["landcover"], t["month"], t["present"], t["sar"])
            loss, terms = loss_fn(pred.float(), torch.as_tensor(hr).to(device), torch.as_tensor(hr_valid).to(device))
            loss = loss / n
            (scaler.scale(loss) if scaler else loss).backward()
        samples += len(hr)
        for k, v in terms.items():
            terms_acc[k] = terms_acc.get(k, 0.0) + v / n
    return terms_acc, samples


def _emit(text: str) -> None:
    """Write a log line once: Ray Train 2.60 patches ``print`` to send it both to stdout and to
    its logger, which shows every line twice in the job log."""
    import sys

    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _log_line(record: dict[str, Any]) -> str:
    keys = ("step", "total", "mse", "fft", "ndvi", "samples_per_s", "lr")
    main = " ".join(f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}"
                    for k in keys if k in record)
    val = {k: v for k, v in record.items() if k.startswith("val_")}
    if not val:
        return f"[train] {main}"
    pick = ("psnr_rgb", "psnr_ir", "ndvi_mse", "sam_deg")
    vals = " ".join(f"{k}={val['val_' + k]:.4g}/{val.get('val_bicubic_' + k, float('nan')):.4g}"
                    for k in pick if "val_" + k in val)
    return f"[train] {main}\n[val]   step={record['step']} model/bicubic {vals}"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point; ``config`` is ``dataclasses.asdict(TrainConfig)``.

    ``metrics.jsonl`` (one JSON object per line) gets an ``{"event": "start", "step": N}`` line
    whenever workers (re)start, then one line per optimizer step: loss terms, ``samples_per_s``
    (all workers) and, every ``val_every`` steps, ``val_*`` model and ``val_bicubic_*`` metrics.
    """
    import ray.train
    import ray.train.torch
    import torch

    from lssr_ray.model.base import load_base
    from lssr_ray.model.losses import LSSRLoss
    from lssr_ray.model.lssr import LSSRConfig, LSSRModel
    from lssr_ray.train.data import make_batches

    cfg = TrainConfig.from_dict(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    device = ray.train.torch.get_device()

    base = load_base(cfg.base)
    start_step = 0
    checkpoint = ray.train.get_checkpoint()
    train_state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            model = LSSRModel.from_pretrained(ckpt_dir, base=base)
            train_state = torch.load(Path(ckpt_dir) / TRAIN_STATE, map_location="cpu", weights_only=False)
        start_step = int(train_state["step"])
        torch.manual_seed(cfg.seed + rank + 7919 * start_step)  # fresh dropout draws after a restart
    else:
        model = LSSRModel(base, LSSRConfig.from_dict(cfg.model))
    model.train()

    log_path = Path(tempfile.mkdtemp(prefix="lssr-train-log-")) / METRICS_FILE
    if train_state is not None and train_state.get("metrics_log"):
        log_path.write_text(train_state["metrics_log"])
    train_batches, val_batches, split = make_batches(cfg, rank=rank, world_size=world, start_step=start_step)
    if rank == 0:
        from lssr_ray.model.lssr import parameter_table

        _emit(parameter_table(model.parameter_summary()))
        _emit(f"[train] start at step {start_step} of {cfg.max_steps} ({world} workers, device {device}; "
              f"{len(split['train'])} training pairs, {len(split['val'])} validation pairs, "
              f"{len(split['held_out'])} held out by date)")
        with log_path.open("a") as fh:
            fh.write(json.dumps({"event": "start", "step": start_step, "world_size": world,
                                 "time": time.time()}) + "\n")

    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    core = model.module if hasattr(model, "module") else model
    opt = torch.optim.AdamW(core.trainable_parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if train_state is not None:
        opt.load_state_dict(train_state["optimizer"])
    loss_fn = LSSRLoss(**cfg.loss).to(device)
    autocast, scaler = _autocast(device.type, cfg.precision)

    step = start_step
    t0, samples = time.perf_counter(), 0
    while step < cfg.max_steps:
        opt.zero_grad(set_to_none=True)
        micro = [next(train_batches) for _ in range(cfg.grad_accum)]
        terms, n = accumulate_gradients(model, loss_fn, micro, device=device, scale=core.config.scale,
                                        autocast=autocast, scaler=scaler)
        samples += n
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        step += 1
        elapsed = time.perf_counter() - t0
        record = {"step": step, "rank": rank, **terms, "samples_per_s": samples * world / max(elapsed, 1e-9)}
        if step % cfg.val_every == 0 or step == cfg.max_steps:
            record.update(evaluate_model(core, loss_fn, val_batches(), device))
        if rank == 0:
            _emit(_log_line(record))
            with log_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = None
                if rank == 0:
                    core.save_pretrained(tmp)
                    torch.save(
                        {"step": step, "optimizer": opt.state_dict(), "metrics_log": log_path.read_text()},
                        Path(tmp) / TRAIN_STATE,
                    )
                    (Path(tmp) / METRICS_FILE).write_text(log_path.read_text())
                    (Path(tmp) / SPLIT_FILE).write_text(json.dumps(split, indent=1) + "\n")
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report({k: v for k, v in record.items() if isinstance(v, (int, float))}, checkpoint=ckpt)


__all__ = ["METRICS_FILE", "SPLIT_FILE", "TRAIN_STATE", "accumulate_gradients", "evaluate_model",
           "train_loop_per_worker"]
