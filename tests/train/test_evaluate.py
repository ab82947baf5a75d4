"""jobs/evaluate.py on a folder with a subset of WorldCereal layers, against independent references."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT

SAMPLES = REPO_ROOT / "data" / "samples"
BASE = REPO_ROOT / "models" / "small-sd-base"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Flanders with only L8 + S2 layers (no S1, DEM or labels), a 20 m-only Tanzania patch and a
    Landsat L1 scene (not WorldCereal); an untrained checkpoint that 'trained on' one pair."""
    import torch

    from lssr_ray.model.base import load_base
    from lssr_ray.model.lssr import LSSRConfig, LSSRModel
    from lssr_ray.train.evaluate import evaluate_data

    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    fl = data / "flanders"
    fl.mkdir(parents=True)
    for f in (SAMPLES / "worldcereal_flanders_31UDS_2018").iterdir():
        if f.name.startswith(("L8_SR_10m", "S2_L2A_10m", "S2_L2A_20m")):
            (fl / f.name).symlink_to(f)
    (data / "tanzania").symlink_to(SAMPLES / "worldcereal_tanzania_37MBS_2021")
    (data / "alabama").mkdir()
    (data / "alabama" / "l8_B4.tif").symlink_to(SAMPLES / "landsat8_l1t_alabama_2015" / "l8_B4.tif")

    torch.manual_seed(0)
    ckpt = LSSRModel(load_base(str(BASE)), LSSRConfig()).save_checkpoint(root / "ckpt")
    seen = "00002806639B424A_S2deg-S2_20180630_20180630_r00c00"
    (ckpt / "train_pairs.json").write_text(json.dumps({"train": [seen], "val": [], "held_out": []}))
    out = root / "out" / "metrics.json"
    res = evaluate_data(data, ckpt, out=out, png_dir=root / "png", chip_size=8, max_png=2, workdir=root / "work")
    return res, out, root / "png", seen


def test_groups_skips_and_outputs(evaluated):
    from lssr_ray.train.evaluate import format_table

    res, out, png, seen = evaluated
    assert json.loads(out.read_text())["groups"].keys() == res["groups"].keys()
    g = res["groups"]
    assert g["L8-S2 real (not trained on)"]["n_pairs"] == 5
    assert g["S2deg-S2 synthetic, seen in training"]["pair_ids"] == [seen]
    assert g["S2deg-S2 synthetic, not trained on"]["n_pairs"] == 29
    skipped = " ".join(f"{s['item']}: {s['reason']}" for s in res["skipped"])
    assert "tanzania" in skipped and "no S2_L2A_10m" in skipped
    assert "alabama" in skipped and "not a WorldCereal" in skipped
    assert len(list(png.glob("*.png"))) == 2
    table = format_table(res)
    assert "LSSR" in table and "bicubic" in table and "nearest" in table


def test_nearest_psnr_matches_scikit_image(evaluated):
    """Recompute nearest-neighbour PSNR/SSIM of fully clear real pairs with scikit-image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from lssr_ray.data.pair_dataset import PairDataset

    res, _, _, _ = evaluated
    full = [p for p in res["pairs"] if p["sensor_pair"] == "L8-S2" and p["clear_fraction"] == 1.0]
    assert full, "no fully clear real pair in the 8-cell centre crops"
    ds = PairDataset(res["store"], chip_size=8)
    for p in full:
        it = ds[ds.pair_ids.index(p["pair_id"])]
        near = np.kron(it["lr"], np.ones((1, 3, 3), np.float32))
        for g, sl, rng in (("rgb", slice(0, 3), 0.4), ("ir", slice(3, 6), 0.8)):
            ref = peak_signal_noise_ratio(it["hr"][sl].astype(np.float64), near[sl].astype(np.float64), data_range=rng)
            assert p["nearest"][f"psnr_{g}"] == pytest.approx(ref, abs=1e-6)
            ss = np.mean([structural_similarity(it["hr"][b].astype(np.float64), near[b].astype(np.float64),
                                                data_range=rng) for b in range(sl.start, sl.stop)])
            assert p["nearest"][f"ssim_{g}"] == pytest.approx(ss, abs=1e-6)


def test_bicubic_beats_nearest_on_real_pairs(evaluated):
    """A sanity check with a known answer: bicubic is a better 10 m estimate than blocks."""
    res, _, _, _ = evaluated
    g = res["groups"]["L8-S2 real (not trained on)"]
    assert g["bicubic"]["psnr_rgb"] > g["nearest"]["psnr_rgb"]
    assert g["bicubic"]["psnr_ir"] > g["nearest"]["psnr_ir"]
