"""The project's exceptions. Each message says what was wrong and what the valid choices are."""

from __future__ import annotations

import re


class LssrError(Exception):
    """Base class for every error lssr-ray raises on purpose."""


class AOIError(LssrError, ValueError):
    """The area of interest is not a usable RFC 7946 polygonal GeoJSON."""


class CoverageError(LssrError):
    """The request falls outside what the catalog or a layer covers."""


class MissingDataError(LssrError, FileNotFoundError):
    """A band file, granule or layer the request needs does not exist or cannot be opened."""

    skip_reason = "corrupt_source"
    """The chip skip reason a read failing with this error is recorded under."""


class CRSMismatchError(LssrError):
    """Two inputs that must share a grid do not, and cannot be reconciled automatically."""


class StorageUnreachableError(LssrError, ConnectionError):
    """An object store (S3 endpoint) cannot be reached."""


class AuthenticationError(LssrError, PermissionError):
    """Credentials are missing, wrong or expired for a URL (HTTP 401/403, S3 AccessDenied,
    ExpiredToken); the job stops and the message names the fix. Never a chip skip: every
    other chip would fail the same way."""


class MissingObjectError(MissingDataError):
    """The object a URL names does not exist (HTTP 404, S3 NoSuchKey): a recorded chip skip
    (``missing_object``)."""

    skip_reason = "missing_object"


class TransientReadError(MissingDataError):
    """A read failed with a server or network error (HTTP 429/5xx, timeout) after the storage
    client's retries: a recorded chip skip (``transient_read``) that ``--resume`` retries."""

    skip_reason = "transient_read"


class ConfigError(LssrError, ValueError):
    """A configuration value is out of range or names an unknown choice."""


class MissingExtraError(LssrError, ImportError):
    """An optional dependency is needed; the message names the extra to install."""


class ChipSkipped(LssrError):
    """A chip cannot be processed (all cloud, all nodata, corrupt source); recorded, not fatal.

    ``reason`` is a short machine-readable token (``"all_cloud"``, ``"nodata"``,
    ``"corrupt_source"``, ``"missing_granule"``, ``"missing_object"``, ``"transient_read"``)
    and the message says more.
    """

    def __init__(self, chip_id: str, reason: str, detail: str = "") -> None:
        self.chip_id = chip_id
        self.reason = reason
        self.detail = detail
        super().__init__(f"chip {chip_id} skipped ({reason}){': ' + detail if detail else ''}")


class StoreError(LssrError, ValueError):
    """An output store is missing, malformed, or a write does not fit its chunk grid."""


class StoreLockedError(StoreError):
    """Another run holds the output store's lock; the message names it and its heartbeat."""


class IncompleteRunError(LssrError):
    """A run stopped or stalled with planned chips not committed; what was committed is kept."""


class BatchError(LssrError, ValueError):
    """A batch dict does not follow the batch contract (docs/ARCHITECTURE.md): key, dtype, shape or range."""


class ProtocolError(LssrError, ValueError):
    """An evaluation would score ground the model trained on or its base was pretrained on."""


def read_skip_reason(errors: list[MissingDataError]) -> str:
    """The skip reason of a chip none of whose granules could be read: ``transient_read`` if
    any failure was transient (a retry may succeed), else ``missing_object`` if all objects
    were missing, else ``corrupt_source``; ``missing_granule`` when nothing was tried."""
    reasons = {getattr(e, "skip_reason", MissingDataError.skip_reason) for e in errors}
    if not reasons:
        return "missing_granule"
    for reason in (TransientReadError.skip_reason, MissingDataError.skip_reason):
        if reason in reasons:
            return reason
    return MissingObjectError.skip_reason


_REMOTE_ERROR = re.compile(r"^\s*lssr_ray\.errors\.(\w+): (.+?)\s*$", re.MULTILINE)


def _from_remote_text(text: str) -> LssrError | None:
    """The last ``lssr_ray.errors.<Name>: <message>`` line of a remote traceback, rebuilt."""
    for name, message in reversed(_REMOTE_ERROR.findall(text)):
        cls = globals().get(name)
        if isinstance(cls, type) and issubclass(cls, LssrError):
            err = cls.__new__(cls)
            Exception.__init__(err, message)
            return err
    return None


def user_error(exc: BaseException) -> LssrError | None:
    """The :class:`LssrError` behind ``exc``, or None when ``exc`` is not a user-facing error.

    Follows ``__cause__``/``__context__`` and the ``cause`` of Ray's wrappers. An error raised in
    a Ray worker reaches the driver as a ``RayTaskError`` whose text is the remote traceback; Ray
    Data even replaces the original by a ``UserCodeException``, so the original survives only as
    the traceback's last ``lssr_ray.errors.<Name>: <message>`` line, from which it is rebuilt.
    Jobs print its one-line message however deep it was raised.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    chain: list[BaseException] = []
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        chain.append(e)
        inner = getattr(e, "cause", None)
        inner = inner if isinstance(inner, BaseException) else None
        if isinstance(e, LssrError) and inner is None and "Traceback" not in str(e):
            return e
        todo += [inner, e.__cause__, e.__context__]
    for e in chain:
        found = _from_remote_text(str(e))
        if found is not None:
            return found
    return None


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (GDAL and storage clients may add line breaks)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
