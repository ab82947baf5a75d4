"""What is at an output location (``--out``), and whether this project may write or replace it.

A mapping run only ever writes into a location that is **absent**, **empty**, or a store this
project wrote (:data:`STORE_MARKER` in the root group attributes; stores made before the marker
are recognised by their ``run_config`` attribute and ``software: lssr_ray ...``). Anything else
(a folder holding someone's files, a regular file, a Zarr group of another tool) is refused with
a one-line :class:`~lssr_ray.errors.StoreError` naming the path, also with ``--overwrite``:
``--overwrite`` replaces only a store of this project, so a folder of foreign files is never
emptied. A missing ``s3://`` bucket and an unwritable local prefix are refused the same way.

A location holding only a run lock (``_lock.json``) counts as empty: the lock is this
project's, and :meth:`~lssr_ray.mapping.lock.StoreLock.refuse_if_live` decides about it.

Every check here reads metadata only (a listing, a stat, one small JSON object) and runs in the
driver before the store is created and before Ray starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lssr_ray.errors import StoreError
from lssr_ray.fileio import filesystem, is_remote
from lssr_ray.mapping.lock import LOCK_NAME

STORE_MARKER = "lssr_ray_store"
"""Root-group attribute naming a store written by this project; its value is the format version."""
STORE_FORMAT_VERSION = 2
"""Store format version written under :data:`STORE_MARKER` (and part of the run identity).
2: crop_type with _FillValue 0, overviews/, _partials/ removed once complete (issue 14)."""

ABSENT, EMPTY, OURS = "absent", "empty", "ours"
"""States of an output location that a run may use."""


def is_project_store_attrs(attrs: Mapping[str, Any]) -> bool:
    """True if root attributes ``attrs`` are those of a store this project wrote (any version)."""
    if STORE_MARKER in attrs:
        return True
    # stores written before the marker existed: they all carry the run identity and the software
    return "run_config" in attrs and str(attrs.get("software", "")).startswith("lssr_ray")


def _root_attrs(fs: Any, path: str) -> dict[str, Any] | None:
    for name in (".zattrs", "zarr.json"):  # Zarr v2, or v3 (whose attributes sit in zarr.json)
        try:
            raw = fs.cat_file(f"{path}/{name}")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            return {}
        return dict(doc.get("attributes", {}) if name == "zarr.json" else doc)
    return None


def _local_state(path: str) -> str:
    p = Path(path)
    if p.is_file() or (p.exists() and not p.is_dir()):
        raise StoreError(f"--out {path} is a file, not a store folder; give a new path for the store")
    if not p.exists():
        parent = p.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise StoreError(f"--out {path}: {parent} is a file, not a folder; give a path in a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StoreError(f"--out {path}: cannot create it, {parent} is not writable; give a writable path")
        return ABSENT
    if not os.access(p, os.W_OK | os.X_OK):
        raise StoreError(f"--out {path} is not writable; give a writable path")
    return EMPTY if not [c for c in p.iterdir() if c.name != LOCK_NAME] else ""


def _remote_state(fs: Any, url: str, path: str) -> str:
    from lssr_ray.errors import StorageUnreachableError

    bucket = path.split("/", 1)[0]
    try:
        bucket_ok = fs.exists(bucket)
    except (PermissionError, OSError) as exc:
        if isinstance(exc, ConnectionError):
            raise StorageUnreachableError(f"--out {url}: storage unreachable ({exc})") from exc
        raise StoreError(f"--out {url}: cannot access bucket {bucket!r} ({type(exc).__name__}: {exc})") from exc
    if not bucket_ok:
        raise StoreError(f"--out {url}: bucket {bucket!r} does not exist; create it or give another --out")
    try:
        if fs.isfile(path):
            raise StoreError(f"--out {url} is an object, not a store prefix; give a new name for the store")
        listing = fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return ABSENT
    return EMPTY if not [k for k in listing if k.rstrip("/").rsplit("/", 1)[-1] != LOCK_NAME] else ""


def output_state(url: str, *, storage_options: Mapping[str, Any] | None = None) -> str:
    """``"absent"``, ``"empty"`` or ``"ours"`` (a store this project wrote) for ``url``.

    Raises :class:`StoreError` (one line naming ``url``) for anything else: a regular file, a
    folder or prefix holding other things, a missing bucket, an unwritable local prefix.
    """
    fs, path = filesystem(url, storage_options)
    path = path.rstrip("/")
    state = _remote_state(fs, str(url), path) if is_remote(url) else _local_state(path)
    if state:
        return state
    attrs = _root_attrs(fs, path)
    if attrs is not None and is_project_store_attrs(attrs):
        return OURS
    what = "a Zarr store this project did not write" if attrs is not None else "not empty and not an lssr-ray store"
    raise StoreError(
        f"--out {url} is {what}; refusing to write into it (--overwrite replaces only lssr-ray stores): "
        "give a new or empty path"
    )


SHARED_CHECK_TIMEOUT_S = 120.0
"""How long the shared-``--out`` check waits for every other node's answer."""


def unseen_by(token: str, answers: Mapping[str, str | None]) -> list[str]:
    """The nodes of ``answers`` (node id -> what it read from the marker, None if nothing) that
    did not read ``token``."""
    return sorted(node for node, got in answers.items() if got != token)


def refuse_unshared_out(url: str, token: str, answers: Mapping[str, str | None]) -> None:
    """:class:`StoreError` unless every other node read the driver's marker under ``url``."""
    blind = unseen_by(token, answers)
    if blind:
        raise StoreError(
            f"--out {url} is a local path that {len(blind)} of the cluster's other {len(answers)} node(s) cannot see "
            f"(e.g. node {blind[0][:12]}); on a multi-node cluster give s3://... or a path on storage every node mounts")


def _read_marker(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def check_out_shared(url: str) -> dict[str, str | None]:
    """On a multi-node Ray, prove that a local ``--out`` (an existing folder) is one storage for
    every node: the driver writes a marker into it and a task pinned to each other alive node
    reads it back; :class:`StoreError` (:func:`refuse_unshared_out`) if any node misses it.
    ``s3://`` and single-node clusters pass unchecked. Returns the answers (node id -> text read).

    Nodes added later by the autoscaler are not checked: give shared storage on autoscaling clusters.
    """
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if is_remote(url):
        return {}
    here = ray.get_runtime_context().get_node_id()
    others = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here]
    if not others:
        return {}
    token = uuid.uuid4().hex
    marker = Path(url).resolve() / f"_shared_check_{token}"
    marker.write_text(token)
    try:
        read = ray.remote(num_cpus=0, max_retries=0)(_read_marker)
        refs = {node: read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
            str(marker)) for node in others}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=SHARED_CHECK_TIMEOUT_S)
        done = set(ready)
        answers = {node: ray.get(ref) if ref in done else None for node, ref in refs.items()}
    finally:
        marker.unlink(missing_ok=True)
    refuse_unshared_out(url, token, answers)
    return answers


__all__ = [
    "ABSENT",
    "EMPTY",
    "OURS",
    "STORE_FORMAT_VERSION",
    "STORE_MARKER",
    "check_out_shared",
    "is_project_store_attrs",
    "output_state",
    "refuse_unshared_out",
    "unseen_by",
]
