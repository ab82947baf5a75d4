"""Where a store's values came from (its global attributes), with secrets kept out of them.

Every attribute written into a store passes :func:`scrub_secrets`: keys that name credentials
are dropped and credential values (the ``AWS_*`` keys of the environment, credential-named
storage options) are redacted wherever they occur, so no secret reaches the store's metadata.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lssr_ray.config import OUTPUT_BANDS
from lssr_ray.fileio import CREDENTIAL_KEY, secret_values


def _scrub(value: Any, secrets: Sequence[str]) -> Any:
    """Drop credential-named keys and redact credential values anywhere in ``value``."""
    if isinstance(value, Mapping):
        return {
            str(k): _scrub(v, secrets) for k, v in value.items() if not CREDENTIAL_KEY.search(str(k))
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, "<redacted>")
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def scrub_secrets(attrs: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``attrs`` without credential-named keys and with every known credential value (environment
    ``AWS_*`` keys, credential-named ``storage_options``) replaced by ``<redacted>``; numpy
    scalars become Python numbers (JSON-able)."""
    return _scrub(dict(attrs), secret_values(storage_options))


def provenance_attrs(
    source_granules: Sequence[str],
    base_hash: str,
    *,
    adapter_hash: str | None = None,
    engine: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Global attributes recording where the store's values came from.

    Args:
        source_granules: HLS granule ids (or URLs) read for this store.
        base_hash: sha256 of the frozen base model weights.
        adapter_hash: sha256 of the LoRA/aux adapter weights.
        engine: inference engine name (``"onnxruntime"``, ...).
        extra: any further JSON-able attributes (credential-looking keys are dropped when
            written, see :func:`scrub_secrets`).
    """
    import lssr_ray

    attrs: dict[str, Any] = {
        "title": "lssr-ray 10 m super-resolved surface reflectance",
        "Conventions": "CF-1.8",
        "source_granules": [str(g) for g in source_granules],
        "base_model_sha256": str(base_hash),
        "adapter_sha256": str(adapter_hash or ""),
        "software": f"lssr_ray {lssr_ray.__version__}",
        "software_version": lssr_ray.__version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "band_order": list(OUTPUT_BANDS),
    }
    if engine:
        attrs["engine"] = engine
    attrs.update(dict(extra or {}))
    return attrs


__all__ = ["provenance_attrs", "scrub_secrets"]
