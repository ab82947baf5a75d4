"""Storage access for local paths and ``s3://`` URLs: the one module that builds filesystems
(fsspec/s3fs, pyarrow) and GDAL settings, and opens NetCDF files.

Per-URL settings (:func:`settings_for`) are s3fs keyword options (``endpoint_url``, ``key``,
``secret``, ``token``, ``anon``, ``client_kwargs``, ...) chosen by the longest configured prefix
that contains the URL, from two sources (a registration wins over the environment for the same
prefix):

* :func:`register_storage` (this process only), optionally with a *credential provider*: a
  callable ``provider(url) -> {"key": ..., "secret": ..., "token": ...}`` called on every
  :func:`settings_for`, so short-lived credentials are fetched fresh;
* the environment variable :data:`STORAGE_OPTIONS_ENV` (``LSSR_STORAGE_OPTIONS``), JSON
  ``{"s3://bucket/prefix": {...}}`` (non-secret settings only: it reaches Ray workers' runtime
  env; keys in it are stripped there, see :mod:`lssr_ray.mapping.ray_env`).

A prefix's ``"gdal"`` option (GDAL config options, e.g. :mod:`lssr_ray.credentials`' Earthdata
token on an ``https://`` prefix) goes to GDAL reads under that prefix only, never to fsspec.
Transient errors (HTTP 429/5xx) are retried with backoff by GDAL and botocore (``standard``
mode); connect timeouts stay short so an unreachable endpoint fails in seconds.

The S3 endpoint of a URL is, first found: the call's ``storage_options``, the prefix's
options, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` (botocore's own order), else AWS.
fsspec, pyarrow and GDAL all take it from here. GDAL's own ``AWS_S3_ENDPOINT`` etc. in the
environment still win over the ``AWS_ENDPOINT_URL*`` variables for GDAL (not over per-URL
settings). Credential values never appear in log records or error messages written here, and
:func:`secret_values` lists them for redaction (store attributes).
"""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lssr_ray.errors import ConfigError, MissingDataError, StorageUnreachableError

STORAGE_OPTIONS_ENV = "LSSR_STORAGE_OPTIONS"
"""Environment variable with per-prefix storage options, JSON ``{"s3://bucket/prefix": {...}}``."""
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Environment variables naming the S3 endpoint, most specific first (as botocore reads them)."""
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "EARTHDATA_TOKEN")
"""Environment variables holding credentials (AWS keys, the Earthdata token)."""
CREDENTIAL_KEY = re.compile(r"secret|password|passwd|token|access_key|credential|bearer|authorization|^key$",
                            re.IGNORECASE)
"""Option/attribute names whose values are credentials."""
NETCDF_ENGINES = ("h5netcdf", "netcdf4")
"""xarray engines tried in order by :func:`open_netcdf` (both decode the samples identically)."""

_GDAL_DEFAULTS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no bucket listing per open
    "GDAL_HTTP_TIMEOUT": "10",  # seconds; an unreachable endpoint must fail fast
    "GDAL_HTTP_CONNECTTIMEOUT": "3",
    # HTTP 429/5xx (GDAL's default retry codes) retried 3 times, 0.5 s then doubling: ~3.5 s
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
}
_GDAL_ENV_KEYS = ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING", "AWS_REGION", "AWS_NO_SIGN_REQUEST",
                  "GDAL_HTTP_TIMEOUT", "GDAL_HTTP_CONNECTTIMEOUT", "GDAL_HTTP_MAX_RETRY", "GDAL_HTTP_RETRY_DELAY",
                  "GDAL_HTTP_RETRY_CODES")
S3_RETRIES = {"max_attempts": 5, "mode": "standard"}
"""botocore retry config of every s3fs filesystem (throttling, 5xx, connection resets)."""

CredentialProvider = Callable[[str], Mapping[str, Any]]
"""``provider(url) -> s3fs credential options`` (``key``, ``secret``, ``token``) for that URL."""

_REGISTERED: dict[str, tuple[dict[str, Any], CredentialProvider | None]] = {}
_ISSUED: list[str] = []  # credential values handed out by providers, for secret_values()


# --------------------------------------------------------------------------- paths


def is_remote(url: str | os.PathLike) -> bool:
    """True for a URL with a scheme other than ``file://`` (``s3://``, ``memory://``, ...)."""
    s = str(url)
    return "://" in s and not s.startswith("file://")


def is_s3(url: str | os.PathLike | None) -> bool:
    """True for an ``s3://`` URL."""
    return url is not None and str(url).startswith("s3://")


