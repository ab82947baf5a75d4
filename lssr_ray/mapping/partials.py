"""Stage-1 chip results committed atomically, so a rerun can resume.

Each chip-date's result is one object ``<store>/_partials/t{ti:04d}/<chip_id>.npz`` (time step
``ti`` on the store's time axis; :func:`partial_path` owns the layout; an ``.npz`` zip without
pickles) holding:

* ``record``: a JSON string ``{"chip_id", "status": "ok"|"skipped", "reason", "detail",
  "window": [row_off, col_off, height, width] (output pixels, may be negative at grid edges),
  "granules": [...], "timing": {...}, "time_index", "created"}``
* ``sr`` (only when ``status == "ok"``): float32 (6, 3h, 3w) reflectance, NaN = nodata.
* trust layers (only when ``ok``, each optional): ``consistency``, ``uncertainty``, float32 of
  ``sr``'s shape (:mod:`lssr_ray.mapping.trust_layers`).

Pixel arrays are Blosc-zstd uint8 members (the record's ``encoding``: numcodecs codec, dtype, shape):
zlib (``savez_compressed``) cost the commit actor ~55 ms per chip, Blosc ~3 ms for a file as small.
Partials of earlier versions (float32 members, no ``encoding``) still load.

The object is the commit: a chip whose partial exists is done. Locally it is written under a
temporary name in the same directory and renamed (atomic on POSIX); on ``s3://`` it is one PUT
(S3 shows an object only once it is complete), so a crash never leaves a half-written partial.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lssr_ray.data.batch import PRESENT_KEYS
from lssr_ray.errors import StoreError, one_line
from lssr_ray.fileio import atomic_put, filesystem, is_remote

PARTIALS_DIR = "_partials"
"""Folder of per-chip partials inside the store."""
MANIFEST_DIR = "_manifest"
"""Folder of the run's work lists inside the store (:mod:`lssr_ray.mapping.manifest`): kept and
removed with ``_partials/``."""
SKIP_REASONS = ("all_cloud", "nodata", "corrupt_source", "missing_granule", "missing_object", "transient_read")
"""Machine-readable reasons a chip is skipped."""
RETRY_REASONS = ("transient_read",)
"""Skip reasons a resumed run retries (the read may succeed next time): such partials count as
committed for accounting but not as done (:func:`retryable_chip_ids`)."""
_SKIP_PARTIAL_MAX_BYTES = 16384  # a skip partial holds only its JSON record; larger ones are not skips
CHIP_ID = re.compile(r"^r(\d{4})c(\d{4})$")
PIXEL_CODEC = {"id": "blosc", "cname": "zstd", "clevel": 1, "shuffle": 2, "blocksize": 0}  # numcodecs config


def chip_id(row: int, col: int) -> str:
    """The stable chip id ``"r{row:04d}c{col:04d}"``."""
    if row < 0 or col < 0:
        raise StoreError(f"chip row/col must be >= 0, got ({row}, {col})")
    return f"r{row:04d}c{col:04d}"


def parse_chip_id(cid: str) -> tuple[int, int]:
    """``"r0003c0012"`` -> ``(3, 12)``."""
    m = CHIP_ID.match(str(cid))
    if not m:
        raise StoreError(
            f"bad chip id {cid!r}; expected 'r{{row:04d}}c{{col:04d}}' e.g. 'r0003c0012'"
        )
    return int(m.group(1)), int(m.group(2))


def partials_dir(store_url: str, time_index: int) -> str:
    """The folder of time step ``time_index``'s partials: ``<store>/_partials/t{ti:04d}``."""
    if int(time_index) < 0:
        raise StoreError(f"time index must be >= 0, got {time_index}")
    return "/".join([str(store_url).rstrip("/"), PARTIALS_DIR, f"t{int(time_index):04d}"])


def partial_path(store_url: str, time_index: int, cid: str) -> str:
    """URL or path of a chip-date's partial: ``<store>/_partials/t{ti:04d}/<chip_id>.npz``."""
    parse_chip_id(cid)
    return f"{partials_dir(store_url, time_index)}/{cid}.npz"


