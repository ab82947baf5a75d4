"""The evaluation protocol's pieces against NumPy references and hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from lssr_ray.data.psf import degrade
from lssr_ray.errors import ProtocolError
from lssr_ray.train import protocol as P


def _truth(seed=0, n=24):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(6, n, n)), 1), 2)
    return (0.1 + 0.2 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.float32)


def test_radiometric_qa_gain_and_r_match_numpy():
    hr = _truth()
    hr30 = degrade(hr, 3)[0]
    good = P.radiometric_qa(1.1 * hr30, hr)
    np.testing.assert_allclose(good["gain"], 1.1, rtol=1e-5)
    np.testing.assert_allclose(good["r"], 1.0, atol=1e-6)
    assert good["passed"] and good["n_cells"] == 64
    assert not P.radiometric_qa(1.2 * hr30, hr)["passed"]  # gain outside 0.85-1.15
    noisy = hr30 + np.random.default_rng(1).normal(0, 0.05, hr30.shape).astype(np.float32)
    q = P.radiometric_qa(noisy, hr)
    want_r = [np.corrcoef(noisy[b].ravel(), hr30[b].ravel())[0, 1] for b in range(6)]
    np.testing.assert_allclose(q["r"], want_r, rtol=1e-6)
    assert min(want_r) < P.QA_MIN_R and not q["passed"]


def test_affine_fit_recovers_gain_and_offset_and_normalises_psnr():
    """A 30 m input off by gain 0.8 and offset +0.05 per band: the fit maps it back onto the truth,
    and the normalised PSNR of an output carrying the same bias equals the PSNR of the unbiased one."""
    hr = _truth(2)
    hr30 = degrade(hr, 3)[0]
    lr = 0.8 * hr30 + 0.05
    coef = P.affine_fit(lr, hr)
    np.testing.assert_allclose(coef[:, 0], 1 / 0.8, rtol=1e-4)
    np.testing.assert_allclose(coef[:, 1], -0.05 / 0.8, atol=1e-5)
    biased_output = 0.8 * hr + 0.05
    fixed = P.apply_affine(biased_output, coef)
    np.testing.assert_allclose(fixed, hr, atol=1e-5)
    assert peak_signal_noise_ratio(hr, fixed, data_range=0.4) > 80
    assert peak_signal_noise_ratio(hr, biased_output, data_range=0.4) < 40


def test_paired_bootstrap_matches_a_numpy_reference():
    rng = np.random.default_rng(4)
    a = rng.normal(1.0, 0.5, 60)
    b = a - rng.normal(0.3, 0.2, 60)
    got = P.paired_bootstrap(a, b)
    d = a - b
    idx = np.random.default_rng(99).integers(0, len(d), (20000, len(d)))
    lo, hi = np.percentile(d[idx].mean(1), [2.5, 97.5])
    assert got["mean"] == pytest.approx(d.mean())
    assert got["lo"] == pytest.approx(lo, abs=0.01) and got["hi"] == pytest.approx(hi, abs=0.01)
    assert got["lo"] < got["mean"] < got["hi"] and got["n"] == 60
    assert P.paired_bootstrap(a, b) == got  # seeded: the same interval every time
    # NaN chips are dropped pairwise; a single chip has no interval
    a2 = a.copy()
    a2[:5] = np.nan
    assert P.paired_bootstrap(a2, b)["n"] == 55
    one = P.paired_bootstrap(a[:1], b[:1])
    assert one["n"] == 1 and np.isnan(one["lo"])


def test_core_cuts_the_halo():
    x = np.arange(2 * 10 * 10).reshape(2, 10, 10)
    np.testing.assert_array_equal(P.core(x, 3), x[:, 3:7, 3:7])
    assert P.core(x, 0) is x


def test_locations_from_legacy_and_new_split_files(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "train_pairs.json").write_text(json.dumps({
        "train": ["worldcereal-hesbaye-monthly-2021_S2deg-S2_20210115_20210115_r00c00"],
        "val": ["00002806639B424A_L8-S2_20180701_20180630_r00c00"], "held_out": []}))
    assert P.checkpoint_locations(legacy) == {"hesbaye_2021", "flanders_31UDS_2018"}
    new = tmp_path / "new"
    new.mkdir()
    (new / "train_pairs.json").write_text(json.dumps({"train": [], "val": [], "train_locations": ["tanzania_37MBS_2021"],
                                                      "val_locations": []}))
    assert P.checkpoint_locations(new) == {"tanzania_37MBS_2021"}
    assert P.checkpoint_locations(tmp_path) is None
    base = tmp_path / "base"
    base.mkdir()
    assert P.base_locations(base) is None
    (base / "model_index.json").write_text(json.dumps({"pretrain_locations": ["flanders_31UDS_2018"]}))
    assert P.base_locations(base) == {"flanders_31UDS_2018"}
    # the model side's record: a pretrain_locations.json with folder names or site ids
    (base / "pretrain_locations.json").write_text(json.dumps(
        {"pretrain_locations": ["flanders_31UDS_2018", "landsat8_l1t_alabama_2015"], "command": "..."}))
    assert P.base_locations(base) == {"flanders_31UDS_2018", "alabama_2015"}


def test_check_locations_refuses_seen_ground_unless_allowed():
    from lssr_ray.train.evaluate import HELD_OUT_LABEL, SEEN_LABEL, check_locations

    seen = {"checkpoint": {"flanders_31UDS_2018"}, "base": None, "cnn": {"hesbaye_2021"}}
    assert check_locations(["alabama_2015"], seen, allow_seen=False) == {"alabama_2015": HELD_OUT_LABEL}
    with pytest.raises(ProtocolError, match="hesbaye_2021 was seen by the cnn"):
        check_locations(["alabama_2015", "hesbaye_2021"], seen, allow_seen=False)
    got = check_locations(["hesbaye_2021", "flanders_31UDS_2018"], seen, allow_seen=True)
    assert set(got.values()) == {SEEN_LABEL}


def test_normalised_psnr_uses_the_same_metric_code():
    """psnr_*_norm is the project's PSNR on the affinely corrected output (no second PSNR)."""
    from lssr_ray.model.metrics import evaluate

    hr = _truth(5)
    out = 0.95 * hr + 0.01
    coef = P.affine_fit(degrade(out, 3)[0], hr)
    got = evaluate(torch.as_tensor(P.apply_affine(out, coef)[None]), torch.as_tensor(hr[None]))["psnr_rgb"]
    ref = peak_signal_noise_ratio(hr[:3].astype(np.float64), P.apply_affine(out, coef)[:3].astype(np.float64),
                                  data_range=0.4)
    assert got == pytest.approx(ref, rel=1e-6)
