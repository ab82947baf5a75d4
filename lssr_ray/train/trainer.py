"""Build and run the Ray Train ``TorchTrainer`` for LSSR adapter fine-tuning."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from lssr_ray.config import REPO_ROOT, TrainConfig
from lssr_ray.train.loop import METRICS_FILE, train_loop_per_worker


def _resolve(path: str) -> str:
    """Local paths relative to the repository become absolute (workers run elsewhere)."""
    if "://" in path:
        return path
    p = Path(path)
    return str(p if p.is_absolute() else (REPO_ROOT / p).resolve())


def storage_for(path: str):
    """(storage_path, pyarrow filesystem or None); ``s3://`` honours ``AWS_ENDPOINT_URL``."""
    if not path.startswith("s3://"):
        return _resolve(path), None
    from pyarrow import fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return path, None
    scheme, _, host = endpoint.partition("://")
    s3 = fs.S3FileSystem(
        endpoint_override=host,
        scheme=scheme,
        region=os.environ.get("AWS_REGION", "us-east-1"),
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
    )
    return path[len("s3://"):], s3


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
    """Fit, then copy the metrics log next to the run and return a summary dict."""
    result = build_trainer(cfg).fit()
    summary: dict[str, Any] = {"run_name": cfg.run_name, "metrics": dict(result.metrics or {})}
    if result.checkpoint is not None:
        summary["checkpoint"] = result.checkpoint.path
        with result.checkpoint.as_directory() as d:
            log = Path(d) / METRICS_FILE
            if log.is_file():
                summary["history"] = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    return summary


def final_table(summary: dict[str, Any]) -> str:
    """A short text table of the last training and validation numbers."""
    m = summary.get("metrics", {})
    keys = ["step", "total", "mse", "fft", "ndvi", "val_total", "val_psnr_rgb", "val_psnr_ir", "samples_per_s"]
    rows = [f"{k:>14}  {m[k]:.4f}" if isinstance(m.get(k), float) else f"{k:>14}  {m.get(k)}" for k in keys if k in m]
    head = f"run {summary['run_name']}  checkpoint {summary.get('checkpoint', '-')}"
    return "\n".join([head, *rows])
