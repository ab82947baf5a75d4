"""jobs/evaluate.py on a small held-out store: location refusal, halo-core scoring, QA, bootstrap
and trust-layer numbers, against independent references (scikit-image, NumPy)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))
from _jobs import load_job

SAMPLES = REPO_ROOT / "data" / "samples"
BASE = REPO_ROOT / "models" / "small-sd-base"
CHIP, HALO = 16, 4


def _job():
    return load_job("evaluate")


def _trained_on(folder, locations):
    (folder / "train_pairs.json").write_text(json.dumps(
        {"train": [], "val": [], "held_out": [], "train_locations": locations, "val_locations": []}))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """3 Hesbaye synthetic chips + the 5 real Flanders L8-S2 chips (16 cells, halo-tiled), converted
    from a data folder that also holds a 20 m-only Tanzania patch and a non-WorldCereal file; an
    untrained checkpoint and an untrained residual CNN that 'trained on' Tanzania only."""
    import torch
    import xarray as xr

    from lssr_ray.data import pairs, pairs_convert
    from lssr_ray.model.base import load_base
    from lssr_ray.model.baseline import ResidualCNN
    from lssr_ray.model.lssr import LSSRConfig, LSSRModel

    sys.path.insert(0, str(REPO_ROOT / "tests" / "model"))
    from _zero_init import randomize_zero_inits

    from lssr_ray.train.evaluate import prepare_pairs

    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    data.mkdir()
    (data / "hesbaye").symlink_to(SAMPLES / "worldcereal_hesbaye_monthly_2021")
    (data / "tanzania").symlink_to(SAMPLES / "worldcereal_tanzania_37MBS_2021")
    (data / "alabama").mkdir()
    (data / "alabama" / "l8_B4.tif").symlink_to(SAMPLES / "landsat8_l1t_alabama_2015" / "l8_B4.tif")
    h_store, skipped, _ = prepare_pairs(data, root / "h", chip_size=CHIP, chip_stride=CHIP - 2 * HALO)
    fl = root / "worldcereal_flanders_31UDS_2018"
    fl.mkdir()
    for f in (SAMPLES / fl.name).iterdir():
        if f.name.startswith(("L8_SR_10m", "S2_L2A_10m", "S2_L2A_20m")):
            (fl / f.name).symlink_to(f)
    pairs_convert.convert_worldcereal(fl, root / "f.zarr", chip_size=CHIP, chip_stride=CHIP - 2 * HALO, synthetic=False)
    h = pairs.open_pairs(h_store).isel(pair=[0, 4, 8]).load()
    both = xr.concat([h, pairs.open_pairs(root / "f.zarr").load()], "pair")
    for v in both.variables.values():
        v.encoding = {}
    store = root / "pairs.zarr"
    both.to_zarr(store, zarr_format=2, consolidated=True, encoding=pairs._encoding(both))

    torch.manual_seed(0)
    # an untrained model is exactly bicubic (flip-equivariant: zero spread, rho undefined), so the
    # zero-initialised adapter parts get random values: the trust numbers must see a real model
    model = randomize_zero_inits(LSSRModel(load_base(str(BASE)), LSSRConfig()))
    ckpt = model.save_pretrained(root / "ckpt")
    _trained_on(ckpt, ["tanzania_37MBS_2021"])
    cnn = root / "cnn"
    ResidualCNN().save_pretrained(cnn)
    _trained_on(cnn, ["tanzania_37MBS_2021"])
    out = root / "out" / "metrics.json"
    rc = _job().main(["--data", str(store), "--checkpoint", str(ckpt), "--baseline-cnn", str(cnn),
                      "--out", str(out), "--max-png", "2", "--variants", "identity,no_sar"])
    assert rc == 0
    return json.loads(out.read_text()), out, store, ckpt, cnn, skipped


def test_groups_by_location_with_n_ci_and_outputs(setup):
    res, out, *_ = setup
    g = res["groups"]
    assert res["location_status"] == {"flanders_31UDS_2018": "held out", "hesbaye_2021": "held out"}
    hes = g["hesbaye_2021 S2deg-S2 [held out]"]
    assert hes["n_pairs"] == 3 and res["core_size"] == CHIP - 2 * HALO
    n_real = sum(v["n_pairs"] for k, v in g.items() if k.startswith("flanders_31UDS_2018 L8-S2"))
    assert n_real == 5
    for m in ("lssr", "bicubic", "nearest", "cnn", "vae_truth"):
        assert np.isfinite(hes[m]["psnr_rgb"]) and np.isfinite(hes[m]["psnr_ir_norm"])
    for other in ("lssr-bicubic", "lssr-cnn"):
        for k in ("psnr_rgb", "psnr_ir", "ssim_rgb", "ssim_ir", "ndvi_mse"):
            ci = hes["ci"][other][k]
            m = other.split("-")[1]
            assert ci["n"] == 3 and ci["mean"] == pytest.approx(hes["lssr"][k] - hes[m][k], abs=1e-9)
            assert ci["lo"] <= ci["mean"] <= ci["hi"]
    for m in ("lssr", "cnn"):
        t = hes["trust"][m]
        assert t["improvement"] + t["omission"] + t["hallucination"] == pytest.approx(1.0)
        assert t["consistency_mae"] >= 0
    assert -1 <= hes["trust"]["lssr"]["spearman_rho"] <= 1
    # the CNN ignores SAR: with variants identity + no_sar its spread is 0 everywhere, so no ranking
    assert np.isnan(hes["trust"]["cnn"]["spearman_rho"])
    md = out.with_suffix(".md").read_text()
    assert "hesbaye_2021 S2deg-S2 [held out]" in md and "lssr-cnn (95 % CI)" in md
    assert len(list((out.parent / "png").glob("*.png"))) == 2


def test_real_pairs_pass_or_fail_the_fixed_qa(setup):
    """Every real pair carries its QA numbers; they decide the group, and rejected pairs get no
    metrics rows (recomputed here with NumPy from the stored chips)."""
    from lssr_ray.data.pair_dataset import PairDataset
    from lssr_ray.data.psf import degrade
    from lssr_ray.train.protocol import QA_GAIN, QA_MIN_R, core

    res, _, store, *_ = setup
    ds = PairDataset(store, chip_size=CHIP)
    for row in (r for r in res["pairs"] if r["sensor_pair"] == "L8-S2"):
        it = ds[ds.pair_ids.index(row["pair_id"])]
        lr, hr30 = core(it["lr"], HALO), degrade(core(np.where(it["hr_valid"] > 0.5, it["hr"], np.nan), 3 * HALO), 3)[0]
        ok = np.isfinite(lr).all(0) & np.isfinite(hr30).all(0)
        gain = lr[:, ok].mean(1) / hr30[:, ok].mean(1)
        np.testing.assert_allclose(row["qa"]["gain"], gain, rtol=1e-5)
        passed = bool(np.all((gain >= QA_GAIN[0]) & (gain <= QA_GAIN[1]))) and min(row["qa"]["r"]) > QA_MIN_R
        assert row["qa"]["passed"] == passed
        group = res["groups"][next(k for k in res["groups"] if row["pair_id"] in res["groups"][k]["pair_ids"])]
        assert ("lssr" in group) == passed


def test_only_the_core_is_scored_with_its_halo_as_input(setup):
    """Nearest PSNR/SSIM of a Hesbaye chip equal scikit-image on the chip's core; bicubic equals the
    core of bicubic over the whole haloed chip, and differs from bicubic of the core alone (which
    would have replicate-padded borders)."""
    import torch
    import torch.nn.functional as F
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from lssr_ray.data.batch import postprocess, preprocess
    from lssr_ray.data.pair_dataset import PairDataset
    from lssr_ray.train.protocol import core

    res, _, store, *_ = setup
    ds = PairDataset(store, chip_size=CHIP)
    row = next(r for r in res["pairs"] if r["location"] == "hesbaye_2021" and r["clear_fraction"] == 1.0)
    it = ds[ds.pair_ids.index(row["pair_id"])]
    truth = core(it["hr"], 3 * HALO).astype(np.float64)
    near = np.kron(core(it["lr"], HALO), np.ones((1, 3, 3))).astype(np.float64)
    for g, sl, rng in (("rgb", slice(0, 3), 0.4), ("ir", slice(3, 6), 0.8)):
        assert row["nearest"][f"psnr_{g}"] == pytest.approx(peak_signal_noise_ratio(truth[sl], near[sl], data_range=rng),
                                                            abs=1e-6)
        ss = np.mean([structural_similarity(truth[b], near[b], data_range=rng) for b in range(sl.start, sl.stop)])
        assert row["nearest"][f"ssim_{g}"] == pytest.approx(ss, abs=1e-6)

    def bicubic(lr):
        inp = preprocess({"lr": lr[None], "month": np.ones(1, np.int64)}, scale=3)
        up = F.interpolate(torch.as_tensor(inp["lr"]), scale_factor=3, mode="bicubic", align_corners=False)
        return postprocess(up.clamp(-1, 1).numpy(), inp["valid"])[0].astype(np.float64)

    with_halo = core(bicubic(it["lr"]), 3 * HALO)
    without = bicubic(core(it["lr"], HALO))
    p_with = peak_signal_noise_ratio(truth[:3], with_halo[:3], data_range=0.4)
    assert row["bicubic"]["psnr_rgb"] == pytest.approx(p_with, abs=1e-4)
    assert abs(peak_signal_noise_ratio(truth[:3], without[:3], data_range=0.4) - p_with) > 1e-3


def test_seen_location_is_refused_with_exit_2_unless_allowed(setup, tmp_path, capsys):
    """A checkpoint that trained on Hesbaye (legacy train_pairs.json: pair ids only) may not be
    evaluated there: one-line error, exit 2, nothing run."""
    import shutil

    from lssr_ray.train.evaluate import SEEN_LABEL, check_locations
    from lssr_ray.train.protocol import seen_locations

    _, _, store, ckpt, cnn, _ = setup
    seen = tmp_path / "ckpt"
    shutil.copytree(ckpt, seen)
    (seen / "train_pairs.json").write_text(json.dumps(
        {"train": ["worldcereal-hesbaye-monthly-2021_S2deg-S2_20210115_20210115_r00c00"], "val": [], "held_out": []}))
    out = tmp_path / "m.json"
    rc = _job().main(["--data", str(store), "--checkpoint", str(seen), "--baseline-cnn", str(cnn), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "hesbaye_2021 was seen by the checkpoint" in err[0] and "--allow-seen" in err[0]
    assert not out.exists()
    status = check_locations(["hesbaye_2021", "flanders_31UDS_2018"], seen_locations(seen, BASE, cnn), allow_seen=True)
    assert status == {"hesbaye_2021": SEEN_LABEL, "flanders_31UDS_2018": "held out"}


def test_conversion_lists_what_it_skipped(setup):
    skipped = " ".join(f"{i}: {r}" for i, r in setup[-1])
    assert "tanzania" in skipped and "no S2_L2A_10m" in skipped
    assert "alabama" in skipped and "not a WorldCereal" in skipped


def test_bad_input_is_one_line(setup, tmp_path, capsys):
    _, _, store, ckpt, cnn, _ = setup
    job = _job()
    assert job.main(["--data", str(tmp_path / "nothing"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "a.json")]) == 2
    assert job.main(["--data", str(store), "--checkpoint", str(ckpt), "--baseline-cnn", str(cnn), "--chip-size", "24",
                     "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "does not exist" in err[0] and "smaller than chip_size 24" in err[1]
