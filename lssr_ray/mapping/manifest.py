"""Where the work of a mapping run is listed: on the store, not in the driver.

For a state-size region a run is ~10^5 chip-dates; a driver that held one record per (read block,
date) or per (chunk, date) and handed the list to ``ray.data.from_items`` grew with the region
(issue 14, part 2). Instead:

* **stage 1** reads its work items from a *manifest* written by the driver one date at a time:
  ``<store>/_manifest/stage1/t{ti:04d}/p{k:06d}.jsonl``, one JSON line ``{"chips", "ti"}`` per
  read block still to compute (committed chip-dates left out, transient skips kept:
  :func:`~lssr_ray.mapping.plan.committed_at`). The driver keeps only the number of part files per
  date; Ray Data gets one tiny descriptor per part (at most :data:`MAX_PARTS` + one per date, whatever
  the region) and a task reads each part (:func:`stage1_source`).
* **stage 2** covers every chunk of every date on every run, so it needs no manifest: a flat index
  ``ti * n_chips + i`` over the plan's chip lattice, carried as two compact int32 arrays, is
  expanded to ``(row, col, ti)`` rows by the tasks (:func:`chunk_source`).
* **books**: completion is checked from per-date counts of committed partials
  (:func:`check_committed_counts`); the store's counts (:func:`summarize_parallel`) are computed by a
  Ray Data stage over the partial listing, shard by shard, merged in the driver.

The manifest lives and dies with ``_partials/`` (:func:`~lssr_ray.mapping.partials.remove_partials`).
"""

from __future__ import annotations

import itertools
import json
import math
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from lssr_ray.fileio import atomic_put, filesystem
from lssr_ray.mapping.partials import MANIFEST_DIR, done_chip_ids, merge_counts, record_counts
from lssr_ray.mapping.plan import MapPlan, date_work_items

MAX_PARTS = 4096
"""Stage-1 manifest part files (and Ray Data blocks) a run aims at, whatever the region's size:
about one read block per part keeps results streaming out per block."""
SUMMARY_CHIPS_PER_TASK = 1000
"""Partials one task of :func:`summarize_parallel` reads (about): a date's chips are split in
``ceil(chips / this)`` shards by a hash of the chip id, at most :data:`SUMMARY_MAX_SHARDS`."""
SUMMARY_MAX_SHARDS = 64
_PUTS_IN_FLIGHT = 16  # manifest parts written concurrently (S3 PUT latency, not bandwidth, bounds it)


def stage1_dir(store_url: str) -> str:
    """``<store>/_manifest/stage1``."""
    return "/".join([str(store_url).rstrip("/"), MANIFEST_DIR, "stage1"])


def part_url(store_url: str, ti: int, k: int) -> str:
    """URL of stage 1's manifest part ``k`` of time step ``ti``."""
    return f"{stage1_dir(store_url)}/t{int(ti):04d}/p{int(k):06d}.jsonl"


@dataclass(frozen=True)
class Stage1Manifest:
    """What the driver keeps of stage 1's work list: counts only."""

    store: str
    """The store holding the manifest."""
    parts: tuple[int, ...]
    """Part files per time step."""
    items: int
    """Work items (read block x date) listed."""
    chip_dates: int
    """Chip-dates listed (to compute)."""
    resumed: int
    """Planned chip-dates already committed (left out)."""

    @property
    def n_parts(self) -> int:
        return int(sum(self.parts))


