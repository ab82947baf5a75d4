"""The training loop's numerics, without Ray: gradient accumulation and the data split."""

from __future__ import annotations

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT, TrainConfig

PAIRS = REPO_ROOT / "data" / "pairs" / "pairs.zarr"
BASE = REPO_ROOT / "models" / "small-sd-base"


@pytest.fixture(scope="module")
def clear_batch():
    """4 synthetic chips (8 x 8 cells) whose input and target are clear everywhere, so equal-size
    micro-batches have equal valid-pixel counts."""
    from lssr_ray.data.pair_dataset import PairDataset, collate
    from lssr_ray.train.data import _fix

    ds = PairDataset(PAIRS, chip_size=8, sensor_pairs=["S2deg-S2"])
    items = []
    for i in range(len(ds)):
        it = ds[i]
        if np.isfinite(it["lr"]).all() and it["hr_valid"].all():
            items.append(it)
        if len(items) == 4:
            break
    assert len(items) == 4
    return _fix(collate(items))


def _grads(model, loss_fn, micro):
    import torch

    from lssr_ray.train.loop import accumulate_gradients

    model.zero_grad(set_to_none=True)
    terms, n = accumulate_gradients(model, loss_fn, micro, device=torch.device("cpu"))
    return [p.grad.detach().clone() for p in model.trainable_parameters()], terms, n


def test_gradient_accumulation_equals_one_big_batch(clear_batch):
    import torch

    from lssr_ray.model.base import load_base
    from lssr_ray.model.losses import LSSRLoss
    from lssr_ray.model.lssr import LSSRConfig, LSSRModel

    torch.manual_seed(0)
    model = LSSRModel(load_base(str(BASE)), LSSRConfig(modality_dropout=0.0)).train()
    with torch.no_grad():  # non-zero LoRA B, so LoRA A gets gradients too
        for n, p in model.unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    loss_fn = LSSRLoss()
    half = lambda s: {k: v[s] for k, v in clear_batch.items()}
    g_big, t_big, n_big = _grads(model, loss_fn, [clear_batch])
    g_acc, t_acc, n_acc = _grads(model, loss_fn, [half(slice(0, 2)), half(slice(2, 4))])
    g_one, _, _ = _grads(model, loss_fn, [half(slice(0, 2))])
    assert n_big == n_acc == 4
    assert t_acc["total"] == pytest.approx(t_big["total"], rel=1e-5)
    norm = torch.sqrt(sum((g ** 2).sum() for g in g_big))
    assert norm > 0
    diff_acc = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(g_acc, g_big)))
    diff_one = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(g_one, g_big)))
    assert diff_acc / norm < 1e-4          # accumulated = big batch
    assert diff_one / norm > 1e-2          # and half a batch is measurably different


def test_training_excludes_validation_scenes():
    """No training pair has a target date within holdout_days of a validation (real) pair's
    target date; with holdout_days=-1 the same-scene synthetic pairs come back."""
    import xarray as xr

    from lssr_ray.train.data import split_pairs

    cfg = TrainConfig(pairs=str(PAIRS))
    split = split_pairs(cfg)
    ds = xr.open_zarr(PAIRS, consolidated=True)
    ids = [str(x) for x in ds["pair"].values]
    day = dict(zip(ids, ds["hr_date"].values.astype("datetime64[D]")))
    kind = dict(zip(ids, (str(x) for x in ds["sensor_pair"].values)))
    val_days = {day[i] for i in ids if kind[i] == "L8-S2"}
    assert sorted(split["val"]) == sorted(i for i in ids if kind[i] == "L8-S2") and len(split["val"]) == 5
    assert all(kind[i] == "S2deg-S2" for i in split["train"])
    for i in split["train"]:
        assert all(abs(int((day[i] - d).astype(int))) > 1 for d in val_days), i
    assert split["held_out"] and all(any(abs(int((day[i] - d).astype(int))) <= 1 for d in val_days)
                                     for i in split["held_out"])
    synthetic = [i for i, k in kind.items() if k == "S2deg-S2" and i not in split["held_out_location"]]
    assert len(split["train"]) + len(split["held_out"]) == len(synthetic)
    off = split_pairs(TrainConfig(pairs=str(PAIRS), holdout_days=-1))
    assert sorted(off["train"]) == sorted(split["train"] + split["held_out"]) and not off["held_out"]


def test_held_out_locations_are_never_trained_or_validated_on():
    """The bundled store holds Flanders and the Hesbaye cube: by default every Hesbaye pair is
    left out of training and validation, and the split records the locations on each side."""
    from lssr_ray.data.pairs import open_pairs, pair_ids, pair_locations
    from lssr_ray.train.data import split_pairs

    ds = open_pairs(PAIRS)
    loc = dict(zip(pair_ids(ds), pair_locations(ds)))
    split = split_pairs(TrainConfig(pairs=str(PAIRS)))
    hesbaye = sorted(i for i, v in loc.items() if v == "hesbaye_2021")
    assert len(hesbaye) == 40 and split["held_out_location"] == hesbaye
    assert not set(hesbaye) & set(split["train"] + split["val"] + split["held_out"])
    assert split["train_locations"] == split["val_locations"] == ["flanders_31UDS_2018"]
    assert split["holdout_locations"] == ["hesbaye_2021"]
    # holding out Flanders instead trains on Hesbaye and leaves no validation pairs
    other = split_pairs(TrainConfig(pairs=str(PAIRS), holdout_locations=("flanders_31UDS_2018",)))
    assert other["train_locations"] == ["hesbaye_2021"] and other["val"] == []
    assert len(other["train"]) == 40


def test_workers_get_disjoint_equal_shards():
    from lssr_ray.train.data import make_batches

    cfg = TrainConfig(pairs=str(PAIRS), chip_size=8, batch_size=1, augment=False)
    shards = []
    for rank in range(2):
        it, _, split = make_batches(cfg, rank=rank, world_size=2)
        per_epoch = -(-len(split["train"]) // 2)
        shards.append([str(next(it)["chip_id"][0]).rsplit("_y", 1)[0] for _ in range(per_epoch)])
    assert len(shards[0]) == len(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(split["train"])
    assert len(set(shards[0]) & set(shards[1])) <= 1  # only the padding pair may repeat
