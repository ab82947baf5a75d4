"""A torch ``Dataset`` over a pairs store (docs/PAIRS.md) for Ray Train workers.

Each item is a dict in the batch contract of docs/ARCHITECTURE.md (without the batch dim)
plus the training targets: ``chip_id`` str, ``lr`` (6, c, c) float32 NaN invalid, ``dem``
(1, 3c, 3c) float32, ``landcover`` (1, 3c, 3c) int64, ``sar`` (2, 3c, 3c) float32, ``month``
int64, ``present`` (3,) float32, ``hr`` (6, 3c, 3c) float32 NaN invalid, ``hr_valid``
(1, 3c, 3c) float32 (1 valid, 0 not), where c = ``chip_size`` in 30 m cells.

Chip size: the model's VAE downsamples the 10 m chip by 8, so 3c must be a multiple of 8,
i.e. c a multiple of 8. The default c = 16 (48 x 48 target) fits inside the stored 20-cell
chips; a random (``augment=True``) or centred crop picks the 16 x 16 window. A chip size
larger than the stored one is padded (NaN / 0, ``hr_valid`` 0).

Sharding: pairs (sorted by id, optionally filtered by ``sensor_pairs``) are dealt
round-robin, pair ``i`` to rank ``i % world_size``; each worker opens the store lazily and
reads only its own pairs' chunks. With ``pad_to_even`` every shard gets the same length
(as DDP needs) by repeating the first pairs, like ``DistributedSampler``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.data.blockgrid import SCALE
from lssr_ray.data.pairs import SENSOR_PAIRS, open_pairs, pair_ids, read_pair
from lssr_ray.errors import ConfigError

try:  # torch is a hard dependency of the project; keep the module importable for numpy use
    from torch.utils.data import Dataset as _Base
except ImportError:  # pragma: no cover
    _Base = object  # type: ignore[assignment,misc]

DEFAULT_CHIP_SIZE = 16
"""Training chip edge in 30 m cells (48 x 48 at 10 m: a multiple of the VAE's factor 8)."""


def shard_indices(n: int, rank: int, world_size: int, *, pad_to_even: bool = False) -> list[int]:
    """Indices of ``range(n)`` owned by ``rank`` of ``world_size`` (round-robin).

    Without padding the shards are disjoint and together cover every index once; with
    ``pad_to_even`` each has ``ceil(n / world_size)`` entries (wrapping around to the start).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if not pad_to_even:
        return list(range(rank, n, world_size))
    if n == 0:
        return []
    total = -(-n // world_size) * world_size
    return [i % n for i in range(rank, total, world_size)]


class PairDataset(_Base):
    """Training pairs of one store, sharded for (``rank``, ``world_size``).

    ``store``: local path or ``s3://`` URL of a pairs store (``storage_options`` for s3fs).
    ``augment``: random crop offset, flips and 90-degree rotations, reproducible from
    (``seed``, epoch, pair index); call :meth:`set_epoch` each epoch for new draws.
    ``sensor_pairs``: keep only these kinds (``"L8-S2"``, ``"S2deg-S2"``); default both.
    """

    def __init__(
        self,
        store: str | Path,
        *,
        chip_size: int = DEFAULT_CHIP_SIZE,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = False,
        seed: int = 0,
        sensor_pairs: Sequence[str] | None = None,
        pad_to_even: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if chip_size < 1:
            raise ConfigError(f"chip_size must be >= 1 (30 m cells), got {chip_size}")
        kinds = tuple(sensor_pairs) if sensor_pairs is not None else SENSOR_PAIRS
        bad = sorted(set(kinds) - set(SENSOR_PAIRS))
        if bad:
            raise ConfigError(f"unknown sensor_pairs {bad}; valid: {SENSOR_PAIRS}")
        self.store = str(store)
        self.storage_options = storage_options
        self.chip_size = int(chip_size)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0
        ds = open_pairs(self.store, storage_options=storage_options)
        self.stored_chip_size = int(ds.attrs["chip_size"])
        ids = pair_ids(ds)
        sensor = [str(x) for x in ds["sensor_pair"].values.tolist()]
        order = [i for i in sorted(range(len(ids)), key=ids.__getitem__) if sensor[i] in kinds]
        self.all_ids = [ids[i] for i in order]
        mine = shard_indices(len(order), rank, world_size, pad_to_even=pad_to_even)
        self.indices = [order[i] for i in mine]
        """Store positions of this shard's pairs, in item order."""
        self.pair_ids = [ids[i] for i in self.indices]
        self._ds = None  # opened again per process (DataLoader workers, Ray workers)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (deterministic per (seed, epoch, pair))."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        st = dict(self.__dict__)
        st["_ds"] = None
        return st

    def _store(self):
        if self._ds is None:
            self._ds = open_pairs(self.store, storage_options=self.storage_options)
        return self._ds

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for a shard of {len(self)} pairs")
        pos = self.indices[i]
        p = read_pair(self._store(), pos)
        c, s = self.chip_size, self.stored_chip_size
        rng = np.random.default_rng([self.seed, self.epoch, pos])
        if c <= s:
            oy, ox = (rng.integers(0, s - c + 1, size=2) if self.augment else ((s - c) // 2, (s - c) // 2))
        else:
            oy = ox = 0
        lr = _window(p["lr"], oy, ox, c, np.nan)
        big = lambda a, fill: _window(a, oy * SCALE, ox * SCALE, c * SCALE, fill)
        item = {
            "chip_id": f"{p['pair_id']}_y{oy:02d}x{ox:02d}",
            "lr": lr.astype(np.float32),
            "dem": big(p["dem"], np.nan).astype(np.float32),
            "landcover": big(p["landcover"], 0).astype(np.int64),
            "sar": big(p["sar"], np.nan).astype(np.float32),
            "month": np.int64(p["month"]),
            "present": p["present"].astype(np.float32),
            "hr": big(p["hr"], np.nan).astype(np.float32),
            "hr_valid": big(p["hr_valid"][None].astype(np.float32), 0.0),
        }
        if self.augment:
            k = int(rng.integers(0, 4))
            fy, fx = (bool(v) for v in rng.integers(0, 2, size=2))
            for key in ("lr", "dem", "landcover", "sar", "hr", "hr_valid"):
                a = np.rot90(item[key], k, axes=(-2, -1))
                if fy:
                    a = a[..., ::-1, :]
                if fx:
                    a = a[..., ::-1]
                item[key] = np.ascontiguousarray(a)
        return item


def _window(a: np.ndarray, oy: int, ox: int, size: int, fill) -> np.ndarray:
    """``a[..., oy:oy+size, ox:ox+size]``, padded with ``fill`` past the bottom/right edge."""
    out = np.full(a.shape[:-2] + (size, size), fill, dtype=a.dtype)
    part = a[..., oy:oy + size, ox:ox + size]
    out[..., :part.shape[-2], :part.shape[-1]] = part
    return out


def collate(items: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Stack items into one batch dict of numpy arrays (leading dim B), as in the batch contract."""
    if not items:
        raise ConfigError("cannot collate an empty list of items")
    out: dict[str, np.ndarray] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = np.array(vals, dtype=object).astype(str) if key == "chip_id" else np.stack(vals)
    return out


__all__ = ["DEFAULT_CHIP_SIZE", "PairDataset", "collate", "shard_indices"]
