"""Checks of a training run's inputs in the driver, before Ray or Ray Train start.

A bad pairs store or storage path must be one line naming the value, not Ray Train starting its
workers and retrying ``max_failures`` times before the same error surfaces in a 200-line trace.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from lssr_ray.config import TrainConfig
from lssr_ray.errors import ConfigError, MissingDataError
from lssr_ray.fileio import check_reachable, filesystem, is_s3


def check_storage_path(storage_path: str) -> None:
    """:class:`ConfigError` unless ``storage_path`` is (or can become) a writable local folder, or an
    ``s3://`` prefix in an existing bucket on a reachable endpoint."""
    from lssr_ray.train.trainer import storage_for

    if is_s3(storage_path):
        check_reachable(storage_path)
        bucket = storage_path[len("s3://"):].split("/", 1)[0]
        fs, _ = filesystem(storage_path)
        if not bucket or not fs.exists(bucket):
            raise ConfigError(f"storage_path {storage_path}: bucket {bucket!r} does not exist; create it "
                              "or give another storage_path (local folder or s3://bucket/prefix)")
        return
    if "://" in storage_path:
        raise ConfigError(f"storage_path {storage_path}: only local folders and s3:// are supported")
    local = Path(storage_for(storage_path)[0])
    blocker = next((p for p in (local, *local.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"storage_path {storage_path}: {blocker} is a file, not a folder; give a folder")
    try:
        local.mkdir(parents=True, exist_ok=True)
        probe = local / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"storage_path {storage_path}: cannot write there ({exc.strerror or exc}); "
                          "give a writable folder") from exc


def check_train_inputs(cfg: TrainConfig) -> None:
    """Pairs stores (opened: exists and is a pairs store), base folder and storage path, each
    a one-line :class:`~lssr_ray.errors.LssrError`. Needs no Ray."""
    from lssr_ray.data.pairs import open_pairs
    from lssr_ray.model.base import resolve_base
    from lssr_ray.train.trainer import _resolve

    for name in ("pairs", "val_pairs"):
        url = getattr(cfg, name)
        if url is None:
            continue
        check_reachable(str(url))
        try:
            open_pairs(_resolve(str(url)))
        except MissingDataError as exc:
            raise MissingDataError(f"{name}: {exc}") from exc
    if not str(cfg.base).startswith("s3://"):
        resolve_base(_resolve(cfg.base))  # a missing local base folder; an s3:// base is fetched by the workers
    check_storage_path(cfg.storage_path)


__all__ = ["check_storage_path", "check_train_inputs"]
