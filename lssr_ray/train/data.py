"""Batches for the training loop: each worker reads its own shard of the pairs store.

Protocol (docs/TRAINING.md "Protocol"): pairs of the locations ``cfg.holdout_locations`` are
never trained or validated on (they are the evaluation ground, and ``jobs/evaluate.py`` refuses to
score a location a checkpoint saw). Of the rest, training uses the pair kinds
``cfg.train_sensor_pairs`` minus every pair whose 10 m target date lies within
``cfg.holdout_days`` of the target date of any validation pair (with the bundled store: the
synthetic pairs made from the Sentinel-2 scenes that are the targets of the real L8-S2 pairs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from lssr_ray.config import SCALE, TrainConfig
from lssr_ray.errors import ConfigError


def split_pairs(cfg: TrainConfig) -> dict[str, list[str]]:
    """Pair ids of the store ``cfg.pairs``: ``train``, ``val``, ``held_out`` (left out of
    training because their target date is within ``cfg.holdout_days`` of a validation target)
    and ``held_out_location`` (pairs of ``cfg.holdout_locations``, in either store); plus the
    locations: ``train_locations``, ``val_locations`` and ``holdout_locations``. The training
    loop writes this dict as ``train_pairs.json`` next to every checkpoint."""
    import numpy as np

    from lssr_ray.data.pairs import open_pairs, pair_ids, pair_locations

    holdout = set(cfg.holdout_locations)
    ds = open_pairs(cfg.pairs)
    ids = pair_ids(ds)
    loc = pair_locations(ds)
    kind = [str(x) for x in ds["sensor_pair"].values.tolist()]
    day = ds["hr_date"].values.astype("datetime64[D]")
    val_store = cfg.val_pairs or cfg.pairs
    if val_store == cfg.pairs:
        vds, vids, vkind, vloc = ds, ids, kind, loc
    else:
        vds = open_pairs(val_store)
        vids, vkind, vloc = pair_ids(vds), [str(x) for x in vds["sensor_pair"].values.tolist()], pair_locations(vds)
    vday_all = vds["hr_date"].values.astype("datetime64[D]")
    val_idx = [i for i in range(len(vids)) if vkind[i] in cfg.val_sensor_pairs and vloc[i] not in holdout]
    val_days = vday_all[val_idx]
    gone = {vids[i] for i in range(len(vids)) if vloc[i] in holdout}
    gone |= {ids[i] for i in range(len(ids)) if loc[i] in holdout}
    out: dict[str, list[str]] = {"train": [], "val": sorted(vids[i] for i in val_idx), "held_out": [],
                                 "held_out_location": sorted(gone)}
    for i, pid in enumerate(ids):
        if kind[i] not in cfg.train_sensor_pairs or (val_store == cfg.pairs and i in val_idx) or loc[i] in holdout:
            continue
        near = cfg.holdout_days >= 0 and len(val_days) and bool(
            (np.abs((val_days - day[i]).astype(int)) <= cfg.holdout_days).any())
        out["held_out" if near else "train"].append(pid)
    out["train"].sort()
    out["held_out"].sort()
    by_id = dict(zip(ids, loc)) | dict(zip(vids, vloc))
    out["train_locations"] = sorted({by_id[p] for p in out["train"]})
    out["val_locations"] = sorted({by_id[p] for p in out["val"]})
    out["holdout_locations"] = sorted(holdout)
    return out


def make_batches(
    cfg: TrainConfig, *, rank: int, world_size: int, start_step: int = 0
) -> tuple[Iterator[dict[str, Any]], Callable[[], Iterator[dict[str, Any]]], dict[str, list[str]]]:
    """(endless iterator of training batches, factory of one validation pass, split ids).

    Training batches cycle over this worker's shard in epochs with fresh augmentation draws; a
    resumed run skips the epochs it already consumed, so restarts do not replay the same chips.
    Validation is not sharded: every worker sees all validation pairs (it is small, and the
    numbers then agree across ranks).
    """
    from lssr_ray.data.pair_dataset import PairDataset, collate, shard_indices

    if SCALE * cfg.chip_size % 8:
        raise ConfigError(f"chip_size {cfg.chip_size}: 3*chip_size must be a multiple of 8 (try 16 or 24)")
    split = split_pairs(cfg)
    if not split["train"]:
        raise ConfigError(
            f"no training pairs of kinds {cfg.train_sensor_pairs} in {cfg.pairs} "
            f"({len(split['held_out'])} held out by holdout_days={cfg.holdout_days}, "
            f"{len(split['held_out_location'])} by holdout_locations={list(cfg.holdout_locations)})")
    train = PairDataset(cfg.pairs, chip_size=cfg.chip_size, augment=cfg.augment, seed=cfg.seed,
                        sensor_pairs=cfg.train_sensor_pairs)
    keep = set(split["train"])
    order = [pos for pos, pid in zip(train.indices, train.pair_ids) if pid in keep]
    mine = [order[i] for i in shard_indices(len(order), rank, world_size, pad_to_even=True)]
    # PairDataset shards by kind only; re-deal the date-filtered list the same round-robin way.
    pos_to_id = dict(zip(train.indices, train.pair_ids))
    train.indices, train.pair_ids = mine, [pos_to_id[p] for p in mine]
    val = PairDataset(cfg.val_pairs or cfg.pairs, chip_size=cfg.chip_size, sensor_pairs=cfg.val_sensor_pairs)

    def train_iter() -> Iterator[dict[str, Any]]:
        import numpy as np

        per_epoch = max(len(train) // cfg.batch_size, 1)
        epoch = start_step * cfg.grad_accum // per_epoch
        while True:
            train.set_epoch(epoch)
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train))
            for i in range(per_epoch):
                idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                if len(idx) < cfg.batch_size:  # fewer pairs than a batch: wrap around
                    idx = np.resize(order, cfg.batch_size)
                yield _fix(collate([train[int(j)] for j in idx]))
            epoch += 1

    def val_iter() -> Iterator[dict[str, Any]]:
        for i in range(0, len(val), cfg.batch_size):
            yield _fix(collate([val[j] for j in range(i, min(i + cfg.batch_size, len(val)))]))

    return train_iter(), val_iter, split


def _fix(batch: dict[str, Any]) -> dict[str, Any]:
    """``hr_valid`` comes as (B, 1, H, W) float; the loss wants (B, H, W) bool."""
    hv = batch["hr_valid"]
    batch["hr_valid"] = (hv[:, 0] if hv.ndim == 4 else hv) > 0.5
    return batch


__all__ = ["make_batches", "split_pairs"]
