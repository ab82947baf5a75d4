"""Credentials for NASA Earthdata archives, each scoped to the URLs it is for.

Two kinds, both registered with :func:`lssr_ray.fileio.register_storage` on URL prefixes, so
no other host or bucket ever sees them (the user's ``--out s3://`` bucket keeps its own
identity: its prefix settings in ``LSSR_STORAGE_OPTIONS`` or the AWS variables):

* **https** (``LSSR_EARTHDATA_PREFIXES``, default :data:`LPDAAC_HTTPS`): an Earthdata Login
  bearer token (``EARTHDATA_TOKEN``, or the file named by ``EARTHDATA_TOKEN_FILE``) becomes
  GDAL's ``GDAL_HTTP_AUTH=BEARER`` + ``GDAL_HTTP_BEARER`` (GDAL >= 3.9); curl sends it to the
  prefix's host only, not to the signed S3/CloudFront URL the archive redirects to. Without a
  token, a netrc entry for ``urs.earthdata.nasa.gov`` (the file named by ``NETRC``, else
  ``~/.netrc``) is used through GDAL's ``GDAL_HTTP_NETRC_FILE`` with a cookie jar, as
  Earthdata Login's redirect flow needs.
* **s3** (``LSSR_ARCHIVE_S3_PREFIXES``, default :data:`LPDAAC_BUCKET`): temporary keys from
  the archive's ``s3credentials`` endpoint (``LSSR_S3CREDENTIALS_URL``, default
  :data:`LPDAAC_S3CREDENTIALS`), fetched with the same token or netrc login, cached and
  fetched again :attr:`S3CredentialProvider.refresh_margin_s` before they expire (they last
  one hour). Direct S3 reads of the archive work only in AWS us-west-2.

Nothing here is put in the environment: each process (the driver and every Ray worker) calls
:func:`configure_archive_access` itself and reads the token/netrc from its own node, so no
secret travels in a Ray ``runtime_env``. Secret values never appear in messages raised here.
"""

from __future__ import annotations

import datetime as _dt
import json
import netrc
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lssr_ray.errors import AuthenticationError, ConfigError, TransientReadError
from lssr_ray.fileio import register_storage, unregister_storage

EARTHDATA_TOKEN_ENV = "EARTHDATA_TOKEN"
"""Environment variable holding an Earthdata Login bearer token."""
EARTHDATA_TOKEN_FILE_ENV = "EARTHDATA_TOKEN_FILE"
"""Environment variable naming a file that holds the token (on each node; nothing is forwarded)."""
NETRC_ENV = "NETRC"
"""Environment variable naming the netrc file (default ``~/.netrc``), as curl and Python read it."""
EARTHDATA_LOGIN_HOST = "urs.earthdata.nasa.gov"
"""The netrc machine of Earthdata Login."""
LOGIN_URL_ENV = "LSSR_EARTHDATA_LOGIN_URL"
"""Earthdata Login's URL (default ``https://urs.earthdata.nasa.gov``; e.g. the UAT environment);
its host is the netrc machine looked up."""
HTTPS_PREFIXES_ENV = "LSSR_EARTHDATA_PREFIXES"
"""Comma-separated https URL prefixes that get Earthdata credentials."""
S3_PREFIXES_ENV = "LSSR_ARCHIVE_S3_PREFIXES"
"""Comma-separated ``s3://`` prefixes read with the archive's temporary keys."""
S3CREDENTIALS_URL_ENV = "LSSR_S3CREDENTIALS_URL"
"""The endpoint handing out the archive's temporary S3 keys."""
LPDAAC_HTTPS = "https://data.lpdaac.earthdatacloud.nasa.gov"
LPDAAC_BUCKET = "s3://lp-prod-protected"
LPDAAC_S3CREDENTIALS = "https://data.lpdaac.earthdatacloud.nasa.gov/s3credentials"
AUTH_FIX = (f"set {EARTHDATA_TOKEN_ENV} (or {EARTHDATA_TOKEN_FILE_ENV}) to a current Earthdata Login token, "
            f"or add a 'machine {EARTHDATA_LOGIN_HOST}' entry to ~/.netrc")
"""What to do about an authentication failure on the archive."""


def _split(value: str | None, default: str) -> list[str]:
    return [p.strip().rstrip("/") for p in (value or default).split(",") if p.strip()]