def join(url: str | os.PathLike, *parts: str) -> str:
    """Join path parts onto a local path or URL with ``/``."""
    return "/".join([str(url).rstrip("/"), *parts])


# --------------------------------------------------------------------------- per-URL settings


def register_storage(prefix: str, options: Mapping[str, Any] | None = None, *,
                     credentials: CredentialProvider | None = None) -> None:
    """Use ``options`` (s3fs keywords) and credentials from ``credentials(url)`` for every URL
    under ``prefix`` (``s3://bucket`` or ``s3://bucket/path``) in this process."""
    if "://" not in prefix:
        raise ConfigError(f"storage prefix {prefix!r} needs a scheme, e.g. s3://bucket/prefix")
    _REGISTERED[prefix.rstrip("/")] = (dict(options or {}), credentials)


def unregister_storage(prefix: str) -> None:
    """Forget a :func:`register_storage` entry (no error if absent)."""
    _REGISTERED.pop(prefix.rstrip("/"), None)


def _env_prefixes(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    raw = env.get(STORAGE_OPTIONS_ENV)
    if not raw:
        return {}
    try:
        table = json.loads(raw)
    except ValueError as exc:  # the message must not echo the value: it may hold keys
        raise ConfigError(f"{STORAGE_OPTIONS_ENV} is not valid JSON (at char {getattr(exc, 'pos', '?')}); "
                          'expected {"s3://bucket/prefix": {"endpoint_url": ...}}') from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(f'{STORAGE_OPTIONS_ENV} must map URL prefixes to option objects: {{"s3://bucket": {{...}}}}')
    bad = [k for k in table if "://" not in k]
    if bad:
        raise ConfigError(f"{STORAGE_OPTIONS_ENV}: prefix {bad[0]!r} needs a scheme, e.g. s3://bucket")
    return {k.rstrip("/"): v for k, v in table.items()}


def _under(url: str, prefix: str) -> bool:
    return url == prefix or url.startswith(prefix + "/")


def _configured(url: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Options of the longest prefix holding ``url`` (provider credentials included)."""
    table = {p: (o, None) for p, o in _env_prefixes(env).items()}
    table.update(_REGISTERED)
    hits = [p for p in table if _under(url.rstrip("/"), p)]
    if not hits:
        return {}
    options, provider = table[max(hits, key=len)]
    out = dict(options)
    if provider is not None:
        creds = dict(provider(url))
        _ISSUED[:] = (_strings(creds) + _ISSUED)[:64]
        out.update(creds)
    return out


def _strings(table: Mapping[str, Any]) -> list[str]:  # values of table and its nested dicts
    return [x for v in table.values() for x in (_strings(v) if isinstance(v, Mapping) else [v]) if isinstance(x, str)]


def _secret_strings(table: Mapping[str, Any]) -> list[str]:  # credential-named values, nested too
    return [x for k, v in table.items() for x in (_secret_strings(v) if isinstance(v, Mapping) else
                                                  [v] if isinstance(v, str) and CREDENTIAL_KEY.search(k) else [])]


def env_endpoint(env: Mapping[str, str] | None = None) -> str | None:
    """``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else None."""
    env = os.environ if env is None else env
    return next((env[k] for k in ENDPOINT_ENV if env.get(k)), None)


def _endpoint_of(options: Mapping[str, Any]) -> str | None:
    return options.get("endpoint_url") or dict(options.get("client_kwargs") or {}).get("endpoint_url")


def settings_for(url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None, *,
                 env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """fsspec storage options for ``url``: the prefix's, then the call's ``storage_options``
    over them, and for ``s3://`` the endpoint from the environment when none is set.
    ``{}`` for a local path."""
    env = os.environ if env is None else env
    url = str(url)
    if not is_remote(url):
        return {}
    opts = {**_configured(url, env), **dict(storage_options or {})}
    opts.pop("gdal", None)  # GDAL's own options, for gdal_env only
    if is_s3(url):
        if not _endpoint_of(opts) and env_endpoint(env):
            opts["endpoint_url"] = env_endpoint(env)
        config = dict(opts.get("config_kwargs") or {})
        config.setdefault("retries", dict(S3_RETRIES))
        opts["config_kwargs"] = config
    return opts


def endpoint_for(url: str | None = None, storage_options: Mapping[str, Any] | None = None, *,
                 env: Mapping[str, str] | None = None) -> str:
    """``scheme://host:port`` of the S3 endpoint ``url`` is reached at (AWS when none is set)."""
    endpoint = _endpoint_of(settings_for(url, storage_options, env=env)) if url and is_s3(url) else None
    return endpoint or env_endpoint(env) or gdal_endpoint(url, storage_options, env=env)


def secret_values(storage_options: Mapping[str, Any] | None = None, *,
                  env: Mapping[str, str] | None = None) -> list[str]:
    """Credential values to redact: AWS credential variables, credential-named options of the
    call, of every configured prefix, and the last ones credential providers returned."""
    env = os.environ if env is None else env
    vals = [env.get(k, "") for k in CREDENTIAL_ENV] + list(_ISSUED)
    tables = [dict(storage_options or {}), *_env_prefixes(env).values(), *(o for o, _ in _REGISTERED.values())]
    for table in tables:
        vals += _secret_strings(table)
    return [v for v in dict.fromkeys(vals) if len(v) >= 4]


# --------------------------------------------------------------------------- filesystems


def filesystem(url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path without protocol) for a local path or URL (s3fs for ``s3://``)."""
    import fsspec

    return fsspec.core.url_to_fs(str(url), **settings_for(url, storage_options))


def zarr_store(url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> Any:
    """A zarr-python store object for a local path or URL."""
    import zarr

    if is_remote(url):
        return zarr.storage.FsspecStore.from_url(str(url), storage_options=settings_for(url, storage_options))
    return zarr.storage.LocalStore(str(url))


def pyarrow_filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[str, Any]:
    """(path, ``pyarrow.fs.S3FileSystem``) for an ``s3://`` URL with an endpoint or credentials
    configured, else ``(url, None)`` (Ray then builds its own filesystem from the URL)."""
    opts = settings_for(url, storage_options) if is_s3(url) else {}
    endpoint = _endpoint_of(opts)
    if not endpoint and not any(k in opts for k in ("key", "secret", "token", "anon")):
        return url, None
    from pyarrow import fs

    region = dict(opts.get("client_kwargs") or {}).get("region_name")
    kwargs: dict[str, Any] = {"region": region or os.environ.get("AWS_REGION", "us-east-1")}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    if opts.get("anon"):
        kwargs["anonymous"] = True
    else:
        kwargs.update(access_key=opts.get("key") or os.environ.get("AWS_ACCESS_KEY_ID"),
                      secret_key=opts.get("secret") or os.environ.get("AWS_SECRET_ACCESS_KEY"),
                      session_token=opts.get("token") or os.environ.get("AWS_SESSION_TOKEN"))
    return url[len("s3://"):], fs.S3FileSystem(**kwargs)


def atomic_put(url: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write ``data`` so readers see the old object or the whole new one, never a part: one PUT
    on object storage, a synced temporary file renamed into place locally."""
    fs, path = filesystem(url, storage_options)
    if is_remote(url):
        fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# --------------------------------------------------------------------------- GDAL


def endpoint_gdal_options(endpoint: str) -> dict[str, str]:
    """GDAL's spelling of an S3 endpoint ``scheme://host:port``: ``AWS_S3_ENDPOINT``,
    ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING=FALSE`` (path-style, as S3-compatible servers need)."""
    u = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    return {"AWS_S3_ENDPOINT": u.netloc, "AWS_HTTPS": "YES" if u.scheme == "https" else "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE"}


def gdal_options(url: str | None = None, storage_options: Mapping[str, Any] | None = None, *,
                 env: Mapping[str, str] | None = None) -> dict[str, str]:
    """GDAL config options for S3 and HTTP (short timeouts, retries with backoff).

    The endpoint (``http://host:port``) becomes ``AWS_S3_ENDPOINT=host:port``, ``AWS_HTTPS`` and
    ``AWS_VIRTUAL_HOSTING=FALSE``: from ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, overridden
    by GDAL's own variables in ``env`` (default ``os.environ``), overridden by the per-URL
    settings of ``url`` (``anon`` -> ``AWS_NO_SIGN_REQUEST=YES``).
    """
    env = os.environ if env is None else env
    return _gdal_config(_explicit(url, storage_options, env), env)


def _explicit(url: str | None, storage_options: Mapping[str, Any] | None, env: Mapping[str, str]) -> dict[str, Any]:
    """Per-URL options of a remote URL without the environment's endpoint (``{}`` otherwise)."""
    return {**_configured(str(url), env), **dict(storage_options or {})} if url and is_remote(url) else {}


def _gdal_config(explicit: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    opts = dict(_GDAL_DEFAULTS)
    if env_endpoint(env):
        opts.update(endpoint_gdal_options(env_endpoint(env)))
    opts.update({k: env[k] for k in _GDAL_ENV_KEYS if env.get(k)})
    if _endpoint_of(explicit):
        opts.update(endpoint_gdal_options(_endpoint_of(explicit)))
    if explicit.get("anon"):
        opts["AWS_NO_SIGN_REQUEST"] = "YES"
    opts.update({str(k): str(v) for k, v in dict(explicit.get("gdal") or {}).items()})
    return opts


def gdal_endpoint(url: str | None = None, storage_options: Mapping[str, Any] | None = None, *,
                  env: Mapping[str, str] | None = None) -> str:
    """The S3 endpoint GDAL uses for ``url``, as ``scheme://host:port`` (AWS when none is set)."""
    opts = gdal_options(url, storage_options, env=env)
    host = opts.get("AWS_S3_ENDPOINT", "s3.amazonaws.com")
    return f"{'https' if opts.get('AWS_HTTPS', 'YES').upper() != 'NO' else 'http'}://{host}"


def gdal_env(url: str | None = None, storage_options: Mapping[str, Any] | None = None, *,
             env: Mapping[str, str] | None = None) -> Any:
    """A :class:`rasterio.Env` with :func:`gdal_options` and the credentials of ``url`` (per-URL
    ``key``/``secret``/``token``, else the AWS variables) carried explicitly (rasterio refuses
    them as plain options), so reads in Ray workers and threads see the same settings."""
    import rasterio
    from rasterio.session import AWSSession

    env = os.environ if env is None else env
    creds = _explicit(url, storage_options, env)  # a credential provider is asked once
    opts = _gdal_config(creds, env)
    key = creds.get("key") or env.get("AWS_ACCESS_KEY_ID")
    secret = creds.get("secret") or env.get("AWS_SECRET_ACCESS_KEY")
    if creds.get("anon") or not (key and secret):
        return rasterio.Env(**opts)
    session = AWSSession(aws_access_key_id=key, aws_secret_access_key=secret,
                         aws_session_token=creds.get("token") or env.get("AWS_SESSION_TOKEN"),
                         region_name=dict(creds.get("client_kwargs") or {}).get("region_name")
                         or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
                         endpoint_url=opts.get("AWS_S3_ENDPOINT"))
    return rasterio.Env(session=session, **opts)


# --------------------------------------------------------------------------- reachability


def check_endpoint(endpoint: str, *, timeout: float = 2.0) -> None:
    """Raise :class:`StorageUnreachableError` if nothing accepts TCP connections at ``endpoint``."""
    u = urlparse(endpoint)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise StorageUnreachableError(
            f"S3 endpoint {endpoint} is unreachable ({exc.strerror or exc}); start it "
            "(e.g. `make s3-up`) or set AWS_ENDPOINT_URL to a running endpoint"
        ) from exc


def check_reachable(*urls: str | None, storage_options: Mapping[str, Any] | None = None) -> None:
    """:func:`check_endpoint` for the endpoint of every ``s3://`` URL given (others are ignored)."""
    for endpoint in dict.fromkeys(endpoint_for(u, storage_options) for u in urls if is_s3(u)):
        check_endpoint(endpoint)


# --------------------------------------------------------------------------- NetCDF


def open_netcdf(path: str | os.PathLike, *, mask_and_scale: bool = True, decode_times: bool = True) -> Any:
    """Open a NetCDF-4 file as an :class:`xarray.Dataset`, trying :data:`NETCDF_ENGINES` in order.

    :class:`MissingDataError` when the file is missing or no engine can read it (all reasons named).
    """
    import xarray as xr

    p = Path(path)
    if not p.is_file():
        raise MissingDataError(f"NetCDF file not found: {p}")
    errors = []
    for engine in NETCDF_ENGINES:
        try:
            return xr.open_dataset(p, engine=engine, mask_and_scale=mask_and_scale, decode_times=decode_times)
        except (ImportError, ValueError) as exc:  # engine not installed / cannot read this file
            errors.append(f"{engine}: {exc}")
    raise MissingDataError(f"cannot open NetCDF {p}: " + "; ".join(errors))


__all__ = [
    "CREDENTIAL_ENV", "CREDENTIAL_KEY", "ENDPOINT_ENV", "NETCDF_ENGINES", "S3_RETRIES", "STORAGE_OPTIONS_ENV",
    "CredentialProvider", "atomic_put", "check_endpoint", "check_reachable", "endpoint_for",
    "endpoint_gdal_options", "env_endpoint", "filesystem", "gdal_endpoint", "gdal_env", "gdal_options", "is_remote", "is_s3", "join",
    "open_netcdf", "pyarrow_filesystem", "register_storage", "secret_values", "settings_for",
    "unregister_storage", "zarr_store",
]
