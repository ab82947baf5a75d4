"""PairDataset: batch-contract items, sharding, crops/padding, seeded augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lssr_ray.data import pairs, psf
from lssr_ray.data.pair_dataset import PairDataset, collate, shard_indices
from lssr_ray.errors import ConfigError

N = 11
CHIP = 20


def _pair(i: int) -> pairs.Pair:
    rng = np.random.default_rng(100 + i)
    H = 3 * CHIP
    hr = rng.uniform(0.02, 0.5, (6, H, H)).astype(np.float32)
    ok = np.ones((H, H), bool)
    lr = psf.block_mean(hr)  # lr = exact 3x3 mean of hr, an invariant augmentation must keep
    return pairs.Pair(
        pair_id=f"pair{i:03d}", lr=lr, lr_valid=np.ones((CHIP, CHIP), bool), hr=hr, hr_valid=ok,
        crs="EPSG:32631", transform=(10.0, 0.0, 500000.0 + 600 * i, 0.0, -10.0, 5600000.0),
        lr_date=np.datetime64(f"2021-{1 + i % 12:02d}-15"), hr_date=np.datetime64(f"2021-{1 + i % 12:02d}-15"),
        sensor_pair="L8-S2" if i % 3 == 0 else "S2deg-S2", source="t", lr_bands="x", hr_bands="y",
        dem=np.arange(H * H, dtype=np.float32).reshape(H, H),
        landcover=(np.arange(H * H).reshape(H, H) % 5).astype(np.int16),
        sar=np.stack([np.full((H, H), -10.0), np.full((H, H), -17.0)]).astype(np.float32),
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "p.zarr"
    pairs.write_pairs([_pair(i) for i in range(N)][::-1], out)  # stored out of id order on purpose
    return out


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_disjoint_and_cover_all(store, world):
    shards = [PairDataset(store, rank=r, world_size=world).pair_ids for r in range(world)]
    flat = [p for s in shards for p in s]
    assert len(flat) == len(set(flat)) == N
    assert sorted(flat) == [f"pair{i:03d}" for i in range(N)]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    even = [PairDataset(store, rank=r, world_size=world, pad_to_even=True) for r in range(world)]
    assert len({len(d) for d in even}) == 1 and {p for d in even for p in d.pair_ids} == set(flat)


def test_shard_indices_reference():
    assert shard_indices(7, 1, 3) == [1, 4]
    assert shard_indices(7, 2, 3, pad_to_even=True) == [2, 5, 1]
    with pytest.raises(ConfigError, match="rank"):
        shard_indices(7, 3, 3)


def test_item_matches_batch_contract_and_centre_crop(store):
    ds = PairDataset(store, chip_size=16)
    assert len(ds) == N
    it = ds[0]
    ref = _pair(0)
    assert it["chip_id"] == "pair000_y02x02"
    shapes = {k: v.shape for k, v in it.items() if hasattr(v, "shape")}
    assert shapes == {"lr": (6, 16, 16), "dem": (1, 48, 48), "landcover": (1, 48, 48), "sar": (2, 48, 48),
                      "month": (), "present": (3,), "hr": (6, 48, 48), "hr_valid": (1, 48, 48)}
    assert it["lr"].dtype == np.float32 and it["landcover"].dtype == np.int64 and it["month"].dtype == np.int64
    assert it["month"] == 1 and it["present"].tolist() == [1.0, 1.0, 1.0]
    # centred crop: 30 m offset 2 -> 10 m offset 6, values as stored (int16 x 1e-4)
    np.testing.assert_allclose(it["hr"], ref.hr[:, 6:54, 6:54], atol=5.1e-5)
    np.testing.assert_array_equal(it["dem"][0], ref.dem[6:54, 6:54])
    np.testing.assert_array_equal(it["landcover"][0], ref.landcover[6:54, 6:54])
    np.testing.assert_allclose(it["sar"][:, 0, 0], [-10.0, -17.0], atol=0.006)


def test_larger_chip_is_padded(store):
    it = PairDataset(store, chip_size=24)[1]
    assert it["lr"].shape == (6, 24, 24) and it["hr"].shape == (6, 72, 72)
    assert np.isnan(it["lr"][:, 20:]).all() and np.isfinite(it["lr"][:, :20, :20]).all()
    assert it["hr_valid"][0, :60, :60].all() and not it["hr_valid"][0, 60:].any()
    assert (it["landcover"][0, 60:] == 0).all()


def test_augmentation_is_seeded_and_consistent(store):
    a = PairDataset(store, chip_size=16, augment=True, seed=7)
    b = PairDataset(store, chip_size=16, augment=True, seed=7)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x["chip_id"] == y["chip_id"]
        np.testing.assert_array_equal(x["hr"], y["hr"])
        # lr is still the 3x3 mean of hr after crop/flip/rotation: grids stay aligned
        np.testing.assert_allclose(psf.block_mean(x["hr"]), x["lr"], atol=1e-4)
    draws = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        it = a[0]
        draws.add((it["chip_id"], it["hr"][0, 0, 0].item()))
    assert len(draws) > 1


def test_filter_dataloader_and_collate(store):
    ds = PairDataset(store, sensor_pairs=["L8-S2"], rank=0, world_size=2)
    assert ds.pair_ids == ["pair000", "pair006"]  # L8-S2 = 0, 3, 6, 9 -> rank 0 takes 0 and 6
    batch = collate([ds[0], ds[1]])
    assert batch["lr"].shape == (2, 6, 16, 16) and batch["month"].tolist() == [1, 7]
    assert batch["chip_id"].tolist() == ["pair000_y02x02", "pair006_y02x02"]
    loader = torch.utils.data.DataLoader(PairDataset(store), batch_size=4, num_workers=0)
    first = next(iter(loader))
    assert first["hr"].shape == (4, 6, 48, 48) and first["present"].dtype == torch.float32
    with pytest.raises(ConfigError, match="valid"):
        PairDataset(store, sensor_pairs=["L9-S2"])
    with pytest.raises(IndexError):
        ds[5]
    # Ray sends the dataset to workers by pickling: the open store is dropped and reopened
    import pickle

    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._ds is None
    np.testing.assert_array_equal(clone[1]["hr"], ds[1]["hr"])


def test_committed_pairs_store():
    from lssr_ray.config import REPO_ROOT

    # data/pairs is generated by scripts/make_pairs.py and committed (about 3 MB)
    ds = PairDataset(REPO_ROOT / "data" / "pairs" / "pairs.zarr")
    assert len(ds) >= 50 and sum("_L8-S2_" in p for p in ds.pair_ids) == 5
    it = ds[0]
    assert it["lr"].shape == (6, 16, 16) and np.nanmax(it["hr"]) < 1.6
