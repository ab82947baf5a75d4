"""The one folder hash: sha256 over a model folder's settings and weights, cached next to them.

Run identities (``adapter_sha256``, ``base_model_sha256`` in store attributes) and the base
fingerprint recorded in every adapter checkpoint are this hash, so its bytes must never change:
(relative file name, file bytes) of every ``*.json`` and ``*.safetensors`` file, in a fixed order.
READMEs, training logs and other files are not part of it.

An SD-2.1-size base is 3.5-5 GB, so hashing it on every worker load costs tens of seconds. The
result is kept in :data:`CACHE_NAME` inside the folder, keyed (like ``make``) by each hashed file's
name, size and modification time: a second load stats the files and reads none; a file written,
added or removed changes the key and the folder is hashed again. The cache file's name has no
hashed suffix, so it never changes the hash. A read-only folder is hashed every time (no error).

An ``s3://`` base is copied into a local cache (:func:`lssr_ray.model.base.resolve_base`); local
mtimes say nothing about the source, so that copy is keyed by :func:`object_listing` (each
object's name, size and ETag): a changed object is downloaded again, which in turn invalidates
the folder hash cached in the copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HASHED_SUFFIXES = (".json", ".safetensors")
"""What a model folder's identity is made of: settings and weights."""
CACHE_NAME = ".lssr-fingerprint.cache"
"""Per-folder JSON cache of :func:`folder_sha256` results (see the module docstring)."""


def hashed_files(root: Path, subfolders: Sequence[str] | None) -> list[Path]:
    """The files :func:`folder_sha256` hashes, in hashing order."""
    if subfolders is None:
        return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in HASHED_SUFFIXES)
    return [f for sub in subfolders for f in sorted((root / sub).glob("*"))
            if f.is_file() and f.suffix in HASHED_SUFFIXES]


def files_sha256(root: Path, files: Sequence[Path]) -> str:
    """Hex sha256 over (name relative to ``root``, bytes) of each file in order."""
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _stat_key(root: Path, files: Sequence[Path], subfolders: Sequence[str] | None) -> str:
    """What the cached hash is valid for: the selection and each file's (name, size, mtime)."""
    stats = [[str(f.relative_to(root)), st.st_size, st.st_mtime_ns] for f in files for st in [f.stat()]]
    blob = json.dumps({"subfolders": None if subfolders is None else list(subfolders), "files": stats})
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, entries: dict) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)  # atomic: concurrent workers never read half a cache
    except OSError as exc:  # read-only model folder: correct, just not cached
        tmp.unlink(missing_ok=True)
        log.debug("fingerprint cache not written to %s: %s", path, exc)


def object_listing(fs: Any, prefix: str) -> dict[str, list]:
    """``{name under prefix: [size, ETag]}`` of every object under ``prefix`` (a path without
    protocol on an fsspec filesystem): one listing request per 1000 objects, no object read."""
    base = prefix.rstrip("/") + "/"
    return {str(name).removeprefix(base): [int(info.get("size") or 0), str(info.get("ETag") or "").strip('"')]
            for name, info in sorted(fs.find(base, detail=True).items()) if info.get("type") != "directory"}


def folder_sha256(folder: str | os.PathLike, *, subfolders: Sequence[str] | None = None,
                  cache: bool = True) -> str:
    """Hex sha256 over the ``*.json`` / ``*.safetensors`` files of ``folder``.

    ``subfolders`` None: every such file under ``folder`` at any depth, sorted by path (adapter
    checkpoints). Otherwise only the files directly inside each listed subfolder (``""`` = the
    root), subfolder by subfolder in the given order, sorted by name within each (the SD base:
    :data:`lssr_ray.model.base.FINGERPRINT_SUBFOLDERS`). ``cache``: reuse / record the result in
    :data:`CACHE_NAME` (see the module docstring).
    """
    root = Path(folder)
    files = hashed_files(root, subfolders)
    if not cache:
        return files_sha256(root, files)
    cache_path = root / CACHE_NAME
    selection = json.dumps(None if subfolders is None else list(subfolders))
    key = _stat_key(root, files, subfolders)
    entries = _read_cache(cache_path)
    hit = entries.get(selection)
    if isinstance(hit, dict) and hit.get("key") == key and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    digest = files_sha256(root, files)
    if _stat_key(root, files, subfolders) == key:  # not rewritten while it was read
        # one entry per selection (a base is hashed with one, an adapter folder with another)
        entries[selection] = {"key": key, "sha256": digest}
        _write_cache(cache_path, entries)
    return digest


__all__ = ["CACHE_NAME", "HASHED_SUFFIXES", "files_sha256", "folder_sha256", "hashed_files", "object_listing"]
