"""Build and run the Ray Train ``TorchTrainer`` for LSSR adapter fine-tuning."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lssr_ray.config import REPO_ROOT, TrainConfig
from lssr_ray.fileio import is_s3, pyarrow_filesystem
from lssr_ray.train.loop import METRICS_FILE, train_loop_per_worker


def _resolve(path: str) -> str:
    """Local paths relative to the repository become absolute (workers run elsewhere)."""
    if "://" in path:
        return path
    p = Path(path)
    return str(p if p.is_absolute() else (REPO_ROOT / p).resolve())


def storage_for(path: str):
    """(storage_path, pyarrow filesystem or None) for Ray Train: local paths resolved against
    the repository; ``s3://`` through :func:`lssr_ray.fileio.pyarrow_filesystem`."""
    if not is_s3(path):
        return _resolve(path), None
    return pyarrow_filesystem(path)


def cluster_has_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) >= 1


def build_trainer(cfg: TrainConfig):
    """A ``TorchTrainer`` for ``cfg``; resumes from the latest checkpoint of ``cfg.run_name``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = {"auto": cluster_has_gpu(), "true": True, "false": False}[cfg.use_gpu]
    resolved = dataclasses.replace(
        cfg,
        base=_resolve(cfg.base),
        pairs=_resolve(cfg.pairs),
        val_pairs=_resolve(cfg.val_pairs) if cfg.val_pairs else None,
    )
    storage_path, storage_fs = storage_for(cfg.storage_path)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=dataclasses.asdict(resolved),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=use_gpu,
            resources_per_worker=None if use_gpu else {"CPU": cfg.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=cfg.run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
        ),
    )


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Fit (resuming ``cfg.run_name`` if it has checkpoints), write ``metrics.jsonl`` into the run
    folder (``<storage_path>/<run_name>/``) and return a summary dict: ``run_name``,
    ``metrics`` (last report), ``checkpoint`` (path of the latest), ``history`` (metrics.jsonl
    records) and ``starts`` (the step each (re)start began at)."""
    result = build_trainer(cfg).fit()
    summary: dict[str, Any] = {"run_name": cfg.run_name, "metrics": dict(result.metrics or {})}
    if result.checkpoint is not None:
        summary["checkpoint"] = result.checkpoint.path
        with result.checkpoint.as_directory() as d:
            log = Path(d) / METRICS_FILE
            if log.is_file():
                text = log.read_text()
                summary["history"] = [json.loads(x) for x in text.splitlines() if x.strip()]
                _write_run_file(cfg, METRICS_FILE, text)
    hist = summary.get("history", [])
    summary["starts"] = [r["step"] for r in hist if r.get("event") == "start"]
    return summary


def _write_run_file(cfg: TrainConfig, name: str, text: str) -> str:
    """Write ``text`` to ``<storage_path>/<run_name>/<name>`` (local folder or s3://)."""
    storage_path, fs = storage_for(cfg.storage_path)
    if fs is None and not cfg.storage_path.startswith("s3://"):
        path = Path(storage_path) / cfg.run_name / name
        path.write_text(text)
        return str(path)
    from pyarrow import fs as pafs

    if fs is None:
        fs, storage_path = pafs.FileSystem.from_uri(cfg.storage_path)
    path = f"{storage_path.rstrip('/')}/{cfg.run_name}/{name}"
    with fs.open_output_stream(path) as out:
        out.write(text.encode())
    return path


def final_table(summary: dict[str, Any]) -> str:
    """Text table: last training numbers, then the last validation of model vs bicubic."""
    m = summary.get("metrics", {})
    lines = [f"run {summary['run_name']}  checkpoint {summary.get('checkpoint', '-')}",
             f"(re)starts at steps {summary.get('starts', [])}"]
    for k in ("step", "total", "mse", "fft", "ndvi", "samples_per_s"):
        if k in m:
            lines.append(f"{k:>14}  {m[k]:.4f}" if isinstance(m[k], float) else f"{k:>14}  {m[k]}")
    val = [r for r in summary.get("history", []) if "val_psnr_rgb" in r]
    if val:
        r = val[-1]
        lines.append(f"validation at step {r['step']} (real L8-S2 pairs, never trained on):")
        lines.append(f"{'metric':>10} {'model':>9} {'bicubic':>9}")
        for k in ("psnr_rgb", "psnr_ir", "ssim_rgb", "ssim_ir", "ndvi_mse", "sam_deg"):
            if f"val_{k}" in r:
                lines.append(f"{k:>10} {r[f'val_{k}']:9.4f} {r.get(f'val_bicubic_{k}', float('nan')):9.4f}")
    return "\n".join(lines)


__all__ = ["build_trainer", "cluster_has_gpu", "final_table", "run_training", "storage_for"]
