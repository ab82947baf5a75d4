"""The Ray a mapping run uses: join a cluster or start a local one, and the non-secret
environment its workers need (S3 endpoint, GDAL settings, caches).

No secret goes into a Ray ``runtime_env`` (the Ray dashboard and state API show it): AWS keys,
session tokens, Earthdata tokens and credential-named options of ``LSSR_STORAGE_OPTIONS`` are
left out. Workers get credentials from their own node (the environment a local Ray started here
inherits, ``EARTHDATA_TOKEN_FILE``, ``~/.netrc``, an instance role) or from a credential provider
they set up themselves (:func:`lssr_ray.credentials.configure_archive_access`).

Workers' output reaches the driver (``log_to_driver``), so their errors show in ``ray job logs``;
it carries no secret because none travels to the workers by ``runtime_env`` and the store
attributes and records are scrubbed (:func:`lssr_ray.mapping.provenance.scrub_secrets`).
"""

from __future__ import annotations

import hashlib
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

_LOCAL_RAY: dict[str, Any] = {}  # the local Ray this module started: job id, forwarded env, secrets digest


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


def _secrets_digest() -> str:
    """A digest of the secret variables this process has (what a local Ray's workers inherit)."""
    env = os.environ
    names = sorted(k for k in env if SECRET_ENV.search(k))
    return hashlib.sha256(json.dumps([(k, env[k]) for k in names]).encode()).hexdigest()


def _local_ray_running() -> bool:
    """True while the Ray this process is connected to is the local one :func:`init_ray` started."""
    import ray

    return bool(_LOCAL_RAY) and ray.is_initialized() and _ray_identity() == _LOCAL_RAY["job"]


def _ray_identity() -> tuple[str, str]:
    """(node id, job id) of this driver: job ids restart at 1 in every new Ray, the node id is
    random per raylet, so a later Ray started by someone else is never taken for ours."""
    import ray

    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_job_id()


def runtime_env() -> dict[str, Any]:
    """Per-actor runtime env carrying the non-secret S3/GDAL settings; empty when the workers of
    a local Ray started here already inherited the same environment (idle workers are reused)."""
    env = forwarded_env()
    return {} if _local_ray_running() and env == _LOCAL_RAY["env"] else {"env_vars": env}


def configure_data_context() -> None:
    """Ray Data settings of a mapping run's driver, set before a stage's dataset executes.

    Ray Data's own progress bars are off: the job shows its own chip bar
    (:func:`~lssr_ray.mapping.accounting.progress_bar`), and the executor refreshes every
    operator's bar (or, without a terminal, logs them) from its scheduling loop, which runs in the
    driver about ten times a second whatever the chip rate; measured in ``bench/iowa_dry_run.py``.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.execution_options.verbose_progress = False


def init_ray(cfg: MapConfig) -> bool:
    """Connect to a cluster (``cfg.ray_address``, or ``auto`` inside ``ray job submit`` where
    ``RAY_ADDRESS`` is set) or start a local Ray with this machine's CPUs. True if it started one.
    A local Ray started earlier by this process is reused, or restarted when the credential
    variables changed since (its workers hold the old ones, and secrets never go by runtime_env)."""
    import ray

    if ray.is_initialized():
        if not _local_ray_running() or _LOCAL_RAY["secrets"] == _secrets_digest():
            return False
        # its workers inherited other credentials than this run has (none travel in runtime_env)
        log.info("restarting the local Ray: the credentials in the environment changed since it started")
        ray.shutdown()
    _LOCAL_RAY.clear()
    address = cfg.ray_address or ("auto" if os.environ.get("RAY_ADDRESS") else None)
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        from lssr_ray.ray_local import start_local_ray

        # a reaper takes this local Ray (agents included) down with the driver, even after SIGKILL;
        # its workers inherit this process's environment, credentials included, without runtime_env
        start_local_ray(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=True)
        _LOCAL_RAY.update(job=_ray_identity(), env=forwarded_env(), secrets=_secrets_digest())
    return True


__all__ = ["FORWARDED_ENV_PREFIXES", "SECRET_ENV", "configure_data_context", "forwarded_env", "init_ray", "runtime_env"]