def write_stage1_manifest(plan: MapPlan, done_at: Callable[[int], set[str]],
                          storage_options: Mapping[str, Any] | None) -> Stage1Manifest:
    """Replace the store's stage-1 manifest by the work items of ``plan`` not in ``done_at(ti)``
    (committed chip ids of time step ``ti``), written date by date: one date's done set and one
    part's lines are held at a time."""
    from lssr_ray.data.grid import group_chips

    fs, folder = filesystem(stage1_dir(plan.store), storage_options)
    fs.invalidate_cache(folder)
    if fs.exists(folder):  # an earlier run's list: what is committed now decides
        fs.rm(folder, recursive=True)
    groups = group_chips(plan.stage.plan, block=plan.cfg.block)
    per_part = max(1, math.ceil(len(groups) * len(plan.times) / MAX_PARTS))
    parts, items, chip_dates, resumed = [], 0, 0, 0
    with ThreadPoolExecutor(_PUTS_IN_FLIGHT) as pool:
        pending: list[Any] = []

        def put(ti: int, k: int, lines: list[str]) -> None:
            pending.append(pool.submit(atomic_put, part_url(plan.store, ti, k), "\n".join(lines).encode(),
                                       storage_options))
            if len(pending) >= 2 * _PUTS_IN_FLIGHT:  # bounded: never the whole list in flight
                pending.pop(0).result()

        for ti in range(len(plan.times)):
            done, k, lines = done_at(ti), 0, []
            for item in date_work_items(groups, ti, done):
                lines.append(json.dumps(item))
                items += 1
                chip_dates += item["chips"].count(",") + 1
                if len(lines) == per_part:
                    put(ti, k, lines)
                    k, lines = k + 1, []
            if lines:
                put(ti, k, lines)
                k += 1
            parts.append(k)
            resumed += sum(1 for g in groups for c in g if c.id in done)
        for f in pending:
            f.result()
    return Stage1Manifest(store=plan.store, parts=tuple(parts), items=items, chip_dates=chip_dates, resumed=resumed)


def _helper_args(n_inputs: int) -> dict[str, Any]:
    """Ray Data arguments of the small expander tasks: no CPU reserved (they only read a few
    hundred bytes or index arrays; actor pools may hold every CPU) and at most a few at once."""
    import ray.data

    return {"num_cpus": 0, "compute": ray.data.TaskPoolStrategy(size=max(1, min(4, n_inputs)))}


