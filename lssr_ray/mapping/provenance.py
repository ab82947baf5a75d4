"""Where a store's values came from (its global attributes), with secrets and local paths kept
out of them.

Every attribute written into a store passes :func:`scrub_secrets`: keys that name credentials
are dropped and credential values (the ``AWS_*`` keys of the environment, credential-named
storage options) are redacted wherever they occur, so no secret reaches the store's metadata;
absolute local paths anywhere in a text become :func:`~lssr_ray.config.portable_ref` (relative to
the checkout, or the name), so a store says the same wherever it was made and shows no one's
home directory (:func:`portable_text`).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lssr_ray.config import OUTPUT_BANDS, portable_ref
from lssr_ray.fileio import CREDENTIAL_KEY, secret_values

LOCAL_PATH = re.compile(r"(?<![\w.:/~-])/[^\s\"',;()\[\]{}<>]+")
"""An absolute POSIX path inside a text (not the path part of a URL: ``s3://b/k`` and
``https://h/p`` are preceded by ``/``; not ``km2/h``: preceded by a word character)."""


def portable_text(text: str) -> str:
    """``text`` with every absolute local path (one below an existing folder other than ``/``, so
    not GDAL's ``/vsis3/...``) replaced by its :func:`~lssr_ray.config.portable_ref`; other
    slashes are left alone."""
    def portable(m: re.Match[str]) -> str:
        token = m.group(0).rstrip(".")  # a path ending a sentence
        known = token
        while not os.path.exists(known):
            known = os.path.dirname(known)
        return m.group(0) if known == "/" else portable_ref(token) + m.group(0)[len(token):]

    return LOCAL_PATH.sub(portable, text)


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
        return portable_text(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def scrub_secrets(attrs: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``attrs`` without credential-named keys, with every known credential value (environment
    ``AWS_*`` keys, credential-named ``storage_options``) replaced by ``<redacted>`` and local
    paths made portable (:func:`portable_text`); numpy scalars become Python numbers (JSON-able)."""
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


__all__ = ["portable_text", "provenance_attrs", "scrub_secrets"]
