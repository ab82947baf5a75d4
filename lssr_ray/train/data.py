"""Batches for the training loop: each worker reads its own shard of the pairs store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from lssr_ray.config import TrainConfig
from lssr_ray.errors import ConfigError


def make_batches(
    cfg: TrainConfig, *, rank: int, world_size: int, start_step: int = 0
) -> tuple[Iterator[dict[str, Any]], Callable[[], Iterator[dict[str, Any]]]]:
    """(endless iterator of training batches, factory of one validation pass).

    Training batches cycle over this worker's shard in epochs with fresh augmentation draws; a
    resumed run skips the epochs it already consumed, so restarts do not replay the same chips.
    Validation is not sharded: every worker sees all validation pairs (it is small, and the
    numbers then agree across ranks).
    """
    from lssr_ray.data.pair_dataset import PairDataset, collate

    if 3 * cfg.chip_size % 8:
        raise ConfigError(f"chip_size {cfg.chip_size}: 3*chip_size must be a multiple of 8 (try 16 or 24)")
    train = PairDataset(
        cfg.pairs, chip_size=cfg.chip_size, rank=rank, world_size=world_size, augment=cfg.augment,
        seed=cfg.seed, sensor_pairs=cfg.train_sensor_pairs, pad_to_even=True,
    )
    val = PairDataset(cfg.val_pairs or cfg.pairs, chip_size=cfg.chip_size, sensor_pairs=cfg.val_sensor_pairs)
    if len(train) == 0:
        raise ConfigError(f"no training pairs of kinds {cfg.train_sensor_pairs} in {cfg.pairs}")

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

    return train_iter(), val_iter


def _fix(batch: dict[str, Any]) -> dict[str, Any]:
    """``hr_valid`` comes as (B, 1, H, W) float; the loss wants (B, H, W) bool."""
    hv = batch["hr_valid"]
    batch["hr_valid"] = (hv[:, 0] if hv.ndim == 4 else hv) > 0.5
    return batch