@dataclass(frozen=True)
class Partial:
    """One committed chip result."""

    record: dict[str, Any]
    """The JSON record (see the module docstring)."""
    sr: np.ndarray | None = field(default=None, repr=False)
    """float32 (6, 3h, 3w) reflectance, or None for a skipped chip."""
    layers: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Trust layers by name (float32 of ``sr``'s shape); empty for a skipped chip."""

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"


def commit_partial(
    store_url: str,
    time_index: int,
    cid: str,
    *,
    sr: np.ndarray | None = None,
    window: Sequence[int] | None = None,
    status: str = "ok",
    reason: str | None = None,
    detail: str = "",
    granules: Iterable[str] = (),
    timing: Mapping[str, float] | None = None,
    layers: Mapping[str, np.ndarray] | None = None,
    present: Sequence[float] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Commit one chip-date's result atomically; returns the partial's URL/path.

    Args:
        store_url: the output store (local path or s3:// URL).
        time_index: index on the store's time axis this result belongs to.
        cid: chip id ``"r{row:04d}c{col:04d}"``.
        sr: float32 (6, 3h, 3w) prediction for the chip (core + halo), required when ``ok``.
        window: ``(row_off, col_off, height, width)`` of ``sr`` on the output grid, pixels.
        status: ``"ok"`` or ``"skipped"``.
        reason: for skipped chips, one of :data:`SKIP_REASONS`.
        granules: input granule ids the chip was made from.
        timing: seconds per step, e.g. ``{"read_s": 0.4, "infer_s": 1.2}``.
        layers: trust layers of an ``ok`` chip by name, each of ``sr``'s shape.
        present: the chip's dem / landcover / sar presence flags (batch contract ``present``);
            recorded as ``modalities`` (the names of the layers it had).
    """
    parse_chip_id(cid)
    if status not in ("ok", "skipped"):
        raise StoreError(f"status must be 'ok' or 'skipped', got {status!r}")
    arrays: dict[str, np.ndarray] = {}
    if status == "ok":
        if sr is None or np.ndim(sr) != 3:
            raise StoreError(f"chip {cid}: an ok partial needs sr of shape (6, 3h, 3w)")
        arrays["sr"] = np.ascontiguousarray(sr, dtype="float32")
        if window is not None and tuple(window[2:]) != arrays["sr"].shape[1:]:
            raise StoreError(
                f"chip {cid}: window {tuple(window)} does not match sr {arrays['sr'].shape}"
            )
        for name, arr in dict(layers or {}).items():
            if name in ("sr", "record") or np.shape(arr) != arrays["sr"].shape:
                raise StoreError(f"chip {cid}: layer {name!r} of shape {np.shape(arr)} must be named other "
                                 f"than sr/record and match sr {arrays['sr'].shape}")
            arrays[name] = np.ascontiguousarray(arr, dtype="float32")
        reason = None
    elif reason not in SKIP_REASONS:
        raise StoreError(f"chip {cid}: skip reason {reason!r} unknown; valid: {SKIP_REASONS}")
    record = {
        "chip_id": cid,
        "status": status,
        "reason": reason,
        "detail": str(detail),
        "window": [int(v) for v in window] if window is not None else None,
        "granules": [str(g) for g in granules],
        "timing": {str(k): float(v) for k, v in dict(timing or {}).items()},
        "time_index": int(time_index),
        **({"modalities": [k for k, v in zip(PRESENT_KEYS, present) if float(v) > 0]} if present is not None else {}),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    pixels = {name: _encode(arr) for name, arr in arrays.items()}
    if pixels:
        record["encoding"] = {name: enc for name, (_, enc) in pixels.items()}
    url = partial_path(store_url, time_index, cid)
    atomic_put(url, _npz_bytes(record, {name: data for name, (data, _) in pixels.items()}), storage_options)
    return url


def _encode(arr: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    from numcodecs import get_codec

    data = get_codec(dict(PIXEL_CODEC)).encode(arr)
    return np.frombuffer(data, np.uint8), {"codec": dict(PIXEL_CODEC), "dtype": arr.dtype.str, "shape": list(arr.shape)}


def _decode(member: np.ndarray, enc: Mapping[str, Any] | None) -> np.ndarray:
    from numcodecs import get_codec

    if enc is None:  # a partial of an earlier version: the member is the array
        return member
    return get_codec(dict(enc["codec"])).decode(member, out=np.empty(enc["shape"], np.dtype(enc["dtype"])))


def _npz_bytes(record: Mapping[str, Any], members: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` with the record deflated and the (Blosc) pixel members stored as they are."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in {"record": np.array(json.dumps(record)), **members}.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if name == "record" else zipfile.ZIP_STORED
            with zf.open(info, "w") as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
    return buf.getvalue()


def load_partial(
    store_url: str,
    time_index: int,
    cid: str,
    *,
    with_sr: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> Partial | None:
    """Read one chip-date's partial (``with_sr=False``: the record only); None if not committed."""
    url = partial_path(store_url, time_index, cid)
    fs, path = filesystem(url, storage_options)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            record = json.loads(str(npz["record"]))
            enc = record.get("encoding", {})
            arrays = {k: _decode(npz[k], enc.get(k)) for k in npz.files if k != "record"} if with_sr else {}
    except (zipfile.BadZipFile, ValueError, KeyError, RuntimeError, EOFError) as exc:
        raise StoreError(f"partial {url} is unreadable ({one_line(exc)}); delete it and rerun with the same "
                         "settings: the resumed run computes that chip-date again") from exc
    sr = arrays.pop("sr", None)
    return Partial(record=record, sr=sr, layers=arrays)


def done_chip_ids(store_url: str, time_index: int, *,
                  storage_options: Mapping[str, Any] | None = None) -> set[str]:
    """Ids of chips with a committed partial (ok or skipped) at time step ``time_index``: a
    resumed run skips these."""
    return {chip for chip, _ in _committed_files(store_url, time_index, storage_options)}


def _committed_files(store_url: str, time_index: int,
                     storage_options: Mapping[str, Any] | None) -> list[tuple[str, int]]:
    """``(chip id, size in bytes)`` of every committed partial at ``time_index`` (fresh listing)."""
    url = partials_dir(store_url, time_index)
    fs, folder = filesystem(url, storage_options)
    try:
        entries = fs.ls(folder, detail=True, refresh=True) if is_remote(url) else fs.ls(folder, detail=True)
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        base = str(entry["name"]).rsplit("/", 1)[-1]
        if base.endswith(".npz") and CHIP_ID.match(base[:-4]):
            out.append((base[:-4], int(entry.get("size") or 0)))
    return out


def retryable_chip_ids(store_url: str, time_index: int, *,
                       storage_options: Mapping[str, Any] | None = None) -> set[str]:
    """Ids of chips at ``time_index`` whose committed partial is a skip with a
    :data:`RETRY_REASONS` reason. Only small partials (skips hold no arrays) are opened, so a
    resume does not read every partial of a large run."""
    out = set()
    for chip, size in _committed_files(store_url, time_index, storage_options):
        if size > _SKIP_PARTIAL_MAX_BYTES:
            continue
        p = load_partial(store_url, time_index, chip, with_sr=False, storage_options=storage_options)
        if p is not None and p.record.get("status") == "skipped" and p.record.get("reason") in RETRY_REASONS:
            out.add(chip)
    return out


def remove_partials(store_url: str, *, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Delete the store's ``_partials/`` and ``_manifest/`` (a completed run's last step: the
    blended store holds everything they held, and a resumed complete run needs none of them);
    True if there were any partials."""
    removed = False
    for name in (MANIFEST_DIR, PARTIALS_DIR):  # partials last: their presence marks a resumable run
        fs, folder = filesystem("/".join([str(store_url).rstrip("/"), name]), storage_options)
        fs.invalidate_cache(folder)  # s3fs caches listings: what another writer just added counts too
        if fs.exists(folder):
            fs.rm(folder, recursive=True)
            removed = name == PARTIALS_DIR
    return removed


def partials_present(store_url: str, *, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True if the store holds a ``_partials/`` folder (a run that is still resumable)."""
    fs, folder = filesystem("/".join([str(store_url).rstrip("/"), PARTIALS_DIR]), storage_options)
    fs.invalidate_cache(folder)
    return bool(fs.exists(folder))


def load_neighbourhood(
    store_url: str,
    time_index: int,
    row: int,
    col: int,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[tuple[int, int], np.ndarray | None]:
    """Predictions of chip (row, col) and its 8 neighbours at time step ``time_index``, keyed by
    offset (dr, dc).

    Missing, skipped or off-grid neighbours map to None. This is the input of
    :func:`lssr_ray.mapping.blend.blend_chunk` for output chunk (row, col).
    """
    return load_neighbourhood_layers(store_url, time_index, row, col, ("sr",), storage_options=storage_options)["sr"]


def load_neighbourhood_layers(
    store_url: str,
    time_index: int,
    row: int,
    col: int,
    names: Sequence[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, dict[tuple[int, int], np.ndarray | None]]:
    """:func:`load_neighbourhood` for several arrays of each partial (``"sr"`` and trust layers),
    each partial read once: ``{name: {(dr, dc): array or None}}``; a partial without a layer
    (e.g. committed before the layer existed) gives None for it."""
    out: dict[str, dict[tuple[int, int], np.ndarray | None]] = {n: {} for n in names}
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r, c = row + dr, col + dc
            p = (None if r < 0 or c < 0
                 else load_partial(store_url, time_index, chip_id(r, c), storage_options=storage_options))
            arrays = {"sr": p.sr, **p.layers} if p is not None and p.ok else {}
            for n in names:
                out[n][(dr, dc)] = arrays.get(n)
    return out


def record_counts(store_url: str, time_index: int, chip_ids: Iterable[str], *,
                  storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`summarize`'s counts over the partials of ``chip_ids`` at one time step (each
    record read; a partial gone meanwhile is passed over)."""
    counts: dict[str, int] = {"ok": 0, "skipped": 0}
    reasons: dict[str, int] = {}
    modalities: dict[int, dict[str, int]] = {}
    for cid in sorted(chip_ids):
        p = load_partial(store_url, time_index, cid, with_sr=False, storage_options=storage_options)
        if p is None:
            continue
        counts[p.record["status"]] = counts.get(p.record["status"], 0) + 1
        if p.record.get("reason"):
            reasons[p.record["reason"]] = reasons.get(p.record["reason"], 0) + 1
        if "modalities" in p.record:  # ok chips committed by this version
            m = modalities.setdefault(int(time_index), {"chips": 0, **dict.fromkeys(PRESENT_KEYS, 0)})
            m["chips"] += 1
            for k in p.record["modalities"]:
                m[k] += 1
    return {"chip_dates_ok": counts["ok"], "chip_dates_skipped": counts["skipped"], "skip_reasons": reasons,
            "modalities_by_time": modalities}


def merge_counts(tables: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of :func:`record_counts` tables (any split of the partials: dates, shards)."""
    out: dict[str, Any] = {"chip_dates_ok": 0, "chip_dates_skipped": 0, "skip_reasons": {}, "modalities_by_time": {}}
    for t in tables:
        out["chip_dates_ok"] += int(t["chip_dates_ok"])
        out["chip_dates_skipped"] += int(t["chip_dates_skipped"])
        for r, n in t["skip_reasons"].items():
            out["skip_reasons"][r] = out["skip_reasons"].get(r, 0) + int(n)
        for ti, m in t["modalities_by_time"].items():
            acc = out["modalities_by_time"].setdefault(int(ti), dict.fromkeys(m, 0))
            for k, n in m.items():
                acc[k] = acc.get(k, 0) + int(n)
    out["modalities_by_time"] = dict(sorted(out["modalities_by_time"].items()))
    return out


def summarize(store_url: str, n_times: int, *,
              storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Counts of ok / skipped chip-dates and skip reasons over time steps ``0 .. n_times - 1``
    (for the store's attributes): ``{"chip_dates_ok", "chip_dates_skipped", "skip_reasons",
    "modalities_by_time"}``; the last is ``{ti: {"chips": ok chips, "dem": n, "landcover": n,
    "sar": n}}`` (chips that had each aux layer). Reads every record in this process, one date
    at a time; a run uses :func:`lssr_ray.mapping.manifest.summarize_parallel` (same result)."""
    return merge_counts(record_counts(store_url, ti, done_chip_ids(store_url, ti, storage_options=storage_options),
                                      storage_options=storage_options) for ti in range(int(n_times)))


__all__ = [
    "MANIFEST_DIR",
    "PARTIALS_DIR",
    "RETRY_REASONS",
    "SKIP_REASONS",
    "Partial",
    "chip_id",
    "commit_partial",
    "done_chip_ids",
    "load_neighbourhood",
    "load_neighbourhood_layers",
    "load_partial",
    "merge_counts",
    "parse_chip_id",
    "partial_path",
    "partials_dir",
    "partials_present",
    "record_counts",
    "remove_partials",
    "retryable_chip_ids",
    "summarize",
]
