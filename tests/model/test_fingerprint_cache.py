"""The base fingerprint is hashed once and cached next to the weights (keyed by size and mtime)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from lssr_ray.config import SMALL_BASE_DIR
from lssr_ray.model.base import FINGERPRINT_SUBFOLDERS, base_fingerprint
from lssr_ray.model.fingerprint import CACHE_NAME, folder_sha256


@pytest.fixture()
def base_copy(tmp_path):
    dest = tmp_path / "base"
    shutil.copytree(SMALL_BASE_DIR, dest, ignore=shutil.ignore_patterns(CACHE_NAME))
    return dest


def _weights(folder):
    return next((folder / "unet").glob("*.safetensors"))


def test_second_load_reads_no_weights_and_a_changed_file_rehashes(base_copy):
    fresh = folder_sha256(base_copy, subfolders=FINGERPRINT_SUBFOLDERS, cache=False)
    assert not (base_copy / CACHE_NAME).exists()
    assert base_fingerprint(base_copy) == fresh
    assert (base_copy / CACHE_NAME).is_file()

    # Same size, same mtime, different bytes: a second load that read the file would see the
    # change; the cached value proves it read nothing (the documented make-like trade-off).
    w = _weights(base_copy)
    st = w.stat()
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert base_fingerprint(base_copy) == fresh

    # A new mtime (any real write) invalidates: the folder is hashed again and the cache updated.
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    changed = base_fingerprint(base_copy)
    assert changed != fresh
    assert changed == folder_sha256(base_copy, subfolders=FINGERPRINT_SUBFOLDERS, cache=False)


def test_added_or_removed_file_invalidates_and_selections_are_cached_apart(base_copy):
    base = base_fingerprint(base_copy)
    everything = folder_sha256(base_copy)  # adapter-style selection: every file at any depth
    assert everything != base
    entries = json.loads((base_copy / CACHE_NAME).read_text())
    assert len(entries) == 2  # one entry per selection, neither evicts the other
    assert base_fingerprint(base_copy) == base and folder_sha256(base_copy) == everything

    extra = base_copy / "vae" / "extra.json"
    extra.write_text("{}")
    with_extra = base_fingerprint(base_copy)
    assert with_extra != base
    extra.unlink()
    assert base_fingerprint(base_copy) == base


def test_cache_file_never_changes_the_hash_and_a_corrupt_cache_is_rewritten(base_copy):
    before = folder_sha256(base_copy, cache=False)
    folder_sha256(base_copy)
    assert (base_copy / CACHE_NAME).is_file()
    assert folder_sha256(base_copy, cache=False) == before  # the cache file is not hashed

    (base_copy / CACHE_NAME).write_text("not json")  # a corrupt cache is ignored and rewritten
    assert folder_sha256(base_copy) == before
    assert json.loads((base_copy / CACHE_NAME).read_text())


def test_s3_base_copy_is_keyed_by_object_etags(s3_env, tmp_path):
    """An s3:// base is copied once; a second resolve only lists (no object read, same local
    files); a changed object (new ETag) is copied again and the fingerprint follows it."""
    import s3fs

    from lssr_ray.data import s3server
    from lssr_ray.model.base import resolve_base

    uri = "s3://lssr-test/bases/etag-base"
    s3server.upload_folder(SMALL_BASE_DIR, "lssr-test", endpoint_url=s3_env.endpoint_url, prefix="bases/etag-base")
    first = resolve_base(uri, cache_dir=tmp_path)
    fresh = base_fingerprint(first)
    assert fresh == folder_sha256(SMALL_BASE_DIR, subfolders=FINGERPRINT_SUBFOLDERS, cache=False)
    stamp = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file() and p.name != CACHE_NAME}
    assert resolve_base(uri, cache_dir=tmp_path) == first
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp  # nothing downloaded again
    assert base_fingerprint(first) == fresh

    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint_url)
    sched = "lssr-test/bases/etag-base/scheduler/scheduler_config.json"
    cfg = json.loads(fs.cat(sched))
    cfg["num_train_timesteps"] = cfg.get("num_train_timesteps", 1000) + 1
    fs.pipe(sched, json.dumps(cfg).encode())
    again = resolve_base(uri, cache_dir=tmp_path)
    assert json.loads((again / "scheduler" / "scheduler_config.json").read_text()) == cfg
    assert base_fingerprint(again) != fresh