def earthdata_token(env: Mapping[str, str] | None = None) -> str | None:
    """The Earthdata token: ``EARTHDATA_TOKEN``, else the content of ``EARTHDATA_TOKEN_FILE``."""
    env = os.environ if env is None else env
    if env.get(EARTHDATA_TOKEN_ENV, "").strip():
        return env[EARTHDATA_TOKEN_ENV].strip()
    path = env.get(EARTHDATA_TOKEN_FILE_ENV)
    if not path:
        return None
    try:
        return Path(path).expanduser().read_text().strip() or None
    except OSError as exc:
        raise ConfigError(f"{EARTHDATA_TOKEN_FILE_ENV}={path} cannot be read ({exc.strerror})") from None


def login_url(env: Mapping[str, str] | None = None) -> str:
    """Earthdata Login's URL (:data:`LOGIN_URL_ENV`)."""
    env = os.environ if env is None else env
    return (env.get(LOGIN_URL_ENV) or f"https://{EARTHDATA_LOGIN_HOST}").rstrip("/")


def earthdata_netrc(env: Mapping[str, str] | None = None) -> Path | None:
    """The netrc file (``NETRC``, else ``~/.netrc``) if it has an Earthdata Login entry."""
    env = os.environ if env is None else env
    path = Path(env.get(NETRC_ENV) or Path.home() / ".netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(urlparse(login_url(env)).hostname or EARTHDATA_LOGIN_HOST)
    except (OSError, netrc.NetrcParseError):
        return None
    return path if entry else None


def https_gdal_options(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """GDAL HTTP options that authenticate an Earthdata https read ({} without credentials)."""
    token = earthdata_token(env)
    if token:
        return {"GDAL_HTTP_AUTH": "BEARER", "GDAL_HTTP_BEARER": token}
    path = earthdata_netrc(env)
    if path is None:
        return {}
    jar = str(Path(tempfile.gettempdir()) / f"lssr-earthdata-cookies-{os.getuid()}.txt")
    return {"GDAL_HTTP_NETRC": "YES", "GDAL_HTTP_NETRC_FILE": str(path),
            "GDAL_HTTP_COOKIEFILE": jar, "GDAL_HTTP_COOKIEJAR": jar}


class S3CredentialProvider:
    """Temporary S3 keys from an ``s3credentials`` endpoint, cached and refreshed before expiry.

    A :data:`lssr_ray.fileio.CredentialProvider`: ``provider(url)`` returns s3fs keywords
    ``{"key", "secret", "token"}``. The endpoint answers JSON ``{"accessKeyId",
    "secretAccessKey", "sessionToken", "expiration"}`` (``expiration`` like
    ``"2019-02-27 23:26:56+00:00"``). ``clock`` (seconds since the epoch) is injectable for tests.
    """

    def __init__(self, url: str = LPDAAC_S3CREDENTIALS, *, token: str | None = None,
                 netrc_file: str | os.PathLike | None = None, clock: Callable[[], float] = time.time,
                 refresh_margin_s: float = 300.0, timeout_s: float = 10.0,
                 login_url: str = f"https://{EARTHDATA_LOGIN_HOST}") -> None:
        if not token and not netrc_file:
            raise AuthenticationError(f"no Earthdata credentials to fetch S3 keys from {url}: {AUTH_FIX}")
        self.url, self.token, self.netrc_file, self.login_url = url, token, netrc_file, login_url.rstrip("/")
        self.clock, self.refresh_margin_s, self.timeout_s = clock, float(refresh_margin_s), float(timeout_s)
        self.fetches = 0
        self._keys: dict[str, str] | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def __call__(self, url: str = "") -> dict[str, str]:
        with self._lock:
            if self._keys is None or self.clock() >= self._expires - self.refresh_margin_s:
                self._keys, self._expires = self._fetch()
            return dict(self._keys)

    def _opener(self) -> urllib.request.OpenerDirector:
        handlers: list[Any] = [urllib.request.HTTPCookieProcessor(CookieJar())]
        if not self.token:  # Earthdata Login's redirect flow: basic auth to its host only, cookies back
            host = urlparse(self.login_url).hostname or EARTHDATA_LOGIN_HOST
            login = netrc.netrc(str(self.netrc_file)).authenticators(host)
            if login is None:
                raise AuthenticationError(f"{self.netrc_file} has no '{host}' entry: {AUTH_FIX}")
            passwords = urllib.request.HTTPPasswordMgrWithPriorAuth()
            passwords.add_password(None, self.login_url, login[0], login[2], is_authenticated=True)
            handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
        return urllib.request.build_opener(*handlers)

    def _fetch(self) -> tuple[dict[str, str], float]:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        if self.token:
            request.add_unredirected_header("Authorization", f"Bearer {self.token}")  # this host only
        try:
            with self._opener().open(request, timeout=self.timeout_s) as resp:
                body = json.loads(resp.read().decode())
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise AuthenticationError(
                    f"authentication failed at {self.url} (HTTP {exc.code}): {AUTH_FIX}") from None
            raise TransientReadError(f"cannot fetch S3 credentials from {self.url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise TransientReadError(f"cannot fetch S3 credentials from {self.url}: "
                                     f"{getattr(exc, 'reason', exc)}") from None
        except ValueError:
            raise AuthenticationError(f"{self.url} did not answer JSON credentials (a login page?): {AUTH_FIX}") from None
        names = ("accessKeyId", "secretAccessKey", "sessionToken", "expiration")
        if not isinstance(body, dict) or any(k not in body for k in names):
            raise AuthenticationError(f"{self.url} answered without {', '.join(names)}: {AUTH_FIX}")
        self.fetches += 1
        keys = {"key": body["accessKeyId"], "secret": body["secretAccessKey"], "token": body["sessionToken"]}
        return keys, _expiry(str(body["expiration"]))


def _expiry(text: str) -> float:
    when = _dt.datetime.fromisoformat(text.strip())  # Python 3.11 reads a trailing Z too
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.timestamp()


_CONFIGURED: dict[str, Any] = {}


def archive_prefix(url: str, env: Mapping[str, str] | None = None) -> str | None:
    """The Earthdata archive prefix (https or s3) ``url`` is under, or None."""
    env = os.environ if env is None else env
    prefixes = _split(env.get(HTTPS_PREFIXES_ENV), LPDAAC_HTTPS) + _split(env.get(S3_PREFIXES_ENV), LPDAAC_BUCKET)
    return next((p for p in prefixes if str(url) == p or str(url).startswith(p + "/")), None)


def configure_archive_access(env: Mapping[str, str] | None = None, *,
                             clock: Callable[[], float] = time.time) -> list[str]:
    """Register Earthdata credentials for the archive prefixes in this process; returns the
    prefixes registered (none without a token or netrc entry). Idempotent per setting: each
    Ray worker calls it when a UDF starts, so credentials come from the worker's own node."""
    env = os.environ if env is None else env
    token, path = earthdata_token(env), earthdata_netrc(env)
    https = _split(env.get(HTTPS_PREFIXES_ENV), LPDAAC_HTTPS)
    s3 = _split(env.get(S3_PREFIXES_ENV), LPDAAC_BUCKET)
    endpoint = env.get(S3CREDENTIALS_URL_ENV) or LPDAAC_S3CREDENTIALS
    key = (token, str(path), tuple(https), tuple(s3), endpoint, login_url(env))
    if _CONFIGURED.get("key") == key:
        return list(_CONFIGURED["prefixes"])
    for prefix in _CONFIGURED.get("prefixes", []):
        unregister_storage(prefix)
    prefixes: list[str] = []
    if token or path:
        gdal = https_gdal_options(env)
        for prefix in https:
            if urlparse(prefix).scheme not in ("https", "http"):  # http: loopback test servers
                raise ConfigError(f"{HTTPS_PREFIXES_ENV}: {prefix!r} is not an https:// prefix")
            register_storage(prefix, {"gdal": gdal})
        provider = S3CredentialProvider(endpoint, token=token, netrc_file=path, clock=clock, login_url=login_url(env))
        for prefix in s3:
            register_storage(prefix, {"client_kwargs": {"region_name": "us-west-2"}}, credentials=provider)
        prefixes = https + s3
    _CONFIGURED.update(key=key, prefixes=prefixes)
    return prefixes


__all__ = [
    "AUTH_FIX", "EARTHDATA_LOGIN_HOST", "EARTHDATA_TOKEN_ENV", "EARTHDATA_TOKEN_FILE_ENV", "HTTPS_PREFIXES_ENV",
    "LOGIN_URL_ENV", "LPDAAC_BUCKET", "LPDAAC_HTTPS", "LPDAAC_S3CREDENTIALS", "NETRC_ENV", "S3CREDENTIALS_URL_ENV",
    "S3_PREFIXES_ENV", "S3CredentialProvider", "archive_prefix", "configure_archive_access", "earthdata_netrc",
    "earthdata_token", "https_gdal_options", "login_url",
]
