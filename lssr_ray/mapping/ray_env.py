"""The Ray a mapping run uses: join a cluster or start a local one, and the non-secret
environment its workers need (S3 endpoint, GDAL settings, caches).

No secret goes into a Ray ``runtime_env`` (the Ray dashboard and state API show it): AWS keys,
session tokens, Earthdata tokens and credential-named options of ``LSSR_STORAGE_OPTIONS`` are
left out. Workers get credentials from their own node (the environment a local Ray started here
inherits, ``EARTHDATA_TOKEN_FILE``, ``~/.netrc``, an instance role) or from a credential provider
they set up themselves (:func:`lssr_ray.credentials.configure_archive_access`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from lssr_ray.config import MapConfig
from lssr_ray.fileio import CREDENTIAL_KEY, STORAGE_OPTIONS_ENV

log = logging.getLogger(__name__)

FORWARDED_ENV_PREFIXES = ("AWS_", "GDAL_", "CPL_", "LSSR_", "HF_")
"""Environment variables handed to Ray workers (S3 endpoint, GDAL settings, caches), secrets excepted."""
SECRET_ENV = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|BEARER|ACCESS_KEY|HEADERS|USERPWD", re.IGNORECASE)
"""Names of variables never forwarded (their values are, or lead to, secrets)."""

_LOCAL_RAY_ENV: dict[str, str] | None = None  # forwarded env of the local Ray this module started


def _public_storage_options(raw: str) -> str | None:
    """``LSSR_STORAGE_OPTIONS`` without credential-named options (None if it is not valid JSON:
    then it is not forwarded; the driver reports the error)."""
    def clean(v: Any) -> Any:
        return {k: clean(x) for k, x in v.items() if not CREDENTIAL_KEY.search(str(k))} if isinstance(v, dict) else v

    try:
        return json.dumps(clean(json.loads(raw)))
    except ValueError:
        return None


def forwarded_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The non-secret variables of ``env`` (default ``os.environ``) workers need."""
    env = dict(os.environ if env is None else env)
    out = {k: v for k, v in env.items() if k.startswith(FORWARDED_ENV_PREFIXES) and not SECRET_ENV.search(k)}
    if STORAGE_OPTIONS_ENV in out:
        public = _public_storage_options(out.pop(STORAGE_OPTIONS_ENV))
        if public is not None:
            out[STORAGE_OPTIONS_ENV] = public
    return out


def runtime_env() -> dict[str, Any]:
    """Per-actor runtime env carrying the non-secret S3/GDAL settings; empty when the workers of
    a local Ray started here already inherited the same environment (idle workers are reused)."""
    env = forwarded_env()
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

        # a reaper takes this local Ray (agents included) down with the driver, even after SIGKILL;
        # its workers inherit this process's environment, credentials included, without runtime_env
        start_local_ray(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        _LOCAL_RAY_ENV = forwarded_env()
    return True


__all__ = ["FORWARDED_ENV_PREFIXES", "SECRET_ENV", "forwarded_env", "init_ray", "runtime_env"]
