"""The Ray a mapping run uses: join a cluster or start a local one, and the environment its
workers need (S3 endpoint and keys for GDAL and s3fs, caches)."""

from __future__ import annotations

import logging
import os
from typing import Any

from lssr_ray.config import MapConfig

log = logging.getLogger(__name__)

FORWARDED_ENV_PREFIXES = ("AWS_", "GDAL_", "CPL_", "LSSR_", "HF_")
"""Environment variables handed to Ray workers (S3 endpoint/keys for GDAL and s3fs, caches)."""

_LOCAL_RAY_ENV: dict[str, str] | None = None  # forwarded env of the local Ray this module started


def _forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def runtime_env() -> dict[str, Any]:
    """Per-actor runtime env carrying the S3/GDAL settings; empty when the workers of a local Ray
    started here already inherited the same environment (then idle workers can be reused)."""
    env = _forwarded_env()
    return {} if env == _LOCAL_RAY_ENV else {"env_vars": env}


def init_ray(cfg: MapConfig) -> bool:
    """Connect to a cluster (``cfg.ray_address``, or ``auto`` inside ``ray job submit`` where
    ``RAY_ADDRESS`` is set) or start a local Ray with this machine's CPUs. True if it started one."""
    import ray

    global _LOCAL_RAY_ENV
    if ray.is_initialized():
        return False
    _LOCAL_RAY_ENV = None
    address = cfg.ray_address or ("auto" if os.environ.get("RAY_ADDRESS") else None)
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=False)
    else:
        from lssr_ray.ray_local import start_local_ray

        # a reaper takes this local Ray (agents included) down with the driver, even after SIGKILL
        start_local_ray(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        _LOCAL_RAY_ENV = _forwarded_env()
    return True


__all__ = ["FORWARDED_ENV_PREFIXES", "init_ray", "runtime_env"]
