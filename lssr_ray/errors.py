"""The project's exceptions. Each message says what was wrong and what the valid choices are."""

from __future__ import annotations


class LssrError(Exception):
    """Base class for every error lssr-ray raises on purpose."""


class AOIError(LssrError, ValueError):
    """The area of interest is not a usable RFC 7946 polygonal GeoJSON."""


class CoverageError(LssrError):
    """The request falls outside what the catalog or a layer covers."""


class MissingDataError(LssrError, FileNotFoundError):
    """A band file, granule or layer the request needs does not exist or cannot be opened."""


class CRSMismatchError(LssrError):
    """Two inputs that must share a grid do not, and cannot be reconciled automatically."""


class StorageUnreachableError(LssrError, ConnectionError):
    """An object store (S3 endpoint) cannot be reached."""


class ConfigError(LssrError, ValueError):
    """A configuration value is out of range or names an unknown choice."""


class MissingExtraError(LssrError, ImportError):
    """An optional dependency is needed; the message names the extra to install."""


class ChipSkipped(LssrError):
    """A chip cannot be processed (all cloud, all nodata, corrupt source); recorded, not fatal.

    ``reason`` is a short machine-readable token (``"all_cloud"``, ``"nodata"``,
    ``"corrupt_source"``, ``"missing_granule"``) and the message says more.
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


class BatchError(LssrError, ValueError):
    """A batch dict does not follow the batch contract (docs/ARCHITECTURE.md): key, dtype, shape or range."""


class ProtocolError(LssrError, ValueError):
    """An evaluation would score ground the model trained on or its base was pretrained on."""