def _read_parts(batch: Mapping[str, np.ndarray], *, store: str, starts: np.ndarray, granules: Mapping[int, str],
                storage_options: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """Stage-1 rows ``{"chips", "ti", "granules"}`` of the manifest parts numbered in ``batch["part"]``."""
    chips, tis = [], []
    for part in np.asarray(batch["part"]).tolist():
        ti = int(np.searchsorted(starts, part, side="right") - 1)
        fs, path = filesystem(part_url(store, ti, part - int(starts[ti])), storage_options)
        for line in fs.cat_file(path).decode().splitlines():
            item = json.loads(line)
            chips.append(item["chips"])
            tis.append(int(item["ti"]))
    return {"chips": np.asarray(chips, dtype=object), "ti": np.asarray(tis, dtype=np.int64),
            "granules": np.asarray([granules[t] for t in tis], dtype=object)}


def stage1_source(plan: MapPlan, manifest: Stage1Manifest, storage_options: Mapping[str, Any] | None) -> Any:
    """Stage 1's input dataset: the manifest's items, read by Ray Data tasks, one block per part."""
    import ray

    n = manifest.n_parts
    starts = np.concatenate([[0], np.cumsum(manifest.parts)]).astype(np.int64)
    granules = {ti: ",".join(str(g.id) for g in grans) for ti, grans in plan.granules_by_time.items()}
    ds = ray.data.from_items([{"part": k} for k in range(n)], override_num_blocks=max(1, n))  # <= MAX_PARTS + dates
    return ds.map_batches(_read_parts, batch_size=1, batch_format="numpy",
                          fn_kwargs={"store": plan.store, "starts": starts, "granules": granules,
                                     "storage_options": dict(storage_options or {})}, **_helper_args(n))


def _expand_chunks(batch: Mapping[str, np.ndarray], *, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
    """``(row, col, ti)`` of the flat chunk indices ``start .. stop - 1`` of each descriptor."""
    idx = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in zip(batch["start"], batch["stop"])])
    n = len(rows)
    return {"row": rows[idx % n].astype(np.int64), "col": cols[idx % n].astype(np.int64), "ti": idx // n}


def chunk_source(plan: MapPlan, n_blocks: int) -> Any:
    """Stage 2's input dataset: every (chunk, date) of ``plan`` as ``row``, ``col``, ``ti`` rows
    in ``n_blocks`` blocks, expanded by Ray Data tasks from the chip lattice's int32 arrays."""
    import ray

    chips = plan.stage.plan.chips
    rows = np.fromiter((c.row for c in chips), dtype=np.int32, count=len(chips))
    cols = np.fromiter((c.col for c in chips), dtype=np.int32, count=len(chips))
    total = len(chips) * len(plan.times)
    edges = np.linspace(0, total, max(1, min(n_blocks, total)) + 1).astype(np.int64)
    spans = [{"start": int(a), "stop": int(b)} for a, b in itertools.pairwise(edges.tolist()) if b > a]
    ds = ray.data.from_items(spans, override_num_blocks=max(1, len(spans)))
    return ds.map_batches(_expand_chunks, batch_size=None, batch_format="numpy",
                          fn_kwargs={"rows": rows, "cols": cols}, **_helper_args(len(spans)))


def check_committed_counts(plan: MapPlan, storage_options: Mapping[str, Any] | None) -> None:
    """:func:`~lssr_ray.mapping.accounting.check_accounted` against the store's partials, one
    date's listing at a time (transient skips count as committed)."""
    from lssr_ray.mapping.accounting import check_accounted

    check_accounted(plan.chip_ids, lambda ti: done_chip_ids(plan.store, ti, storage_options=storage_options),
                    len(plan.times), plan.labels)


def _summarize_shards(batch: Mapping[str, np.ndarray], *, store: str, shards: int,
                      storage_options: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    out = []
    for ti, shard in zip(np.asarray(batch["ti"]).tolist(), np.asarray(batch["shard"]).tolist()):
        ids = [c for c in done_chip_ids(store, ti, storage_options=storage_options)
               if zlib.crc32(c.encode()) % shards == shard]
        out.append(json.dumps(record_counts(store, ti, ids, storage_options=storage_options)))
    return {"counts": np.asarray(out, dtype=object)}


def summarize_parallel(store_url: str, n_times: int, *, chips_per_date: int,
                       storage_options: Mapping[str, Any] | None = None, shards: int | None = None) -> dict[str, Any]:
    """:func:`~lssr_ray.mapping.partials.summarize`'s result, computed by a Ray Data stage: one
    task per (date, shard) lists that date's partials and reads the records of its shard
    (``shards`` per date, default from ``chips_per_date``); the driver merges the small count tables."""
    import ray

    if shards is None:
        shards = min(SUMMARY_MAX_SHARDS, max(1, math.ceil(chips_per_date / SUMMARY_CHIPS_PER_TASK)))
    descs = [{"ti": ti, "shard": s} for ti in range(int(n_times)) for s in range(shards)]
    if not descs:
        return merge_counts([])
    ds = ray.data.from_items(descs, override_num_blocks=len(descs))
    ds = ds.map_batches(_summarize_shards, batch_size=1, batch_format="numpy",
                        fn_kwargs={"store": str(store_url), "shards": shards,
                                   "storage_options": dict(storage_options or {})}, num_cpus=0.25)
    tables = []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        tables += [json.loads(s, object_hook=_int_keys) for s in batch["counts"]]
    return merge_counts(tables)


def _int_keys(d: dict[str, Any]) -> dict[Any, Any]:
    return {int(k) if k.isdigit() else k: v for k, v in d.items()}  # JSON keeps the ti keys as strings


__all__ = ["MAX_PARTS", "Stage1Manifest", "check_committed_counts", "chunk_source",
           "part_url", "stage1_dir", "stage1_source", "summarize_parallel", "write_stage1_manifest"]
